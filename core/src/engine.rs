//! The matching engine: owns every order book, applies commands, emits events. Sans-IO: no
//! threads, clocks, syscalls or allocation on the matching path; everything is sized at start-up.
//!
//! The exact semantics (validation order, STP, event order and fields) are in docs/matching.md;
//! `core/tests/` checks this implementation against a simple reference model of that document.

use crate::book::accounts::AccountTable;
use crate::book::index::OrderIndex;
use crate::book::store::{Order, OrderStore, NIL};
use crate::book::OrderBook;
use crate::command::{Command, CommandKind};
use crate::config::{ConfigError, EngineConfig};
use crate::event::*;
use crate::hash::StateHasher;
use crate::types::*;

/// One aggregated price level, as returned by [`Engine::depth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Level {
    /// Level price.
    pub price: Price,
    /// Total open quantity at the level.
    pub qty: Qty,
    /// Number of orders at the level.
    pub orders: u32,
}

/// A resting order, as returned by [`Engine::order`] and [`Engine::book_orders`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    /// Owner.
    pub account: AccountId,
    /// Client order id.
    pub order_id: ClientOrderId,
    /// Instrument.
    pub instrument: InstrumentId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub qty: Qty,
    /// Effective self-trade prevention mode.
    pub stp: StpMode,
    /// `LimitGtc` or `PostOnly`.
    pub order_type: OrderType,
}

/// Assigns event sequences and marks each command's last event: events are held back by one so
/// the last can be flagged before it leaves.
pub(crate) struct Emitter {
    pub(crate) next_seq: Seq,
    cmd_seq: Seq,
    ts_ns: u64,
    pending: Event,
    has_pending: bool,
}

impl Emitter {
    #[inline]
    fn emit<S: EventSink + ?Sized>(&mut self, out: &mut S, mut ev: Event) {
        ev.seq = self.next_seq;
        ev.cmd_seq = self.cmd_seq;
        self.next_seq += 1;
        if self.has_pending {
            out.push(&self.pending);
        }
        self.pending = ev;
        self.has_pending = true;
    }

    #[inline]
    fn finish<S: EventSink + ?Sized>(&mut self, out: &mut S) {
        debug_assert!(self.has_pending, "every command emits at least one event");
        if self.has_pending {
            self.pending.flags |= EV_LAST_IN_COMMAND;
            out.push(&self.pending);
            self.has_pending = false;
        }
    }
}

/// An incoming (or crossing replaced) order while it sweeps the opposite side.
struct Taker {
    account: AccountId,
    order_id: ClientOrderId,
    side: Side,
    /// None: no price limit (market order without protection).
    limit: Option<Price>,
    /// Price reported in the taker's own events (its limit, protection price or 0).
    report_price: Price,
    open: Qty,
    stp: StpMode,
}

#[inline]
fn crosses(side: Side, limit: Option<Price>, resting: Price) -> bool {
    match (limit, side) {
        (None, _) => true,
        (Some(l), Side::Buy) => l >= resting,
        (Some(l), Side::Sell) => l <= resting,
    }
}

/// The matching engine. See docs/matching.md for the exact semantics.
pub struct Engine {
    pub(crate) books: Vec<OrderBook>,
    /// Instrument ids, ascending, parallel to `books`.
    pub(crate) ids: Vec<InstrumentId>,
    pub(crate) store: OrderStore,
    pub(crate) index: OrderIndex,
    pub(crate) accounts: AccountTable,
    default_stp: StpMode,
    pub(crate) last_cmd_seq: Seq,
    pub(crate) em: Emitter,
}

