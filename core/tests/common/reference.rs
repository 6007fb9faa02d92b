//! A deliberately simple reference model of the matching engine, written only from
//! `docs/matching.md`. Clarity over speed: ordered maps, deques, linear scans.
//!
//! Every rule below quotes (or paraphrases) the section of the doc it implements, so a
//! disagreement with the fast engine can be traced back to one sentence of the contract.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tickwire_core::engine::{Level, RestingOrder};
use tickwire_core::event::{EV_HALTED, EV_LAST_IN_COMMAND, EV_MAKER_DONE, EV_PRIORITY_KEPT, EV_TAKER_DONE};
use tickwire_core::hash::StateHasher;
use tickwire_core::{
    AccountId, CancelReason, ClientOrderId, Command, CommandKind, EngineConfig, Event, EventKind, InstrumentConfig,
    InstrumentId, OrderType, Price, Qty, RejectReason, Seq, Side, StpMode,
};

/// A resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Order {
    account: AccountId,
    order_id: ClientOrderId,
    side: Side,
    price: Price,
    /// Open quantity.
    qty: Qty,
    /// Effective STP mode (resolved when the order was entered).
    stp: StpMode,
    order_type: OrderType,
}

/// One side of a book: price → FIFO of orders.
type Ladder = BTreeMap<Price, VecDeque<Order>>;

struct Book {
    cfg: InstrumentConfig,
    bids: Ladder,
    asks: Ladder,
    last_trade: Option<Price>,
    halted: bool,
}

impl Book {
    fn side(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Best price of a side: highest bid, lowest ask.
    fn best(&self, side: Side) -> Option<Price> {
        match side {
            Side::Buy => self.bids.keys().next_back().copied(),
            Side::Sell => self.asks.keys().next().copied(),
        }
    }

    /// Prices of a side, best first.
    fn prices_best_first(&self, side: Side) -> Vec<Price> {
        match side {
            Side::Buy => self.bids.keys().rev().copied().collect(),
            Side::Sell => self.asks.keys().copied().collect(),
        }
    }

    /// "The reference price of the band is the last trade price of the instrument, or the
    /// configured `reference_price` before the first trade".
    fn band_reference(&self) -> Option<Price> {
        self.last_trade.or(self.cfg.reference_price)
    }

    /// `(total, count)` of a level; `(0, 0)` when it does not exist.
    fn level_totals(&self, side: Side, price: Price) -> (Qty, u32) {
        match self.side(side).get(&price) {
            Some(q) => (q.iter().map(|o| o.qty).sum(), q.len() as u32),
            None => (0, 0),
        }
    }
}

/// A buy crosses an ask at `p` when `limit >= p`; a sell crosses a bid when `limit <= p`.
/// `None` = unlimited.
fn crosses(side: Side, limit: Option<Price>, p: Price) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => l >= p,
        (Side::Sell, Some(l)) => l <= p,
    }
}

/// The incoming (or replaced, crossing) order while it sweeps.
struct Taker {
    account: AccountId,
    order_id: ClientOrderId,
    side: Side,
    /// Matching limit (`None` = unlimited).
    limit: Option<Price>,
    /// Price reported in the taker's own cancelled / decremented events.
    report_price: Price,
    open: Qty,
    stp: StpMode,
}

/// How a sweep ended.
#[derive(PartialEq, Eq, Debug)]
enum SweepEnd {
    /// Ran out of crossing liquidity or quantity; `open` may be > 0.
    Finished,
    /// STP cancelled the taker (its cancelled event was emitted).
    StoppedByStp,
}

/// The reference engine.
pub struct Reference {
    books: BTreeMap<InstrumentId, Book>,
    /// (account, order id) → (instrument, side, price) of every live (resting) order.
    index: HashMap<(AccountId, ClientOrderId), (InstrumentId, Side, Price)>,
    /// Known accounts, each with its live order ids in the order they were first accepted.
    accounts: BTreeMap<AccountId, Vec<ClientOrderId>>,
    account_stp: HashMap<AccountId, StpMode>,
    default_stp: StpMode,
    orders_max: usize,
    levels_max: usize,
    accounts_max: usize,
    next_event_seq: Seq,
    last_cmd_seq: Seq,
    /// Events of the command being handled (sequence numbers already assigned).
    pending: Vec<Event>,
    /// The command being handled.
    cmd: Command,
}

