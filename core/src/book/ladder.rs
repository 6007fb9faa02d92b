//! Price levels and the per-side ladder that orders them.
//!
//! A ladder is a sorted array of `(key, level index)` with the best level at the END, so the hot
//! operations — read the best level, remove an emptied best level — are O(1), and inserting a new
//! level near the top moves only the few entries above it. The key is the price for bids and the
//! negated price for asks, so "better" is always "larger key". Prices are validated > 0, so the
//! negation never overflows.

use super::store::NIL;
use crate::types::*;

/// One price level: totals and the FIFO of its orders (slot indices into the order store).
#[derive(Clone, Copy, Debug)]
pub struct PriceLevel {
    /// Level price.
    pub price: Price,
    /// Sum of the open quantities.
    pub total: Qty,
    /// Number of orders.
    pub count: u32,
    /// Oldest order (front of the queue); also the free-list link of an unused level.
    pub head: u32,
    /// Newest order.
    pub tail: u32,
}

impl PriceLevel {
    const EMPTY: PriceLevel = PriceLevel { price: 0, total: 0, count: 0, head: NIL, tail: NIL };
}

/// Slab of price levels shared by both sides of one book.
pub struct LevelSlab {
    levels: Vec<PriceLevel>,
    free_head: u32,
}

impl LevelSlab {
    /// `capacity` levels, allocated now.
    pub fn new(capacity: u32) -> LevelSlab {
        let mut levels = vec![PriceLevel::EMPTY; capacity as usize];
        for (i, l) in levels.iter_mut().enumerate() {
            l.head = if i + 1 < capacity as usize { i as u32 + 1 } else { NIL };
        }
        LevelSlab { levels, free_head: if capacity > 0 { 0 } else { NIL } }
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        self.levels.len() * core::mem::size_of::<PriceLevel>()
    }

    /// A fresh empty level at `price`. The caller checked the side's ladder has room, and the
    /// slab holds as many levels as both ladders together, so a slot is always free here.
    #[inline]
    pub fn alloc(&mut self, price: Price) -> u32 {
        let i = self.free_head;
        debug_assert!(i != NIL, "level slab exhausted");
        self.free_head = self.levels[i as usize].head;
        self.levels[i as usize] = PriceLevel { price, ..PriceLevel::EMPTY };
        i
    }

    /// Returns an empty level to the slab.
    #[inline]
    pub fn free(&mut self, i: u32) {
        debug_assert!(self.levels[i as usize].count == 0);
        self.levels[i as usize].head = self.free_head;
        self.free_head = i;
    }
}

impl core::ops::Index<u32> for LevelSlab {
    type Output = PriceLevel;
    #[inline]
    fn index(&self, i: u32) -> &PriceLevel {
        &self.levels[i as usize]
    }
}

impl core::ops::IndexMut<u32> for LevelSlab {
    #[inline]
    fn index_mut(&mut self, i: u32) -> &mut PriceLevel {
        &mut self.levels[i as usize]
    }
}

/// Slots of a ladder's direct-mapped price cache (a power of two).
const CACHE_SLOTS: usize = 1024;

/// One slot of the price cache: levels whose price ≡ slot (mod [`CACHE_SLOTS`]).
#[derive(Clone, Copy)]
struct CacheSlot {
    /// Price of the level in `level` (valid when `level != NIL`).
    price: Price,
    /// A level with this residue, or NIL when the holder left while others remain.
    level: u32,
    /// Live levels with this residue.
    count: u32,
}

/// One side's levels, sorted worst → best, with a direct-mapped price cache in front of the
/// binary search: most lookups are for prices near the top, a few ticks apart, which map to
/// distinct slots. `count == 0` proves a price absent without searching; a slot whose holder does
/// not match falls back to the binary search, so the cache is never wrong, only sometimes unused.
pub struct Ladder {
    side: Side,
    entries: Vec<(i64, u32)>,
    cache: Vec<CacheSlot>,
}

impl Ladder {
    /// An empty ladder able to hold `levels_max` levels without allocating.
    pub fn new(side: Side, levels_max: u32) -> Ladder {
        Ladder {
            side,
            entries: Vec::with_capacity(levels_max as usize),
            cache: vec![CacheSlot { price: 0, level: NIL, count: 0 }; CACHE_SLOTS],
        }
    }

