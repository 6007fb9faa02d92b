//! The fast order book: one [`OrderBook`] per instrument, sharing one preallocated
//! [`store::OrderStore`], [`index::OrderIndex`] and [`accounts::AccountTable`] owned by the engine.
//!
//! Memory per resting-order capacity: a 56-byte [`store::Order`] slot plus 2–4 index buckets of
//! 4 bytes (8 bytes when `orders_max` is a power of two). Every structure is allocated at start-up;
//! the matching path only moves indices.

pub mod accounts;
pub mod index;
pub mod ladder;
pub mod store;

use crate::config::InstrumentConfig;
use crate::types::*;
use ladder::{Ladder, LevelSlab, PriceLevel};
use store::{OrderStore, NIL};

/// One instrument's book: both ladders, their levels, trading status and reference price.
pub struct OrderBook {
    /// The instrument's configuration.
    pub cfg: InstrumentConfig,
    /// Bids, best = highest.
    pub bids: Ladder,
    /// Asks, best = lowest.
    pub asks: Ladder,
    /// Levels of both sides.
    pub levels: LevelSlab,
    /// Price of the last trade.
    pub last_trade: Option<Price>,
    /// Halted: entry and replace rejected.
    pub halted: bool,
}

impl OrderBook {
    /// A book with room for `levels_max` levels per side.
    pub fn new(cfg: InstrumentConfig, levels_max: u32) -> OrderBook {
        OrderBook {
            cfg,
            bids: Ladder::new(Side::Buy, levels_max),
            asks: Ladder::new(Side::Sell, levels_max),
            levels: LevelSlab::new(levels_max * 2),
            last_trade: None,
            halted: false,
        }
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        self.bids.memory_bytes() + self.asks.memory_bytes() + self.levels.memory_bytes()
    }

    /// The ladder of a side.
    #[inline]
    pub fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The level at an index.
    #[inline]
    pub fn level(&self, i: u32) -> &PriceLevel {
        &self.levels[i]
    }

    /// Reference price of the band: last trade, else the configured reference.
    #[inline]
    pub fn reference_price(&self) -> Option<Price> {
        self.last_trade.or(self.cfg.reference_price)
    }

    /// Whether a new order resting at (`side`, `price`) would need a level that does not fit.
    #[inline]
    pub fn level_would_overflow(&self, side: Side, price: Price) -> bool {
        let l = self.ladder(side);
        l.is_full() && l.find(price).is_none()
    }

    /// Appends the order in `slot` (price, side, qty set) to the back of its level, creating the
    /// level if needed. The caller checked that a new level fits.
    #[inline]
    pub fn push_back(&mut self, store: &mut OrderStore, slot: u32) {
        let (side, price, qty) = {
            let o = &store[slot];
            (o.side(), o.price, o.qty)
        };
        let li = match self.ladder(side).find(price) {
            Some(li) => li,
            None => {
                let li = self.levels.alloc(price);
                self.ladder_mut(side).insert(price, li);
                li
            }
        };
        let lvl = &mut self.levels[li];
        let tail = lvl.tail;
        {
            let o = &mut store[slot];
            o.level = li;
            o.prev = tail;
            o.next = NIL;
        }
        if tail == NIL {
            lvl.head = slot;
        } else {
            store[tail].next = slot;
        }
        lvl.tail = slot;
        lvl.total += qty;
        lvl.count += 1;
    }

    /// Takes the order in `slot` out of its level (the slot stays allocated). Removes the level
    /// from its ladder when it empties. Returns the level's new (total, count) and its price.
    #[inline]
    pub fn unlink(&mut self, store: &mut OrderStore, slot: u32) -> (Price, Qty, u32) {
        let (li, prev, next, qty, side) = {
            let o = &store[slot];
            (o.level, o.prev, o.next, o.qty, o.side())
        };
        debug_assert!(li != NIL);
        if prev == NIL {
            self.levels[li].head = next;
        } else {
            store[prev].next = next;
        }
        if next == NIL {
            self.levels[li].tail = prev;
        } else {
            store[next].prev = prev;
        }
        let o = &mut store[slot];
        o.level = NIL;
        o.prev = NIL;
        o.next = NIL;
        let lvl = &mut self.levels[li];
        lvl.total -= qty;
        lvl.count -= 1;
        let out = (lvl.price, lvl.total, lvl.count);
        if lvl.count == 0 {
            debug_assert!(lvl.total == 0);
            self.ladder_mut(side).remove(out.0);
            self.levels.free(li);
        }
        out
    }

    /// Reduces a resting order's open quantity by `d` (< its qty) in place; returns the level's
    /// new total.
    #[inline]
    pub fn reduce(&mut self, store: &mut OrderStore, slot: u32, d: Qty) -> Qty {
        let o = &mut store[slot];
        debug_assert!(d < o.qty);
        o.qty -= d;
        let lvl = &mut self.levels[o.level];
        lvl.total -= d;
        lvl.total
    }
}