impl Reference {
    /// Builds the reference from the same configuration as the engine. Panics on an invalid one.
    pub fn new(cfg: &EngineConfig) -> Reference {
        cfg.validate().expect("valid config");
        let books = cfg
            .instruments
            .iter()
            .map(|i| {
                (i.id, Book { cfg: i.clone(), bids: Ladder::new(), asks: Ladder::new(), last_trade: None, halted: false })
            })
            .collect();
        // Accounts with a configured default STP mode occupy the account table from the start
        // (the config check `account_stp.len() <= accounts_max` implies it).
        let accounts = cfg.account_stp.iter().map(|&(a, _)| (a, Vec::new())).collect();
        Reference {
            books,
            index: HashMap::new(),
            accounts,
            account_stp: cfg.account_stp.iter().copied().collect(),
            default_stp: cfg.default_stp,
            orders_max: cfg.orders_max as usize,
            levels_max: cfg.levels_max as usize,
            accounts_max: cfg.accounts_max as usize,
            next_event_seq: 1,
            last_cmd_seq: 0,
            pending: Vec::new(),
            cmd: Command::default(),
        }
    }

    // ----------------------------------------------------------------------------------------
    // Public API mirroring `Engine`.

    /// Applies one command, appending its events (at least one) to `out`.
    pub fn handle(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        self.cmd = *cmd;
        self.pending.clear();
        match CommandKind::from_u8(cmd.kind) {
            Some(CommandKind::New) => self.new_order(),
            Some(CommandKind::Cancel) => self.cancel(),
            Some(CommandKind::Replace) => self.replace(),
            Some(CommandKind::MassCancel) => self.mass_cancel(),
            Some(CommandKind::Halt) => self.set_halted(true),
            Some(CommandKind::Resume) => self.set_halted(false),
            // "An unknown `kind` → `malformed_command`."
            None => self.reject(RejectReason::MalformedCommand),
        }
        assert!(!self.pending.is_empty(), "every command emits at least one event");
        self.pending.last_mut().unwrap().flags |= EV_LAST_IN_COMMAND;
        self.last_cmd_seq = cmd.seq;
        out.extend_from_slice(&self.pending);
    }

    /// `state_hash()` exactly as docs/matching.md defines it.
    pub fn state_hash(&self) -> u64 {
        let mut h = StateHasher::default();
        for (id, book) in &self.books {
            h.word(*id as u64);
            h.word(book.halted as u64);
            h.word(book.last_trade.is_some() as u64);
            h.word(book.last_trade.unwrap_or(0) as u64);
            for side in [Side::Buy, Side::Sell] {
                let prices = book.prices_best_first(side);
                h.word(prices.len() as u64);
                for p in prices {
                    let level = &book.side(side)[&p];
                    let total: Qty = level.iter().map(|o| o.qty).sum();
                    h.word(p as u64);
                    h.word(total);
                    h.word(level.len() as u64);
                    for o in level {
                        h.word(o.account as u64);
                        h.word(o.order_id);
                        h.word(o.qty);
                        h.word(o.stp as u8 as u64);
                        h.word(o.order_type as u8 as u64);
                    }
                }
            }
        }
        h.word(self.next_event_seq);
        h.word(self.last_cmd_seq);
        h.finish()
    }

    /// Every resting order of one side in priority order. False for an unknown instrument.
    pub fn book_orders(&self, instrument: InstrumentId, side: Side, out: &mut Vec<RestingOrder>) -> bool {
        out.clear();
        let Some(book) = self.books.get(&instrument) else { return false };
        for p in book.prices_best_first(side) {
            for o in &book.side(side)[&p] {
                out.push(RestingOrder {
                    account: o.account,
                    order_id: o.order_id,
                    instrument,
                    side,
                    price: o.price,
                    qty: o.qty,
                    stp: o.stp,
                    order_type: o.order_type,
                });
            }
        }
        true
    }

