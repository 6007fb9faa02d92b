//! Order storage: a slab of fixed 56-byte order slots, allocated once, with a free list.

use crate::types::*;

/// "No slot" marker for every u32 link.
pub const NIL: u32 = u32::MAX;

/// `Order::flags` layout: bit 0 side (0 buy, 1 sell), bit 1 post-only, bits 2..=4 STP mode.
const SELL_BIT: u8 = 1;
const POST_ONLY_BIT: u8 = 2;
const STP_SHIFT: u8 = 2;

/// A resting order. 56 bytes; links are slot indices (NIL = none).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Order {
    /// Client order id.
    pub order_id: ClientOrderId,
    /// Limit price.
    pub price: Price,
    /// Open quantity.
    pub qty: Qty,
    /// Owner.
    pub account: AccountId,
    /// Previous/next order in the price level's FIFO (`next` also links the free list).
    pub prev: u32,
    /// See `prev`.
    pub next: u32,
    /// Previous/next order of the same account, in order of first acceptance.
    pub acct_prev: u32,
    /// See `acct_prev`.
    pub acct_next: u32,
    /// Index of the owner's entry in the account table.
    pub acct_idx: u32,
    /// Index of the price level in its book's level slab.
    pub level: u32,
    /// Index of the book (instrument) in the engine.
    pub book: u16,
    /// Side, post-only flag, STP mode (see the constants above).
    pub flags: u8,
    _pad: u8,
}

const _: () = assert!(core::mem::size_of::<Order>() == 56);

impl Order {
    const EMPTY: Order = Order {
        order_id: 0,
        price: 0,
        qty: 0,
        account: 0,
        prev: NIL,
        next: NIL,
        acct_prev: NIL,
        acct_next: NIL,
        acct_idx: NIL,
        level: NIL,
        book: 0,
        flags: 0,
        _pad: 0,
    };

    /// Packs side, post-only and STP mode into `flags`.
    #[inline]
    pub fn pack_flags(side: Side, post_only: bool, stp: StpMode) -> u8 {
        (if side == Side::Sell { SELL_BIT } else { 0 })
            | (if post_only { POST_ONLY_BIT } else { 0 })
            | ((stp as u8) << STP_SHIFT)
    }

    /// Side.
    #[inline]
    pub fn side(&self) -> Side {
        if self.flags & SELL_BIT != 0 {
            Side::Sell
        } else {
            Side::Buy
        }
    }

    /// Whether the order is post-only (else limit GTC).
    #[inline]
    pub fn post_only(&self) -> bool {
        self.flags & POST_ONLY_BIT != 0
    }

    /// Order type as it rests.
    #[inline]
    pub fn order_type(&self) -> OrderType {
        if self.post_only() {
            OrderType::PostOnly
        } else {
            OrderType::LimitGtc
        }
    }

    /// Effective self-trade prevention mode.
    #[inline]
    pub fn stp(&self) -> StpMode {
        StpMode::from_u8(self.flags >> STP_SHIFT).unwrap_or(StpMode::None)
    }
}

/// The slab of order slots.
pub struct OrderStore {
    slots: Vec<Order>,
    free_head: u32,
    live: u32,
}

impl OrderStore {
    /// Allocates `capacity` slots now.
    pub fn new(capacity: u32) -> OrderStore {
        let mut slots = vec![Order::EMPTY; capacity as usize];
        for (i, s) in slots.iter_mut().enumerate() {
            s.next = if i + 1 < capacity as usize { i as u32 + 1 } else { NIL };
        }
        OrderStore { slots, free_head: if capacity > 0 { 0 } else { NIL }, live: 0 }
    }

    /// Whether no slot is free.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_head == NIL
    }

    /// Live orders.
    #[inline]
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Total slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Takes a free slot and fills it. The caller checked `!is_full()`.
    #[inline]
    pub fn alloc(&mut self, order: Order) -> u32 {
        let i = self.free_head;
        debug_assert!(i != NIL, "alloc on a full order store");
        self.free_head = self.slots[i as usize].next;
        self.slots[i as usize] = order;
        self.live += 1;
        i
    }

    /// Returns a slot to the free list.
    #[inline]
    pub fn free(&mut self, i: u32) {
        debug_assert!(self.live > 0);
        let s = &mut self.slots[i as usize];
        s.qty = 0;
        s.level = NIL;
        s.next = self.free_head;
        self.free_head = i;
        self.live -= 1;
    }

    /// A new order value for `alloc`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn new_order(
        order_id: ClientOrderId,
        account: AccountId,
        acct_idx: u32,
        book: u16,
        side: Side,
        post_only: bool,
        stp: StpMode,
        price: Price,
        qty: Qty,
    ) -> Order {
        Order { order_id, account, acct_idx, book, price, qty, flags: Order::pack_flags(side, post_only, stp), ..Order::EMPTY }
    }
}

impl core::ops::Index<u32> for OrderStore {
    type Output = Order;
    #[inline]
    fn index(&self, i: u32) -> &Order {
        &self.slots[i as usize]
    }
}

impl core::ops::IndexMut<u32> for OrderStore {
    #[inline]
    fn index_mut(&mut self, i: u32) -> &mut Order {
        &mut self.slots[i as usize]
    }
}
