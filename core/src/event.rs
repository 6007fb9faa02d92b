//! Outbound events: a fixed 64-byte, plain-old-data record, and the sink the engine writes to.
//!
//! One record type carries execution reports and market data, so one ring (and one shared-memory
//! layout) serves the gateway and the feed. Fields are generic integers whose meaning depends on
//! `kind`; use [`Event::view`] for a typed reading. The table in docs/matching.md lists, for each
//! kind, what every field holds.

use crate::types::*;

wire_enum! {
    /// What an event reports.
    EventKind {
        /// A new order passed validation (sent before any fill it makes).
        Accepted = 1,
        /// A command was rejected; it had no other effect.
        Rejected = 2,
        /// One execution between a taker and a maker. `trade_id` is this event's `seq`.
        Fill = 3,
        /// An order (or the remainder of an incoming one) was cancelled.
        Cancelled = 4,
        /// A Replace took effect.
        Replaced = 5,
        /// Self-trade prevention (decrement-and-cancel) reduced an order that stays open.
        Decremented = 6,
        /// Public trade print (market data), right after its Fill.
        Trade = 7,
        /// A price level's new total (market data). `qty` 0 removes the level.
        LevelDelta = 8,
        /// An instrument was halted or resumed.
        InstrumentStatus = 9,
        /// A MassCancel finished; `qty` is the number of orders it cancelled (may be 0).
        MassCancelled = 10,
    }
}

/// `flags` bit: the last event caused by its command.
pub const EV_LAST_IN_COMMAND: u8 = 1;
/// `flags` bit (Fill): the taker has no open quantity left.
pub const EV_TAKER_DONE: u8 = 2;
/// `flags` bit (Fill): the maker was fully filled and left the book.
pub const EV_MAKER_DONE: u8 = 4;
/// `flags` bit (Replaced): the order kept its time priority.
pub const EV_PRIORITY_KEPT: u8 = 8;
/// `flags` bit (InstrumentStatus): the instrument is halted.
pub const EV_HALTED: u8 = 16;

/// One outbound event. Layout (offsets in bytes): seq 0, cmd_seq 8, kind 16, side 17, reason 18,
/// flags 19, instrument 20, account 24, aux32 28, order_id 32, aux64 40, price 48, qty 56.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Event {
    /// Engine event sequence: gapless from 1 across all instruments.
    pub seq: Seq,
    /// Sequence of the command that caused the event.
    pub cmd_seq: Seq,
    /// [`EventKind`] wire value.
    pub kind: u8,
    /// [`Side`]: the order's side; a Fill's or Trade's aggressor side; a LevelDelta's side.
    pub side: u8,
    /// [`RejectReason`] (Rejected) or [`CancelReason`] (Cancelled, Decremented) wire value.
    pub reason: u8,
    /// `EV_*` bits.
    pub flags: u8,
    /// Instrument id.
    pub instrument: InstrumentId,
    /// Order owner (taker's for a Fill); 0 for market data.
    pub account: AccountId,
    /// Fill: maker's account. LevelDelta: orders at the level. Accepted: order type.
    /// Rejected: command kind.
    pub aux32: u32,
    /// Client order id (taker's for a Fill). Trade: trade id.
    pub order_id: ClientOrderId,
    /// Fill: maker's client order id. Trade, LevelDelta: the command's `ts_ns`.
    pub aux64: u64,
    /// Price (Fill/Trade: execution price, always the maker's).
    pub price: Price,
    /// Accepted/Replaced/Decremented: open quantity. Fill/Trade: executed quantity.
    /// Cancelled: quantity removed. LevelDelta: new level total.
    pub qty: Qty,
}

const _: () = assert!(core::mem::size_of::<Event>() == 64);

// SAFETY: Event is repr(C), integer fields only, no padding (offsets in the type's doc): any bit
// pattern is a valid Event.
unsafe impl crate::ring::Pod for Event {}