    #[inline]
    fn slot(price: Price) -> usize {
        price as u64 as usize & (CACHE_SLOTS - 1)
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * 16 + self.cache.len() * core::mem::size_of::<CacheSlot>()
    }

    #[inline]
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price,
            Side::Sell => -price,
        }
    }

    /// Number of levels.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no level.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a new level fits.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.entries.len() == self.entries.capacity()
    }

    /// Best level's index.
    #[inline]
    pub fn best(&self) -> Option<u32> {
        self.entries.last().map(|e| e.1)
    }

    /// Level index at `price`.
    #[inline]
    pub fn find(&self, price: Price) -> Option<u32> {
        let c = &self.cache[Self::slot(price)];
        if c.count == 0 {
            return None;
        }
        if c.level != NIL && c.price == price {
            return Some(c.level);
        }
        self.search(price)
    }

    /// Binary search (after a look at the top few levels) of the sorted entries.
    #[inline]
    fn search(&self, price: Price) -> Option<u32> {
        let k = self.key(price);
        // Most activity is near the top: scan the last few entries before binary searching.
        let n = self.entries.len();
        for e in self.entries[n.saturating_sub(4)..].iter().rev() {
            if e.0 == k {
                return Some(e.1);
            }
            if e.0 < k {
                return None;
            }
        }
        self.entries[..n.saturating_sub(4)].binary_search_by_key(&k, |e| e.0).ok().map(|i| self.entries[i].1)
    }

    /// Inserts a level known to be absent. The caller checked `!is_full()`.
    #[inline]
    pub fn insert(&mut self, price: Price, level: u32) {
        debug_assert!(!self.is_full());
        let k = self.key(price);
        let pos = self.entries.partition_point(|e| e.0 < k);
        debug_assert!(pos == self.entries.len() || self.entries[pos].0 != k);
        self.entries.insert(pos, (k, level));
        let c = &mut self.cache[Self::slot(price)];
        if c.count == 0 {
            c.price = price;
            c.level = level;
        }
        c.count += 1;
    }

    #[inline]
    fn uncache(&mut self, price: Price) {
        let c = &mut self.cache[Self::slot(price)];
        debug_assert!(c.count > 0);
        c.count -= 1;
        if c.level != NIL && c.price == price {
            // Another level with this residue may remain: it is found by the binary search.
            c.level = NIL;
        }
    }

    /// Removes the level at `price` (present).
    #[inline]
    pub fn remove(&mut self, price: Price) {
        let k = self.key(price);
        if self.entries.last().is_some_and(|e| e.0 == k) {
            self.entries.pop();
            self.uncache(price);
            return;
        }
        if let Ok(i) = self.entries.binary_search_by_key(&k, |e| e.0) {
            self.entries.remove(i);
            self.uncache(price);
        } else {
            debug_assert!(false, "removing an absent level");
        }
    }

    /// Level indices from best to worst.
    #[inline]
    pub fn iter_best_first(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().rev().map(|e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Prices that collide in the cache (multiples of CACHE_SLOTS apart) and prices that do not,
    /// inserted and removed in random order: `find` always agrees with a plain map, and the
    /// ladder stays sorted best-last.
    #[test]
    fn cache_collisions_never_change_answers() {
        for side in [Side::Buy, Side::Sell] {
            let mut l = Ladder::new(side, 64);
            let mut model: BTreeMap<Price, u32> = BTreeMap::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for step in 0..20_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let price = 1 + (x % 4) as i64 * CACHE_SLOTS as i64 + ((x >> 8) % 6) as i64;
                match model.get(&price) {
                    Some(_) if x & (1 << 40) != 0 => {
                        l.remove(price);
                        model.remove(&price);
                    }
                    None if !l.is_full() => {
                        l.insert(price, step);
                        model.insert(price, step);
                    }
                    _ => {}
                }
                for p in [price, price + CACHE_SLOTS as i64, price - CACHE_SLOTS as i64, 1, 2 + CACHE_SLOTS as i64] {
                    assert_eq!(l.find(p), model.get(&p).copied(), "step {step}: find({p})");
                }
                let best = match side {
                    Side::Buy => model.iter().next_back(),
                    Side::Sell => model.iter().next(),
                };
                assert_eq!(l.best(), best.map(|(_, &v)| v));
            }
        }
    }
}
