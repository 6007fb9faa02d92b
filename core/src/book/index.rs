//! `(account, client order id) → order slot`: open addressing with linear probing and
//! backward-shift deletion (no tombstones, so probe lengths never degrade), allocated once.
//!
//! A bucket holds only the slot index (4 bytes); keys are read from the order store. With at least
//! twice as many buckets as orders the load factor stays ≤ 0.5.

use super::store::{OrderStore, NIL};
use crate::types::*;

/// The id index.
pub struct OrderIndex {
    buckets: Vec<u32>,
    mask: usize,
    shift: u32,
}

#[inline]
fn hash(account: AccountId, order_id: ClientOrderId) -> u64 {
    // Fibonacci hashing of the mixed key; the top bits select the bucket.
    (order_id ^ (account as u64).rotate_left(32) ^ (account as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl OrderIndex {
    /// An index for up to `orders_max` entries.
    pub fn new(orders_max: u32) -> OrderIndex {
        let n = (orders_max as usize * 2).next_power_of_two().max(8);
        OrderIndex { buckets: vec![NIL; n], mask: n - 1, shift: 64 - n.trailing_zeros() }
    }

    /// Buckets allocated.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    #[inline]
    fn home(&self, account: AccountId, order_id: ClientOrderId) -> usize {
        (hash(account, order_id) >> self.shift) as usize
    }

    /// The slot of a live order.
    #[inline]
    pub fn find(&self, store: &OrderStore, account: AccountId, order_id: ClientOrderId) -> Option<u32> {
        let mut i = self.home(account, order_id);
        // Bounded: the table always has an empty bucket (load ≤ 0.5).
        for _ in 0..self.buckets.len() {
            let s = self.buckets[i];
            if s == NIL {
                return None;
            }
            let o = &store[s];
            if o.order_id == order_id && o.account == account {
                return Some(s);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Adds a key known to be absent.
    #[inline]
    pub fn insert(&mut self, account: AccountId, order_id: ClientOrderId, slot: u32) {
        let mut i = self.home(account, order_id);
        for _ in 0..self.buckets.len() {
            if self.buckets[i] == NIL {
                self.buckets[i] = slot;
                return;
            }
            i = (i + 1) & self.mask;
        }
        debug_assert!(false, "order index full");
    }

    /// Removes a present key (its slot must still hold the order's key).
    #[inline]
    pub fn remove(&mut self, store: &OrderStore, account: AccountId, order_id: ClientOrderId, slot: u32) {
        let mut i = self.home(account, order_id);
        let mut probes = 0;
        while self.buckets[i] != slot {
            debug_assert!(self.buckets[i] != NIL, "removing an absent key");
            i = (i + 1) & self.mask;
            probes += 1;
            if probes > self.buckets.len() {
                return;
            }
        }
        // Backward shift: pull later members of the cluster into the hole when their home
        // position allows it.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        for _ in 0..self.buckets.len() {
            let s = self.buckets[j];
            if s == NIL {
                break;
            }
            let o = &store[s];
            let home = self.home(o.account, o.order_id);
            // Distance from home to j and from home to the hole, cyclically.
            let dist_j = j.wrapping_sub(home) & self.mask;
            let dist_hole = hole.wrapping_sub(home) & self.mask;
            if dist_hole < dist_j {
                self.buckets[hole] = s;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.buckets[hole] = NIL;
    }
}
