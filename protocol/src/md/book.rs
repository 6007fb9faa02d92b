//! An aggregated price-level book as the market-data protocol carries it, with its checksum.

use super::crc::crc32_update;
use super::{LevelUpdate, Levels, CRC_DEPTH};
use std::collections::BTreeMap;
use tickwire_core::engine::Level;
use tickwire_core::{Price, Qty, Side};

/// Levels of both sides keyed by price. Used by the feed (to make snapshots and checksums) and by
/// clients (to rebuild the book from a snapshot and deltas).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdBook {
    bids: BTreeMap<Price, (Qty, u32)>,
    asks: BTreeMap<Price, (Qty, u32)>,
    /// Whether the instrument is halted.
    pub halted: bool,
}

impl MdBook {
    /// An empty book.
    pub fn new() -> MdBook {
        MdBook::default()
    }

    /// Sets one level (`qty` 0 removes it).
    pub fn apply(&mut self, u: &LevelUpdate) {
        let side = match u.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if u.qty == 0 {
            side.remove(&u.price);
        } else {
            side.insert(u.price, (u.qty, u.orders));
        }
    }

    /// Applies every update of a batch, in order.
    pub fn apply_all(&mut self, ups: Levels<'_>) {
        for u in ups.iter() {
            self.apply(&u);
        }
    }

    /// Replaces the whole book by a snapshot's levels.
    pub fn load(&mut self, bids: Levels<'_>, asks: Levels<'_>, halted: bool) {
        self.clear();
        self.halted = halted;
        for u in bids.iter().chain(asks.iter()) {
            self.apply(&u);
        }
    }

    /// Empties the book.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.halted = false;
    }

    /// Number of levels on a side.
    pub fn len(&self, side: Side) -> usize {
        match side {
            Side::Buy => self.bids.len(),
            Side::Sell => self.asks.len(),
        }
    }

    /// Whether both sides are empty.
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }

    /// The levels of one side, best first.
    pub fn levels(&self, side: Side) -> Box<dyn Iterator<Item = Level> + '_> {
        let f = |(&price, &(qty, orders)): (&Price, &(Qty, u32))| Level { price, qty, orders };
        match side {
            Side::Buy => Box::new(self.bids.iter().rev().map(f)),
            Side::Sell => Box::new(self.asks.iter().map(f)),
        }
    }

    /// Up to `n` levels of one side, best first, into `out` (cleared first).
    pub fn depth(&self, side: Side, n: usize, out: &mut Vec<Level>) {
        out.clear();
        out.extend(self.levels(side).take(n));
    }

    /// The best level of a side.
    pub fn best(&self, side: Side) -> Option<Level> {
        self.levels(side).next()
    }

    /// The checksum: CRC-32 over the best [`CRC_DEPTH`] bids (best first) followed by the best
    /// [`CRC_DEPTH`] asks (best first), each level as 20 bytes `price i64 LE, qty u64 LE,
    /// orders u32 LE`. Missing levels contribute nothing; an empty book's checksum is 0.
    pub fn crc(&self) -> u32 {
        let mut c = 0;
        for side in [Side::Buy, Side::Sell] {
            for l in self.levels(side).take(CRC_DEPTH) {
                c = crc32_update(c, &level_crc_bytes(&l));
            }
        }
        c
    }
}

/// The checksum of a book made of exactly these levels (best first): what [`MdBook::crc`] would
/// give after loading them (a top-N view's checksum).
pub fn levels_crc(bids: &[Level], asks: &[Level]) -> u32 {
    let mut c = 0;
    for l in bids.iter().take(CRC_DEPTH).chain(asks.iter().take(CRC_DEPTH)) {
        c = crc32_update(c, &level_crc_bytes(l));
    }
    c
}

/// The 20 bytes a level contributes to the checksum.
pub fn level_crc_bytes(l: &Level) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&l.price.to_le_bytes());
    b[8..16].copy_from_slice(&l.qty.to_le_bytes());
    b[16..].copy_from_slice(&l.orders.to_le_bytes());
    b
}