    /// Up to `levels_max` levels of one side, best first. False for an unknown instrument.
    pub fn depth(&self, instrument: InstrumentId, side: Side, levels_max: usize, out: &mut Vec<Level>) -> bool {
        out.clear();
        let Some(book) = self.books.get(&instrument) else { return false };
        for p in book.prices_best_first(side).into_iter().take(levels_max) {
            let (qty, orders) = book.level_totals(side, p);
            out.push(Level { price: p, qty, orders });
        }
        true
    }

    /// A live order by id.
    pub fn order(&self, account: AccountId, order_id: ClientOrderId) -> Option<RestingOrder> {
        let &(instrument, side, price) = self.index.get(&(account, order_id))?;
        let o = self.books[&instrument].side(side)[&price].iter().find(|o| o.account == account && o.order_id == order_id)?;
        Some(RestingOrder {
            account,
            order_id,
            instrument,
            side,
            price,
            qty: o.qty,
            stp: o.stp,
            order_type: o.order_type,
        })
    }

    /// Number of resting orders.
    pub fn resting_orders(&self) -> usize {
        self.index.len()
    }

    /// Sequence the next event will get.
    pub fn next_event_seq(&self) -> Seq {
        self.next_event_seq
    }

    /// Sequence of the last command applied.
    pub fn last_cmd_seq(&self) -> Seq {
        self.last_cmd_seq
    }

    // ----------------------------------------------------------------------------------------
    // Event emission.

    /// Pushes an event with the next sequence, the command's sequence and the given instrument.
    /// Returns the event's sequence.
    fn emit(&mut self, instrument: InstrumentId, mut ev: Event) -> Seq {
        ev.seq = self.next_event_seq;
        ev.cmd_seq = self.cmd.seq;
        ev.instrument = instrument;
        self.next_event_seq += 1;
        self.pending.push(ev);
        ev.seq
    }