impl Engine {
    /// Builds an engine, allocating every capacity of `cfg` now.
    pub fn new(cfg: &EngineConfig) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let mut instruments = cfg.instruments.clone();
        instruments.sort_by_key(|i| i.id);
        let ids = instruments.iter().map(|i| i.id).collect();
        let books = instruments.into_iter().map(|i| OrderBook::new(i, cfg.levels_max)).collect();
        let mut accounts = AccountTable::new(cfg.accounts_max);
        for &(account, stp) in &cfg.account_stp {
            let i = accounts.find_or_insert(account).ok_or_else(|| ConfigError("account table full".into()))?;
            accounts[i].stp_default = Some(stp);
        }
        Ok(Engine {
            books,
            ids,
            store: OrderStore::new(cfg.orders_max),
            index: OrderIndex::new(cfg.orders_max),
            accounts,
            default_stp: cfg.default_stp,
            last_cmd_seq: 0,
            em: Emitter { next_seq: 1, cmd_seq: 0, ts_ns: 0, pending: Event::default(), has_pending: false },
        })
    }

    /// Applies one command, writing its events (at least one) to `out`.
    pub fn handle<S: EventSink + ?Sized>(&mut self, cmd: &Command, out: &mut S) {
        self.em.cmd_seq = cmd.seq;
        self.em.ts_ns = cmd.ts_ns;
        match CommandKind::from_u8(cmd.kind) {
            Some(CommandKind::New) => self.new_order(cmd, out),
            Some(CommandKind::Cancel) => self.cancel(cmd, out),
            Some(CommandKind::Replace) => self.replace(cmd, out),
            Some(CommandKind::MassCancel) => self.mass_cancel(cmd, out),
            Some(CommandKind::Halt) => self.set_halted(cmd, true, out),
            Some(CommandKind::Resume) => self.set_halted(cmd, false, out),
            None => self.reject(cmd, RejectReason::MalformedCommand, out),
        }
        self.last_cmd_seq = cmd.seq;
        self.em.finish(out);
    }

    // ---- commands -------------------------------------------------------------------------

    fn new_order<S: EventSink + ?Sized>(&mut self, cmd: &Command, out: &mut S) {
        let (b, side, ot, stp, acct) = match self.validate_new(cmd) {
            Ok(v) => v,
            Err(r) => return self.reject(cmd, r, out),
        };
        let price = cmd.price();
        let limit = match ot {
            OrderType::Market => price.or_else(|| self.band_edge(b, side)),
            _ => price,
        };
        let mut t = Taker {
            account: cmd.account,
            order_id: cmd.order_id,
            side,
            limit,
            report_price: price.unwrap_or(0),
            open: cmd.qty,
            stp,
        };
        let instrument = self.books[b].cfg.id;
        self.em.emit(
            out,
            Event {
                kind: EventKind::Accepted as u8,
                side: side as u8,
                instrument,
                account: cmd.account,
                aux32: ot as u32,
                order_id: cmd.order_id,
                price: t.report_price,
                qty: cmd.qty,
                ..Event::default()
            },
        );
        if self.sweep(b, &mut t, out) || t.open == 0 {
            return;
        }
        if ot.can_rest() {
            // Capacity (order slot, level, account entry) was checked in validation.
            let Some(ai) = acct.or_else(|| self.accounts.find_or_insert(cmd.account)) else {
                debug_assert!(false, "account capacity checked in validation");
                return;
            };
            let order = OrderStore::new_order(
                cmd.order_id,
                cmd.account,
                ai,
                b as u16,
                side,
                ot == OrderType::PostOnly,
                stp,
                cmd.price,
                t.open,
            );
            let slot = self.store.alloc(order);
            self.index.insert(cmd.account, cmd.order_id, slot);
            self.link_account(ai, slot);
            self.rest(b, slot, out);
        } else {
            self.emit_cancelled(out, instrument, &t, t.open, CancelReason::Unfilled);
        }
    }

    /// Validation of a new order, in the documented order. Returns (book, side, type, effective
    /// STP, account entry if it exists).
    #[allow(clippy::type_complexity)]
    fn validate_new(&self, cmd: &Command) -> Result<(usize, Side, OrderType, StpMode, Option<u32>), RejectReason> {
        let b = self.book_index(cmd.instrument).ok_or(RejectReason::UnknownInstrument)?;
        let book = &self.books[b];
        if book.halted {
            return Err(RejectReason::InstrumentHalted);
        }
        let side = Side::from_u8(cmd.side).ok_or(RejectReason::InvalidSide)?;
        let ot = OrderType::from_u8(cmd.order_type).ok_or(RejectReason::InvalidOrderType)?;
        let stp_cmd = match cmd.stp {
            0 => None,
            s => Some(StpMode::from_u8(s).ok_or(RejectReason::InvalidStp)?),
        };
        check_qty(book, cmd.qty)?;
        let price = cmd.price();
        if ot != OrderType::Market && price.is_none() {
            return Err(RejectReason::InvalidPrice);
        }
        if let Some(p) = price {
            check_price(book, p)?;
        }
        if self.index.find(&self.store, cmd.account, cmd.order_id).is_some() {
            return Err(RejectReason::DuplicateOrderId);
        }
        let acct = self.accounts.find(cmd.account);
        if ot.can_rest()
            && (self.store.is_full()
                || book.level_would_overflow(side, cmd.price)
                || (acct.is_none() && self.accounts.is_full()))
        {
            return Err(RejectReason::CapacityExhausted);
        }
        let stp = stp_cmd.or_else(|| acct.and_then(|a| self.accounts[a].stp_default)).unwrap_or(self.default_stp);
        if ot == OrderType::PostOnly && self.crosses_best(b, side, cmd.price) {
            return Err(RejectReason::PostOnlyWouldCross);
        }
        if ot == OrderType::LimitFok && !self.fok_fillable(b, cmd.account, side, cmd.price, cmd.qty, stp) {
            return Err(RejectReason::FokNotFillable);
        }
        Ok((b, side, ot, stp, acct))
    }

    fn cancel<S: EventSink + ?Sized>(&mut self, cmd: &Command, out: &mut S) {
        let Some((slot, b)) = self.find_order(cmd) else {
            return self.reject(cmd, RejectReason::UnknownOrder, out);
        };
        let o = self.store[slot];
        let (price, total, count) = self.remove_resting(b, slot);
        let instrument = self.books[b].cfg.id;
        self.emit_order_event(out, EventKind::Cancelled, instrument, &o, o.qty, CancelReason::UserRequested as u8, 0);
        self.emit_level(out, instrument, o.side(), price, total, count);
    }

    fn replace<S: EventSink + ?Sized>(&mut self, cmd: &Command, out: &mut S) {
        let Some((slot, b)) = self.find_order(cmd) else {
            return self.reject(cmd, RejectReason::UnknownOrder, out);
        };
        let o = self.store[slot];
        let side = o.side();
        let checked = (|| {
            let book = &self.books[b];
            if book.halted {
                return Err(RejectReason::InstrumentHalted);
            }
            check_qty(book, cmd.qty)?;
            let price = match cmd.price() {
                Some(p) => {
                    check_price(book, p)?;
                    p
                }
                None => o.price,
            };
            if price != o.price {
                if book.level_would_overflow(side, price) {
                    return Err(RejectReason::CapacityExhausted);
                }
                if o.post_only() && self.crosses_best(b, side, price) {
                    return Err(RejectReason::PostOnlyWouldCross);
                }
            }
            Ok(price)
        })();
        let price = match checked {
            Ok(p) => p,
            Err(r) => return self.reject(cmd, r, out),
        };
        let qty = cmd.qty;
        let instrument = self.books[b].cfg.id;
        let moved = price != o.price;
        let keeps_priority = !moved && qty <= o.qty;
        let mut new = o;
        new.price = price;
        let flags = if keeps_priority { EV_PRIORITY_KEPT } else { 0 };
        self.emit_order_event(out, EventKind::Replaced, instrument, &new, qty, 0, flags);
        if keeps_priority {
            let total = if qty < o.qty {
                self.books[b].reduce(&mut self.store, slot, o.qty - qty)
            } else {
                self.books[b].level(o.level).total
            };
            let count = self.books[b].level(o.level).count;
            self.emit_level(out, instrument, side, price, total, count);
            return;
        }
        let (old_price, total, count) = self.books[b].unlink(&mut self.store, slot);
        if moved {
            self.emit_level(out, instrument, side, old_price, total, count);
        }
        self.store[slot].price = price;
        self.store[slot].qty = qty;
        if moved && self.crosses_best(b, side, price) {
            let mut t = Taker {
                account: o.account,
                order_id: o.order_id,
                side,
                limit: Some(price),
                report_price: price,
                open: qty,
                stp: o.stp(),
            };
            if self.sweep(b, &mut t, out) || t.open == 0 {
                self.index.remove(&self.store, o.account, o.order_id, slot);
                self.unlink_account(slot);
                self.store.free(slot);
                return;
            }
            self.store[slot].qty = t.open;
        }
        self.rest(b, slot, out);
    }

    fn mass_cancel<S: EventSink + ?Sized>(&mut self, cmd: &Command, out: &mut S) {
        let only = match cmd.instrument {
            0 => None,
            id => match self.book_index(id) {
                Some(b) => Some(b),
                None => return self.reject(cmd, RejectReason::UnknownInstrument, out),
            },
        };
        let reason = match cmd.reason {
            0 => CancelReason::MassCancel,
            r => match CancelReason::from_u8(r) {
                Some(r) => r,
                None => return self.reject(cmd, RejectReason::MalformedCommand, out),
            },
        };
        let mut cancelled = 0u64;
        if let Some(ai) = self.accounts.find(cmd.account) {
            let mut slot = self.accounts[ai].head;
            // Bounded by the number of live orders.
            for _ in 0..=self.store.capacity() {
                if slot == NIL {
                    break;
                }
                let o = self.store[slot];
                let next = o.acct_next;
                let b = o.book as usize;
                if only.is_none_or(|x| x == b) {
                    let (price, total, count) = self.remove_resting(b, slot);
                    let instrument = self.books[b].cfg.id;
                    self.emit_order_event(out, EventKind::Cancelled, instrument, &o, o.qty, reason as u8, 0);
                    self.emit_level(out, instrument, o.side(), price, total, count);
                    cancelled += 1;
                }
                slot = next;
            }
        }
        self.em.emit(
            out,
            Event {
                kind: EventKind::MassCancelled as u8,
                reason: reason as u8,
                instrument: cmd.instrument,
                account: cmd.account,
                qty: cancelled,
                ..Event::default()
            },
        );
    }

    fn set_halted<S: EventSink + ?Sized>(&mut self, cmd: &Command, halted: bool, out: &mut S) {
        let Some(b) = self.book_index(cmd.instrument) else {
            return self.reject(cmd, RejectReason::UnknownInstrument, out);
        };
        self.books[b].halted = halted;
        self.em.emit(
            out,
            Event {
                kind: EventKind::InstrumentStatus as u8,
                flags: if halted { EV_HALTED } else { 0 },
                instrument: cmd.instrument,
                ..Event::default()
            },
        );
    }

    fn reject<S: EventSink + ?Sized>(&mut self, cmd: &Command, reason: RejectReason, out: &mut S) {
        self.em.emit(
            out,
            Event {
                kind: EventKind::Rejected as u8,
                side: cmd.side,
                reason: reason as u8,
                instrument: cmd.instrument,
                account: cmd.account,
                aux32: cmd.kind as u32,
                order_id: cmd.order_id,
                ..Event::default()
            },
        );
    }

    // ---- matching -------------------------------------------------------------------------

    /// Sweeps the side opposite the taker while it crosses. Returns true when self-trade
    /// prevention cancelled the taker (its final event is already emitted).
    fn sweep<S: EventSink + ?Sized>(&mut self, b: usize, t: &mut Taker, out: &mut S) -> bool {
        let opp = t.side.opposite();
        let instrument = self.books[b].cfg.id;
        // Each pass of the outer loop consumes or stops at one level, each inner pass removes or
        // reduces one maker: both are bounded by the resting orders.
        for _ in 0..=self.store.capacity() {
            if t.open == 0 {
                return false;
            }
            let book = &self.books[b];
            let Some(li) = book.ladder(opp).best() else { return false };
            let lvl = *book.level(li);
            if !crosses(t.side, t.limit, lvl.price) {
                return false;
            }
            let (mut total, mut count) = (lvl.total, lvl.count);
            let mut touched = false;
            let mut taker_cancel: Option<Qty> = None;
            let mut slot = lvl.head;
            while slot != NIL && t.open > 0 {
                let m = self.store[slot];
                let next = m.next;
                if m.account == t.account && t.stp != StpMode::None {
                    let stp = CancelReason::SelfTradePrevention as u8;
                    match t.stp {
                        StpMode::CancelTaker => {
                            taker_cancel = Some(t.open);
                            break;
                        }
                        StpMode::CancelMaker | StpMode::CancelBoth => {
                            (_, total, count) = self.remove_resting(b, slot);
                            self.emit_order_event(out, EventKind::Cancelled, instrument, &m, m.qty, stp, 0);
                            touched = true;
                            if t.stp == StpMode::CancelBoth {
                                taker_cancel = Some(t.open);
                                break;
                            }
                        }
                        StpMode::DecrementAndCancel | StpMode::None => {
                            let d = t.open.min(m.qty);
                            if d == m.qty {
                                (_, total, count) = self.remove_resting(b, slot);
                                self.emit_order_event(out, EventKind::Cancelled, instrument, &m, d, stp, 0);
                            } else {
                                total = self.books[b].reduce(&mut self.store, slot, d);
                                self.emit_order_event(out, EventKind::Decremented, instrument, &m, m.qty - d, stp, 0);
                            }
                            touched = true;
                            if d == t.open {
                                taker_cancel = Some(d);
                                break;
                            }
                            t.open -= d;
                            self.emit_taker(out, EventKind::Decremented, instrument, t, t.open, stp);
                        }
                    }
                } else {
                    let q = t.open.min(m.qty);
                    t.open -= q;
                    let maker_done = q == m.qty;
                    if maker_done {
                        (_, total, count) = self.remove_resting(b, slot);
                    } else {
                        total = self.books[b].reduce(&mut self.store, slot, q);
                    }
                    self.books[b].last_trade = Some(lvl.price);
                    touched = true;
                    let trade_id = self.em.next_seq;
                    let flags = if t.open == 0 { EV_TAKER_DONE } else { 0 } | if maker_done { EV_MAKER_DONE } else { 0 };
                    self.em.emit(
                        out,
                        Event {
                            kind: EventKind::Fill as u8,
                            side: t.side as u8,
                            flags,
                            instrument,
                            account: t.account,
                            aux32: m.account,
                            order_id: t.order_id,
                            aux64: m.order_id,
                            price: lvl.price,
                            qty: q,
                            ..Event::default()
                        },
                    );
                    let ts_ns = self.em.ts_ns;
                    self.em.emit(
                        out,
                        Event {
                            kind: EventKind::Trade as u8,
                            side: t.side as u8,
                            instrument,
                            order_id: trade_id,
                            aux64: ts_ns,
                            price: lvl.price,
                            qty: q,
                            ..Event::default()
                        },
                    );
                }
                slot = next;
            }
            if touched {
                self.emit_level(out, instrument, opp, lvl.price, total, count);
            }
            if let Some(q) = taker_cancel {
                self.emit_taker(out, EventKind::Cancelled, instrument, t, q, CancelReason::SelfTradePrevention as u8);
                t.open = 0;
                return true;
            }
        }
        debug_assert!(false, "sweep loop bound reached");
        false
    }

    /// FOK pre-check (docs/matching.md): can the whole quantity trade right now?
    fn fok_fillable(&self, b: usize, account: AccountId, side: Side, limit: Price, qty: Qty, stp: StpMode) -> bool {
        let book = &self.books[b];
        let mut sum: Qty = 0;
        for li in book.ladder(side.opposite()).iter_best_first() {
            let lvl = book.level(li);
            if !crosses(side, Some(limit), lvl.price) {
                return false;
            }
            let mut slot = lvl.head;
            while slot != NIL {
                let m = &self.store[slot];
                if m.account == account && stp != StpMode::None {
                    if stp != StpMode::CancelMaker {
                        return false;
                    }
                } else {
                    sum = sum.saturating_add(m.qty);
                    if sum >= qty {
                        return true;
                    }
                }
                slot = m.next;
            }
        }
        false
    }

    // ---- helpers --------------------------------------------------------------------------

    #[inline]
    fn book_index(&self, instrument: InstrumentId) -> Option<usize> {
        self.ids.binary_search(&instrument).ok()
    }

    /// The live order a cancel/replace names, if it is on the named instrument.
    #[inline]
    fn find_order(&self, cmd: &Command) -> Option<(u32, usize)> {
        let slot = self.index.find(&self.store, cmd.account, cmd.order_id)?;
        let b = self.store[slot].book as usize;
        (self.books[b].cfg.id == cmd.instrument).then_some((slot, b))
    }

    /// Whether a `side` order at `price` would cross the best opposite level.
    #[inline]
    fn crosses_best(&self, b: usize, side: Side, price: Price) -> bool {
        let book = &self.books[b];
        book.ladder(side.opposite()).best().is_some_and(|li| crosses(side, Some(price), book.level(li).price))
    }

    /// A market order's implicit protection: the band edge, rounded toward the reference to a tick.
    fn band_edge(&self, b: usize, side: Side) -> Option<Price> {
        let book = &self.books[b];
        let bps = book.cfg.price_band_bps?;
        let r = book.reference_price()?;
        let tick = book.cfg.tick_size;
        let delta = (r as i128 * bps as i128 / 10_000).min(i64::MAX as i128) as i64;
        Some(match side {
            Side::Buy => r.saturating_add(delta).div_euclid(tick) * tick,
            Side::Sell => -(r.saturating_sub(delta).saturating_neg().div_euclid(tick) * tick),
        })
    }

    /// Puts the allocated, unlinked order in `slot` at the back of its level and reports it.
    fn rest<S: EventSink + ?Sized>(&mut self, b: usize, slot: u32, out: &mut S) {
        self.books[b].push_back(&mut self.store, slot);
        let o = &self.store[slot];
        let (side, price) = (o.side(), o.price);
        let lvl = *self.books[b].level(o.level);
        let instrument = self.books[b].cfg.id;
        self.emit_level(out, instrument, side, price, lvl.total, lvl.count);
    }

    /// Removes a resting order completely: level, id index, account list, slot.
    #[inline]
    fn remove_resting(&mut self, b: usize, slot: u32) -> (Price, Qty, u32) {
        let r = self.books[b].unlink(&mut self.store, slot);
        let (account, order_id) = (self.store[slot].account, self.store[slot].order_id);
        self.index.remove(&self.store, account, order_id, slot);
        self.unlink_account(slot);
        self.store.free(slot);
        r
    }

    #[inline]
    pub(crate) fn link_account(&mut self, ai: u32, slot: u32) {
        let tail = self.accounts[ai].tail;
        self.store[slot].acct_prev = tail;
        self.store[slot].acct_next = NIL;
        if tail == NIL {
            self.accounts[ai].head = slot;
        } else {
            self.store[tail].acct_next = slot;
        }
        self.accounts[ai].tail = slot;
    }

    #[inline]
    fn unlink_account(&mut self, slot: u32) {
        let o = self.store[slot];
        if o.acct_prev == NIL {
            self.accounts[o.acct_idx].head = o.acct_next;
        } else {
            self.store[o.acct_prev].acct_next = o.acct_next;
        }
        if o.acct_next == NIL {
            self.accounts[o.acct_idx].tail = o.acct_prev;
        } else {
            self.store[o.acct_next].acct_prev = o.acct_prev;
        }
    }

    #[inline]
    fn emit_level<S: EventSink + ?Sized>(&mut self, out: &mut S, instrument: InstrumentId, side: Side, price: Price, total: Qty, count: u32) {
        let ts_ns = self.em.ts_ns;
        self.em.emit(
            out,
            Event {
                kind: EventKind::LevelDelta as u8,
                side: side as u8,
                instrument,
                aux32: count,
                aux64: ts_ns,
                price,
                qty: total,
                ..Event::default()
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn emit_order_event<S: EventSink + ?Sized>(
        &mut self,
        out: &mut S,
        kind: EventKind,
        instrument: InstrumentId,
        o: &Order,
        qty: Qty,
        reason: u8,
        flags: u8,
    ) {
        self.em.emit(
            out,
            Event {
                kind: kind as u8,
                side: o.side() as u8,
                reason,
                flags,
                instrument,
                account: o.account,
                order_id: o.order_id,
                price: o.price,
                qty,
                ..Event::default()
            },
        );
    }

    #[inline]
    fn emit_taker<S: EventSink + ?Sized>(&mut self, out: &mut S, kind: EventKind, instrument: InstrumentId, t: &Taker, qty: Qty, reason: u8) {
        self.em.emit(
            out,
            Event {
                kind: kind as u8,
                side: t.side as u8,
                reason,
                instrument,
                account: t.account,
                order_id: t.order_id,
                price: t.report_price,
                qty,
                ..Event::default()
            },
        );
    }

    #[inline]
    fn emit_cancelled<S: EventSink + ?Sized>(&mut self, out: &mut S, instrument: InstrumentId, t: &Taker, qty: Qty, reason: CancelReason) {
        self.emit_taker(out, EventKind::Cancelled, instrument, t, qty, reason as u8);
    }

    // ---- queries --------------------------------------------------------------------------

    /// Stable hash of the whole matching state (definition in docs/matching.md).
    pub fn state_hash(&self) -> u64 {
        let mut h = StateHasher::default();
        for book in &self.books {
            h.word(book.cfg.id as u64).word(book.halted as u64);
            h.word(book.last_trade.is_some() as u64).word(book.last_trade.unwrap_or(0) as u64);
            for side in [Side::Buy, Side::Sell] {
                let ladder = book.ladder(side);
                h.word(ladder.len() as u64);
                for li in ladder.iter_best_first() {
                    let lvl = book.level(li);
                    h.word(lvl.price as u64).word(lvl.total).word(lvl.count as u64);
                    let mut slot = lvl.head;
                    while slot != NIL {
                        let o = &self.store[slot];
                        h.word(o.account as u64).word(o.order_id).word(o.qty);
                        h.word(o.stp() as u64).word(o.order_type() as u64);
                        slot = o.next;
                    }
                }
            }
        }
        h.word(self.em.next_seq).word(self.last_cmd_seq);
        h.finish()
    }

    /// Writes up to `levels_max` levels of one side, best first, into `out` (cleared first).
    /// Returns false for an unknown instrument.
    pub fn depth(&self, instrument: InstrumentId, side: Side, levels_max: usize, out: &mut Vec<Level>) -> bool {
        out.clear();
        let Some(b) = self.book_index(instrument) else { return false };
        let book = &self.books[b];
        for li in book.ladder(side).iter_best_first().take(levels_max) {
            let l = book.level(li);
            out.push(Level { price: l.price, qty: l.total, orders: l.count });
        }
        true
    }

    /// Every resting order of one side in priority order (tests, snapshots). False if unknown.
    pub fn book_orders(&self, instrument: InstrumentId, side: Side, out: &mut Vec<RestingOrder>) -> bool {
        out.clear();
        let Some(b) = self.book_index(instrument) else { return false };
        let book = &self.books[b];
        for li in book.ladder(side).iter_best_first() {
            let mut slot = book.level(li).head;
            while slot != NIL {
                out.push(self.resting(slot));
                slot = self.store[slot].next;
            }
        }
        true
    }

    fn resting(&self, slot: u32) -> RestingOrder {
        let o = &self.store[slot];
        RestingOrder {
            account: o.account,
            order_id: o.order_id,
            instrument: self.books[o.book as usize].cfg.id,
            side: o.side(),
            price: o.price,
            qty: o.qty,
            stp: o.stp(),
            order_type: o.order_type(),
        }
    }

    /// A live order by id.
    pub fn order(&self, account: AccountId, order_id: ClientOrderId) -> Option<RestingOrder> {
        self.index.find(&self.store, account, order_id).map(|s| self.resting(s))
    }

    /// Number of resting orders.
    pub fn resting_orders(&self) -> usize {
        self.store.live() as usize
    }

    /// Configured instrument ids, ascending.
    pub fn instrument_ids(&self) -> &[InstrumentId] {
        &self.ids
    }

    /// The book of an instrument.
    pub fn book(&self, instrument: InstrumentId) -> Option<&OrderBook> {
        self.book_index(instrument).map(|b| &self.books[b])
    }

    /// Bytes allocated at start-up for orders, levels and id maps (all capacities).
    pub fn memory_bytes(&self) -> usize {
        self.store.capacity() * core::mem::size_of::<Order>()
            + self.index.buckets() * 4
            + self.accounts.memory_bytes()
            + self.books.iter().map(|b| b.memory_bytes()).sum::<usize>()
    }

    /// Preallocated bytes per resting-order capacity: order slot plus its share of the id index.
    pub fn bytes_per_order(&self) -> usize {
        let cap = self.store.capacity().max(1);
        (cap * core::mem::size_of::<Order>() + self.index.buckets() * 4).div_ceil(cap)
    }

    /// Sequence the next event will get.
    pub fn next_event_seq(&self) -> Seq {
        self.em.next_seq
    }

    /// Sequence of the last command applied (0 before the first).
    pub fn last_cmd_seq(&self) -> Seq {
        self.last_cmd_seq
    }
}

#[inline]
fn check_qty(book: &OrderBook, qty: Qty) -> Result<(), RejectReason> {
    let c = &book.cfg;
    // The modulo (a 20–40 cycle division) only when the lot is not 1.
    if qty == 0 || (c.lot_size != 1 && !qty.is_multiple_of(c.lot_size)) {
        return Err(RejectReason::QuantityOffLot);
    }
    if qty < c.min_qty || qty > c.max_qty {
        return Err(RejectReason::QuantityOutOfRange);
    }
    Ok(())
}

#[inline]
fn check_price(book: &OrderBook, p: Price) -> Result<(), RejectReason> {
    if p <= 0 {
        return Err(RejectReason::InvalidPrice);
    }
    if book.cfg.tick_size != 1 && p % book.cfg.tick_size != 0 {
        return Err(RejectReason::PriceOffTick);
    }
    if let (Some(bps), Some(r)) = (book.cfg.price_band_bps, book.reference_price()) {
        let dev = (p as i128 - r as i128).unsigned_abs();
        if dev * 10_000 > r as u128 * bps as u128 {
            return Err(RejectReason::OutsidePriceBand);
        }
    }
    Ok(())
}