/// Typed reading of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventView {
    /// See [`EventKind::Accepted`].
    Accepted { account: AccountId, order_id: ClientOrderId, side: Side, order_type: OrderType, price: Price, qty: Qty },
    /// See [`EventKind::Rejected`].
    Rejected { account: AccountId, order_id: ClientOrderId, reason: RejectReason },
    /// See [`EventKind::Fill`].
    Fill {
        trade_id: u64,
        taker_account: AccountId,
        taker_order_id: ClientOrderId,
        maker_account: AccountId,
        maker_order_id: ClientOrderId,
        aggressor: Side,
        price: Price,
        qty: Qty,
        taker_done: bool,
        maker_done: bool,
    },
    /// See [`EventKind::Cancelled`].
    Cancelled { account: AccountId, order_id: ClientOrderId, side: Side, price: Price, qty: Qty, reason: CancelReason },
    /// See [`EventKind::Replaced`].
    Replaced { account: AccountId, order_id: ClientOrderId, side: Side, price: Price, qty: Qty, priority_kept: bool },
    /// See [`EventKind::Decremented`].
    Decremented { account: AccountId, order_id: ClientOrderId, side: Side, price: Price, qty: Qty },
    /// See [`EventKind::Trade`].
    Trade { trade_id: u64, aggressor: Side, price: Price, qty: Qty, ts_ns: u64 },
    /// See [`EventKind::LevelDelta`].
    LevelDelta { side: Side, price: Price, qty: Qty, orders: u32, ts_ns: u64 },
    /// See [`EventKind::InstrumentStatus`].
    InstrumentStatus { halted: bool },
    /// See [`EventKind::MassCancelled`]. `instrument` 0 = all.
    MassCancelled { account: AccountId, reason: CancelReason, orders: u64 },
    /// A record whose kind or enum fields do not decode (e.g. read from a foreign file).
    Invalid,
}

impl Event {
    /// The event's kind, if valid.
    #[inline]
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }

    /// Whether this is the last event of its command.
    #[inline]
    pub fn is_last_in_command(&self) -> bool {
        self.flags & EV_LAST_IN_COMMAND != 0
    }

    /// Typed reading; `Invalid` for a record that does not decode.
    pub fn view(&self) -> EventView {
        self.try_view().unwrap_or(EventView::Invalid)
    }

    fn try_view(&self) -> Option<EventView> {
        let side = || Side::from_u8(self.side);
        Some(match self.kind()? {
            EventKind::Accepted => EventView::Accepted {
                account: self.account,
                order_id: self.order_id,
                side: side()?,
                order_type: OrderType::from_u8(u8::try_from(self.aux32).ok()?)?,
                price: self.price,
                qty: self.qty,
            },
            EventKind::Rejected => EventView::Rejected {
                account: self.account,
                order_id: self.order_id,
                reason: RejectReason::from_u8(self.reason)?,
            },
            EventKind::Fill => EventView::Fill {
                trade_id: self.seq,
                taker_account: self.account,
                taker_order_id: self.order_id,
                maker_account: self.aux32,
                maker_order_id: self.aux64,
                aggressor: side()?,
                price: self.price,
                qty: self.qty,
                taker_done: self.flags & EV_TAKER_DONE != 0,
                maker_done: self.flags & EV_MAKER_DONE != 0,
            },
            EventKind::Cancelled => EventView::Cancelled {
                account: self.account,
                order_id: self.order_id,
                side: side()?,
                price: self.price,
                qty: self.qty,
                reason: CancelReason::from_u8(self.reason)?,
            },
            EventKind::Replaced => EventView::Replaced {
                account: self.account,
                order_id: self.order_id,
                side: side()?,
                price: self.price,
                qty: self.qty,
                priority_kept: self.flags & EV_PRIORITY_KEPT != 0,
            },
            EventKind::Decremented => EventView::Decremented {
                account: self.account,
                order_id: self.order_id,
                side: side()?,
                price: self.price,
                qty: self.qty,
            },
            EventKind::Trade => EventView::Trade {
                trade_id: self.order_id,
                aggressor: side()?,
                price: self.price,
                qty: self.qty,
                ts_ns: self.aux64,
            },
            EventKind::LevelDelta => EventView::LevelDelta {
                side: side()?,
                price: self.price,
                qty: self.qty,
                orders: self.aux32,
                ts_ns: self.aux64,
            },
            EventKind::InstrumentStatus => EventView::InstrumentStatus { halted: self.flags & EV_HALTED != 0 },
            EventKind::MassCancelled => EventView::MassCancelled {
                account: self.account,
                reason: CancelReason::from_u8(self.reason)?,
                orders: self.qty,
            },
        })
    }
}

/// Where the engine writes events. Implementations must not fail: the engine has already changed
/// its state when it emits, so a sink that cannot keep an event must block or count the loss.
pub trait EventSink {
    /// Takes one event.
    fn push(&mut self, ev: &Event);
}

impl EventSink for Vec<Event> {
    #[inline]
    fn push(&mut self, ev: &Event) {
        Vec::push(self, *ev);
    }
}

/// A sink that only counts (benchmarks).
#[derive(Default, Debug, Clone, Copy)]
pub struct CountingSink {
    /// Events seen.
    pub events: u64,
    /// Fills seen.
    pub fills: u64,
}

impl EventSink for CountingSink {
    #[inline]
    fn push(&mut self, ev: &Event) {
        self.events += 1;
        self.fills += (ev.kind == EventKind::Fill as u8) as u64;
    }
}