    /// `rejected(account, order_id, reason)`: side = command side, aux32 = command kind.
    fn reject(&mut self, reason: RejectReason) {
        let c = self.cmd;
        self.emit(
            c.instrument,
            Event {
                kind: EventKind::Rejected as u8,
                side: c.side,
                reason: reason as u8,
                account: c.account,
                aux32: c.kind as u32,
                order_id: c.order_id,
                ..Event::default()
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_cancelled(
        &mut self,
        instrument: InstrumentId,
        account: AccountId,
        order_id: ClientOrderId,
        side: Side,
        price: Price,
        qty: Qty,
        reason: CancelReason,
    ) {
        self.emit(
            instrument,
            Event {
                kind: EventKind::Cancelled as u8,
                side: side as u8,
                reason: reason as u8,
                account,
                order_id,
                price,
                qty,
                ..Event::default()
            },
        );
    }

    fn emit_decremented(
        &mut self,
        instrument: InstrumentId,
        account: AccountId,
        order_id: ClientOrderId,
        side: Side,
        price: Price,
        qty: Qty,
    ) {
        self.emit(
            instrument,
            Event {
                kind: EventKind::Decremented as u8,
                side: side as u8,
                reason: CancelReason::SelfTradePrevention as u8,
                account,
                order_id,
                price,
                qty,
                ..Event::default()
            },
        );
    }

    /// `level_delta` of a level as it is now (`qty 0, orders 0` when it is empty or gone).
    fn emit_level_delta(&mut self, instrument: InstrumentId, side: Side, price: Price) {
        let (total, count) = self.books[&instrument].level_totals(side, price);
        let ts = self.cmd.ts_ns;
        self.emit(
            instrument,
            Event {
                kind: EventKind::LevelDelta as u8,
                side: side as u8,
                aux32: count,
                aux64: ts,
                price,
                qty: total,
                ..Event::default()
            },
        );
    }

    // ----------------------------------------------------------------------------------------
    // Book bookkeeping.

    /// Rests an order at the back of its level and records it in the index (the account list is
    /// the caller's business: a replaced order keeps its place there).
    fn rest(&mut self, instrument: InstrumentId, o: Order) {
        let book = self.books.get_mut(&instrument).unwrap();
        book.side_mut(o.side).entry(o.price).or_default().push_back(o);
        self.index.insert((o.account, o.order_id), (instrument, o.side, o.price));
    }

    /// Takes a live order out of its level (dropping the level when it empties) and out of the
    /// index. When `forget` the order also leaves its account's list (it is no longer live).
    fn unlink(&mut self, account: AccountId, order_id: ClientOrderId, forget: bool) -> (InstrumentId, Order) {
        let (instrument, side, price) = self.index.remove(&(account, order_id)).expect("live order");
        let book = self.books.get_mut(&instrument).unwrap();
        let ladder = book.side_mut(side);
        let level = ladder.get_mut(&price).unwrap();
        let pos = level.iter().position(|o| o.account == account && o.order_id == order_id).unwrap();
        let o = level.remove(pos).unwrap();
        if level.is_empty() {
            ladder.remove(&price);
        }
        if forget {
            self.forget(account, order_id);
        }
        (instrument, o)
    }

    /// Removes an order id from its account's list of live orders.
    fn forget(&mut self, account: AccountId, order_id: ClientOrderId) {
        let list = self.accounts.get_mut(&account).expect("known account");
        let pos = list.iter().position(|&id| id == order_id).expect("order in account list");
        list.remove(pos);
    }

    /// The taker's effective STP mode: its own if non-zero, else the account's default, else the
    /// engine default.
    fn effective_stp(&self, account: AccountId, stp: Option<StpMode>) -> StpMode {
        stp.or_else(|| self.account_stp.get(&account).copied()).unwrap_or(self.default_stp)
    }

    // ----------------------------------------------------------------------------------------
    // Commands.

    fn new_order(&mut self) {
        let c = self.cmd;
        // 1. unknown instrument
        let Some(book) = self.books.get(&c.instrument) else {
            return self.reject(RejectReason::UnknownInstrument);
        };
        // 2. halted
        if book.halted {
            return self.reject(RejectReason::InstrumentHalted);
        }
        // 3. side
        let Some(side) = Side::from_u8(c.side) else { return self.reject(RejectReason::InvalidSide) };
        // 4. order type
        let Some(order_type) = OrderType::from_u8(c.order_type) else {
            return self.reject(RejectReason::InvalidOrderType);
        };
        // 5. stp 0..=5
        let stp = match c.stp {
            0 => None,
            v => match StpMode::from_u8(v) {
                Some(m) => Some(m),
                None => return self.reject(RejectReason::InvalidStp),
            },
        };
        let cfg = &book.cfg;
        // 6. qty 0 or off lot; 7. qty range
        if let Err(r) = check_qty(cfg, c.qty) {
            return self.reject(r);
        }
        // 8. price presence, sign, tick; 9. band
        let price = c.price();
        let is_limit_type = order_type != OrderType::Market;
        if is_limit_type && price.is_none() {
            return self.reject(RejectReason::InvalidPrice);
        }
        if let Some(p) = price {
            if let Err(r) = check_price(book, p) {
                return self.reject(r);
            }
        }
        // 10. duplicate live id
        if self.index.contains_key(&(c.account, c.order_id)) {
            return self.reject(RejectReason::DuplicateOrderId);
        }
        // 11. capacity. Only a type that can rest needs room: an order slot, a level if its
        // price has none, and an account entry if its account holds none yet (the account
        // table holds "accounts that may hold resting orders"; an order that never rests never
        // needs an entry).
        if order_type.can_rest() {
            let p = price.unwrap();
            if self.index.len() >= self.orders_max {
                return self.reject(RejectReason::CapacityExhausted);
            }
            let own = book.side(side);
            if !own.contains_key(&p) && own.len() >= self.levels_max {
                return self.reject(RejectReason::CapacityExhausted);
            }
            if !self.accounts.contains_key(&c.account) && self.accounts.len() >= self.accounts_max {
                return self.reject(RejectReason::CapacityExhausted);
            }
        }
        // 12. post-only crossing the best opposite price
        if order_type == OrderType::PostOnly {
            if let Some(best) = book.best(side.opposite()) {
                if crosses(side, price, best) {
                    return self.reject(RejectReason::PostOnlyWouldCross);
                }
            }
        }
        let stp = self.effective_stp(c.account, stp);
        // The matching limit: a limit type's price; a market order's protection price, else the
        // band edge if a band applies, else unlimited.
        let limit = match order_type {
            OrderType::Market => price.or_else(|| band_edge(book, side)),
            _ => price,
        };
        // 13. FOK fillability, decided before any effect.
        if order_type == OrderType::LimitFok && !self.fok_fillable(c.instrument, c.account, side, limit, c.qty, stp) {
            return self.reject(RejectReason::FokNotFillable);
        }

        // Accepted.
        self.emit(
            c.instrument,
            Event {
                kind: EventKind::Accepted as u8,
                side: side as u8,
                account: c.account,
                aux32: order_type as u32,
                order_id: c.order_id,
                price: price.unwrap_or(0),
                qty: c.qty,
                ..Event::default()
            },
        );
        let mut taker = Taker {
            account: c.account,
            order_id: c.order_id,
            side,
            limit,
            report_price: price.unwrap_or(0),
            open: c.qty,
            stp,
        };
        let end = self.sweep(c.instrument, &mut taker);
        self.after_sweep(c.instrument, taker, end, order_type, false);
    }

    /// The taker's remainder after its sweep: rest (gtc / post-only), cancel (ioc, fok, market),
    /// or nothing (filled, or already cancelled by STP). A replaced order (`replaced`) is still
    /// in its account's list; a new order joins the list (and the account the account table)
    /// only when it rests.
    fn after_sweep(&mut self, instrument: InstrumentId, taker: Taker, end: SweepEnd, order_type: OrderType, replaced: bool) {
        let rests = end == SweepEnd::Finished && taker.open > 0 && order_type.can_rest();
        if !rests {
            if replaced {
                self.forget(taker.account, taker.order_id);
            }
            if end == SweepEnd::Finished && taker.open > 0 {
                self.emit_cancelled(
                    instrument,
                    taker.account,
                    taker.order_id,
                    taker.side,
                    taker.report_price,
                    taker.open,
                    CancelReason::Unfilled,
                );
            }
            return;
        }
        let price = taker.limit.expect("resting types have a price");
        self.rest(
            instrument,
            Order {
                account: taker.account,
                order_id: taker.order_id,
                side: taker.side,
                price,
                qty: taker.open,
                stp: taker.stp,
                order_type,
            },
        );
        if !replaced {
            self.accounts.entry(taker.account).or_default().push(taker.order_id);
        }
        self.emit_level_delta(instrument, taker.side, price);
    }

    /// "Walk the makers in priority within the limit; a maker of another account (or any maker
    /// when the mode is `none`) adds its open quantity; a same-account maker under `cancel_maker`
    /// adds nothing and the walk goes on; a same-account maker under any other mode ends the walk.
    /// Fillable if the sum reached `qty`."
    fn fok_fillable(
        &self,
        instrument: InstrumentId,
        account: AccountId,
        side: Side,
        limit: Option<Price>,
        qty: Qty,
        stp: StpMode,
    ) -> bool {
        let book = &self.books[&instrument];
        let opp = side.opposite();
        let mut sum: Qty = 0;
        'walk: for p in book.prices_best_first(opp) {
            if !crosses(side, limit, p) {
                break;
            }
            for m in &book.side(opp)[&p] {
                if m.account != account || stp == StpMode::None {
                    sum += m.qty;
                } else if stp == StpMode::CancelMaker {
                    continue;
                } else {
                    break 'walk;
                }
                if sum >= qty {
                    break 'walk;
                }
            }
        }
        sum >= qty
    }

    /// The taker sweeps the opposite side from the best level while it has open quantity and the
    /// best level crosses its limit. Level deltas are emitted when the sweep leaves a level it
    /// changed, before the taker's own final (STP) cancellation.
    fn sweep(&mut self, instrument: InstrumentId, t: &mut Taker) -> SweepEnd {
        let opp = t.side.opposite();
        loop {
            if t.open == 0 {
                return SweepEnd::Finished;
            }
            let Some(level_price) = self.books[&instrument].best(opp) else { return SweepEnd::Finished };
            if !crosses(t.side, t.limit, level_price) {
                return SweepEnd::Finished;
            }
            let mut touched = false;
            // Set when STP stops the taker: the taker's cancelled event (emitted after the delta).
            let mut stop_qty: Option<Qty> = None;
            while t.open > 0 {
                let Some(maker) = self.books[&instrument].side(opp).get(&level_price).and_then(|l| l.front().copied())
                else {
                    break;
                };
                if maker.account != t.account || t.stp == StpMode::None {
                    touched = true;
                    let q = t.open.min(maker.qty);
                    t.open -= q;
                    let maker_left = maker.qty - q;
                    let mut flags = 0;
                    if t.open == 0 {
                        flags |= EV_TAKER_DONE;
                    }
                    if maker_left == 0 {
                        flags |= EV_MAKER_DONE;
                    }
                    let trade_id = self.emit(
                        instrument,
                        Event {
                            kind: EventKind::Fill as u8,
                            side: t.side as u8,
                            flags,
                            account: t.account,
                            aux32: maker.account,
                            order_id: t.order_id,
                            aux64: maker.order_id,
                            price: maker.price,
                            qty: q,
                            ..Event::default()
                        },
                    );
                    let ts = self.cmd.ts_ns;
                    self.emit(
                        instrument,
                        Event {
                            kind: EventKind::Trade as u8,
                            side: t.side as u8,
                            order_id: trade_id,
                            aux64: ts,
                            price: maker.price,
                            qty: q,
                            ..Event::default()
                        },
                    );
                    self.books.get_mut(&instrument).unwrap().last_trade = Some(maker.price);
                    self.set_maker_qty(instrument, &maker, maker_left);
                    continue;
                }
                // Same account, STP applies (taker's effective mode).
                match t.stp {
                    StpMode::None => unreachable!(),
                    StpMode::CancelTaker => {
                        // The maker stays untouched; the level changed only if earlier makers did.
                        stop_qty = Some(t.open);
                        break;
                    }
                    StpMode::CancelMaker => {
                        touched = true;
                        self.cancel_maker_stp(instrument, &maker, maker.qty);
                    }
                    StpMode::CancelBoth => {
                        touched = true;
                        self.cancel_maker_stp(instrument, &maker, maker.qty);
                        stop_qty = Some(t.open);
                        break;
                    }
                    StpMode::DecrementAndCancel => {
                        touched = true;
                        let d = t.open.min(maker.qty);
                        if maker.qty == d {
                            self.cancel_maker_stp(instrument, &maker, d);
                        } else {
                            self.set_maker_qty(instrument, &maker, maker.qty - d);
                            self.emit_decremented(
                                instrument,
                                maker.account,
                                maker.order_id,
                                maker.side,
                                maker.price,
                                maker.qty - d,
                            );
                        }
                        if t.open == d {
                            stop_qty = Some(d);
                            t.open = 0;
                            break;
                        }
                        t.open -= d;
                        self.emit_decremented(instrument, t.account, t.order_id, t.side, t.report_price, t.open);
                    }
                }
            }
            if touched {
                self.emit_level_delta(instrument, opp, level_price);
            }
            if let Some(q) = stop_qty {
                t.open = 0;
                self.emit_cancelled(
                    instrument,
                    t.account,
                    t.order_id,
                    t.side,
                    t.report_price,
                    q,
                    CancelReason::SelfTradePrevention,
                );
                return SweepEnd::StoppedByStp;
            }
        }
    }

    /// Sets a maker's open quantity; at 0 it leaves the book (and is no longer live).
    fn set_maker_qty(&mut self, instrument: InstrumentId, maker: &Order, qty: Qty) {
        if qty == 0 {
            self.unlink(maker.account, maker.order_id, true);
        } else {
            let book = self.books.get_mut(&instrument).unwrap();
            let level = book.side_mut(maker.side).get_mut(&maker.price).unwrap();
            let o = level.iter_mut().find(|o| o.account == maker.account && o.order_id == maker.order_id).unwrap();
            o.qty = qty;
        }
    }

    /// `cancelled(maker, self_trade_prevention, qty)`; the maker leaves.
    fn cancel_maker_stp(&mut self, instrument: InstrumentId, maker: &Order, qty: Qty) {
        self.unlink(maker.account, maker.order_id, true);
        self.emit_cancelled(
            instrument,
            maker.account,
            maker.order_id,
            maker.side,
            maker.price,
            qty,
            CancelReason::SelfTradePrevention,
        );
    }

    fn cancel(&mut self) {
        let c = self.cmd;
        // "Cancel: `unknown_order` only (halted instruments still accept cancels)."
        match self.index.get(&(c.account, c.order_id)) {
            Some(&(inst, _, _)) if inst == c.instrument => {}
            _ => return self.reject(RejectReason::UnknownOrder),
        }
        let (inst, o) = self.unlink(c.account, c.order_id, true);
        self.emit_cancelled(inst, o.account, o.order_id, o.side, o.price, o.qty, CancelReason::UserRequested);
        self.emit_level_delta(inst, o.side, o.price);
    }

    fn replace(&mut self) {
        let c = self.cmd;
        let o = match self.index.get(&(c.account, c.order_id)) {
            Some(&(inst, _, _)) if inst == c.instrument => self.order(c.account, c.order_id).unwrap(),
            _ => return self.reject(RejectReason::UnknownOrder),
        };
        let book = &self.books[&c.instrument];
        if book.halted {
            return self.reject(RejectReason::InstrumentHalted);
        }
        if let Err(r) = check_qty(&book.cfg, c.qty) {
            return self.reject(r);
        }
        if let Some(p) = c.price() {
            if let Err(r) = check_price(book, p) {
                return self.reject(r);
            }
        }
        let new_price = c.price().unwrap_or(o.price);
        let price_moves = new_price != o.price;
        if price_moves {
            let own = book.side(o.side);
            if !own.contains_key(&new_price) && own.len() >= self.levels_max {
                return self.reject(RejectReason::CapacityExhausted);
            }
        }
        let would_cross = match book.best(o.side.opposite()) {
            Some(best) => price_moves && crosses(o.side, Some(new_price), best),
            None => false,
        };
        if o.order_type == OrderType::PostOnly && would_cross {
            return self.reject(RejectReason::PostOnlyWouldCross);
        }

        let priority_kept = !price_moves && c.qty <= o.qty;
        self.emit(
            c.instrument,
            Event {
                kind: EventKind::Replaced as u8,
                side: o.side as u8,
                flags: if priority_kept { EV_PRIORITY_KEPT } else { 0 },
                account: o.account,
                order_id: o.order_id,
                price: new_price,
                qty: c.qty,
                ..Event::default()
            },
        );
        if priority_kept {
            // Same price, qty lowered or equal: keeps its place.
            let book = self.books.get_mut(&c.instrument).unwrap();
            let level = book.side_mut(o.side).get_mut(&o.price).unwrap();
            level.iter_mut().find(|x| x.account == o.account && x.order_id == o.order_id).unwrap().qty = c.qty;
            self.emit_level_delta(c.instrument, o.side, o.price);
            return;
        }
        // Loses its place: out of the level (it stays in its account's list).
        let (inst, mut order) = self.unlink(o.account, o.order_id, false);
        order.qty = c.qty;
        order.price = new_price;
        if !price_moves {
            // Same price, qty raised: back of its level.
            self.rest(inst, order);
            self.emit_level_delta(inst, o.side, o.price);
            return;
        }
        self.emit_level_delta(inst, o.side, o.price);
        if !would_cross {
            self.rest(inst, order);
            self.emit_level_delta(inst, o.side, new_price);
            return;
        }
        // Crossing: sweeps as a taker for its open quantity with its own STP mode.
        let mut taker = Taker {
            account: order.account,
            order_id: order.order_id,
            side: order.side,
            limit: Some(new_price),
            report_price: new_price,
            open: order.qty,
            stp: order.stp,
        };
        let end = self.sweep(inst, &mut taker);
        self.after_sweep(inst, taker, end, order.order_type, true);
    }

    fn mass_cancel(&mut self) {
        let c = self.cmd;
        if c.instrument != 0 && !self.books.contains_key(&c.instrument) {
            return self.reject(RejectReason::UnknownInstrument);
        }
        let reason = match c.reason {
            0 => CancelReason::MassCancel,
            v => match CancelReason::from_u8(v) {
                Some(r) => r,
                None => return self.reject(RejectReason::MalformedCommand),
            },
        };
        let ids: Vec<ClientOrderId> = self.accounts.get(&c.account).cloned().unwrap_or_default();
        let mut n = 0u64;
        for id in ids {
            let (inst, _, _) = self.index[&(c.account, id)];
            if c.instrument != 0 && inst != c.instrument {
                continue;
            }
            let (inst, o) = self.unlink(c.account, id, true);
            self.emit_cancelled(inst, o.account, o.order_id, o.side, o.price, o.qty, reason);
            self.emit_level_delta(inst, o.side, o.price);
            n += 1;
        }
        self.emit(
            c.instrument,
            Event {
                kind: EventKind::MassCancelled as u8,
                reason: reason as u8,
                account: c.account,
                qty: n,
                ..Event::default()
            },
        );
    }

    fn set_halted(&mut self, halted: bool) {
        let c = self.cmd;
        let Some(book) = self.books.get_mut(&c.instrument) else {
            return self.reject(RejectReason::UnknownInstrument);
        };
        // Fields a command does not use (here `reason`) are ignored, as by every command.
        book.halted = halted;
        self.emit(
            c.instrument,
            Event {
                kind: EventKind::InstrumentStatus as u8,
                flags: if halted { EV_HALTED } else { 0 },
                ..Event::default()
            },
        );
    }
}

/// Steps 6 (zero or off lot) and 7 (range) for a quantity.
#[allow(unknown_lints, clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the MSRV
fn check_qty(cfg: &InstrumentConfig, qty: Qty) -> Result<(), RejectReason> {
    if qty == 0 || qty % cfg.lot_size != 0 {
        return Err(RejectReason::QuantityOffLot);
    }
    if qty < cfg.min_qty || qty > cfg.max_qty {
        return Err(RejectReason::QuantityOutOfRange);
    }
    Ok(())
}

/// Steps 8 (sign, tick) and 9 (band) for a present price.
fn check_price(book: &Book, p: Price) -> Result<(), RejectReason> {
    if p <= 0 {
        return Err(RejectReason::InvalidPrice);
    }
    if p % book.cfg.tick_size != 0 {
        return Err(RejectReason::PriceOffTick);
    }
    if let (Some(bps), Some(r)) = (book.cfg.price_band_bps, book.band_reference()) {
        // |price - ref| * 10000 > ref * band_bps, in exact arithmetic.
        let lhs = (p as i128 - r as i128).abs() * 10_000;
        let rhs = r as i128 * bps as i128;
        if lhs > rhs {
            return Err(RejectReason::OutsidePriceBand);
        }
    }
    Ok(())
}

/// A market order's band-edge limit: `ref ± ref * band_bps / 10000`, rounded toward the
/// reference to a tick. `None` when no band applies.
fn band_edge(book: &Book, side: Side) -> Option<Price> {
    let bps = book.cfg.price_band_bps? as i128;
    let r = book.band_reference()? as i128;
    let tick = book.cfg.tick_size as i128;
    let width = r * bps; // in 1/10000 units
    let edge = match side {
        // ref + width/10000, rounded down (toward ref) to a multiple of tick.
        Side::Buy => (r * 10_000 + width).div_euclid(10_000 * tick) * tick,
        // ref - width/10000, rounded up (toward ref) to a multiple of tick.
        Side::Sell => -((-(r * 10_000 - width)).div_euclid(10_000 * tick)) * tick,
    };
    Some(edge.clamp(i64::MIN as i128, i64::MAX as i128) as Price)
}

