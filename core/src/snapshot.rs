//! Whole-engine snapshots as plain data: what the journal serialises (rkyv) so that recovery
//! starts from a snapshot and replays only the journal after it.
//!
//! A restored engine is indistinguishable from the original: same books (levels and FIFO order),
//! same per-account mass-cancel order, same account table (so capacity rejects agree), same
//! sequences — and so the same `state_hash()` and the same future events.

use crate::book::store::{OrderStore, NIL};
use crate::config::{ConfigError, EngineConfig};
use crate::engine::Engine;
use crate::types::*;

/// One resting order in a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
pub struct SnapshotOrder {
    /// Owner.
    pub account: AccountId,
    /// Client order id.
    pub order_id: ClientOrderId,
    /// Instrument id.
    pub instrument: InstrumentId,
    /// [`Side`] wire value.
    pub side: u8,
    /// Post-only (else limit GTC).
    pub post_only: bool,
    /// Effective [`StpMode`] wire value.
    pub stp: u8,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub qty: Qty,
}

/// Per-instrument state besides the orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
pub struct SnapshotBook {
    /// Instrument id.
    pub instrument: InstrumentId,
    /// Halted.
    pub halted: bool,
    /// Last trade price.
    pub last_trade: Option<Price>,
}

/// An account-table entry and the ids of its resting orders in mass-cancel order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
pub struct SnapshotAccount {
    /// Account id.
    pub account: AccountId,
    /// Its orders' client ids, oldest first.
    pub orders: Vec<ClientOrderId>,
}

/// The whole matching state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
pub struct EngineSnapshot {
    /// Sequence the next event will get.
    pub next_event_seq: Seq,
    /// Last command applied.
    pub last_cmd_seq: Seq,
    /// Books in ascending instrument id.
    pub books: Vec<SnapshotBook>,
    /// Every resting order: per book, bids then asks, best level first, FIFO within a level.
    pub orders: Vec<SnapshotOrder>,
    /// Account table in insertion order.
    pub accounts: Vec<SnapshotAccount>,
    /// `state_hash()` of the engine that was snapshotted (checked on restore).
    pub state_hash: u64,
}

impl Engine {
    /// Exports the whole state. Allocates: call it off the matching thread (e.g. on a shadow
    /// engine that follows the journal).
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut orders = Vec::with_capacity(self.resting_orders());
        let mut buf = Vec::new();
        for &id in &self.ids {
            for side in [Side::Buy, Side::Sell] {
                self.book_orders(id, side, &mut buf);
                orders.extend(buf.iter().map(|o| SnapshotOrder {
                    account: o.account,
                    order_id: o.order_id,
                    instrument: o.instrument,
                    side: o.side as u8,
                    post_only: o.order_type == OrderType::PostOnly,
                    stp: o.stp as u8,
                    price: o.price,
                    qty: o.qty,
                }));
            }
        }
        let accounts = self
            .accounts
            .iter()
            .map(|a| {
                let mut ids = Vec::new();
                let mut slot = a.head;
                while slot != NIL {
                    ids.push(self.store[slot].order_id);
                    slot = self.store[slot].acct_next;
                }
                SnapshotAccount { account: a.account, orders: ids }
            })
            .collect();
        EngineSnapshot {
            next_event_seq: self.next_event_seq(),
            last_cmd_seq: self.last_cmd_seq(),
            books: self
                .books
                .iter()
                .map(|b| SnapshotBook { instrument: b.cfg.id, halted: b.halted, last_trade: b.last_trade })
                .collect(),
            orders,
            accounts,
            state_hash: self.state_hash(),
        }
    }

    /// Rebuilds an engine from `cfg` (which must be the configuration the snapshot was taken
    /// under, or one with larger capacities) and a snapshot. Verifies the state hash.
    pub fn restore(cfg: &EngineConfig, snap: &EngineSnapshot) -> Result<Engine, ConfigError> {
        let bad = |what: String| Err(ConfigError(format!("snapshot does not fit the configuration: {what}")));
        let mut e = Engine::new(cfg)?;
        if snap.books.len() != e.books.len() {
            return bad(format!("{} books in snapshot, {} configured", snap.books.len(), e.books.len()));
        }
        for (b, sb) in e.books.iter_mut().zip(&snap.books) {
            if b.cfg.id != sb.instrument {
                return bad(format!("instrument {} not configured", sb.instrument));
            }
            b.halted = sb.halted;
            b.last_trade = sb.last_trade;
        }
        if snap.orders.len() > e.store.capacity() {
            return bad(format!("{} orders > orders_max", snap.orders.len()));
        }
        // Account table first, in its original order (its entries decide capacity rejects).
        for a in &snap.accounts {
            if e.accounts.find_or_insert(a.account).is_none() {
                return bad("more accounts than accounts_max".into());
            }
        }
        for o in &snap.orders {
            let Some(b) = e.ids.binary_search(&o.instrument).ok() else {
                return bad(format!("order on unknown instrument {}", o.instrument));
            };
            let (Some(side), Some(stp)) = (Side::from_u8(o.side), StpMode::from_u8(o.stp)) else {
                return bad("order with an invalid side or stp".into());
            };
            if e.books[b].level_would_overflow(side, o.price) {
                return bad("more levels than levels_max".into());
            }
            if e.index.find(&e.store, o.account, o.order_id).is_some() {
                return bad(format!("duplicate order ({}, {})", o.account, o.order_id));
            }
            let Some(ai) = e.accounts.find(o.account) else {
                return bad(format!("order of account {} missing from the account table", o.account));
            };
            let order = OrderStore::new_order(o.order_id, o.account, ai, b as u16, side, o.post_only, stp, o.price, o.qty);
            let slot = e.store.alloc(order);
            e.index.insert(o.account, o.order_id, slot);
            e.books[b].push_back(&mut e.store, slot);
        }
        let listed: usize = snap.accounts.iter().map(|a| a.orders.len()).sum();
        if listed != snap.orders.len() {
            return bad(format!("account lists name {listed} orders, the books hold {}", snap.orders.len()));
        }
        for a in &snap.accounts {
            let Some(ai) = e.accounts.find(a.account) else { continue };
            for &id in &a.orders {
                let Some(slot) = e.index.find(&e.store, a.account, id) else {
                    return bad(format!("account list names a missing order ({}, {id})", a.account));
                };
                if e.store[slot].acct_prev != NIL || e.accounts[ai].head == slot {
                    return bad(format!("order ({}, {id}) listed twice", a.account));
                }
                e.link_account(ai, slot);
            }
        }
        e.em.next_seq = snap.next_event_seq;
        e.last_cmd_seq = snap.last_cmd_seq;
        if e.state_hash() != snap.state_hash {
            return bad(format!("state hash {:016x} after restore, {:016x} in snapshot", e.state_hash(), snap.state_hash));
        }
        Ok(e)
    }
}
