//! Scalar types and the enums shared by commands, events and books.
//!
//! Every enum here has a fixed `u8` wire value (`as u8` / `from_u8`): these values appear in the
//! journal, in the rings and on the public wire, so they never change once released.

/// Price in the instrument's integer units (ticks are multiples of `tick_size`).
pub type Price = i64;
/// Quantity in the instrument's integer units (multiples of `lot_size`).
pub type Qty = u64;
/// Trading account.
pub type AccountId = u32;
/// Instrument id as configured (0 is reserved: "all instruments" in a mass cancel).
pub type InstrumentId = u32;
/// The client's order id, unique per account among its live orders.
pub type ClientOrderId = u64;
/// A position in a sequence (commands, events). Sequences start at 1; 0 means "none".
pub type Seq = u64;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr),+ $(,)? }) => {
        $(#[$m])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v = $n),+ }
        impl $name {
            /// Every variant, in wire-value order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// Decodes a wire value; `None` for a value no variant has.
            #[inline]
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v { $($n => Some($name::$v),)+ _ => None }
            }
            /// The variant's name in snake_case, as used in CSV files and logs.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => wire_enum!(@snake $v),)+ }
            }
        }
    };
    (@snake $v:ident) => { $crate::types::snake_names::$v };
}
pub(crate) use wire_enum;

/// snake_case names of every variant used by `wire_enum!` (kept in one place so CSV and logs agree).
#[allow(non_upper_case_globals, missing_docs)]
pub mod snake_names {
    pub const Buy: &str = "buy";
    pub const Sell: &str = "sell";
    pub const LimitGtc: &str = "limit_gtc";
    pub const LimitIoc: &str = "limit_ioc";
    pub const LimitFok: &str = "limit_fok";
    pub const PostOnly: &str = "post_only";
    pub const Market: &str = "market";
    pub const None: &str = "none";
    pub const CancelTaker: &str = "cancel_taker";
    pub const CancelMaker: &str = "cancel_maker";
    pub const CancelBoth: &str = "cancel_both";
    pub const DecrementAndCancel: &str = "decrement_and_cancel";
    pub const UnknownInstrument: &str = "unknown_instrument";
    pub const PriceOffTick: &str = "price_off_tick";
    pub const QuantityOffLot: &str = "quantity_off_lot";
    pub const QuantityOutOfRange: &str = "quantity_out_of_range";
    pub const OutsidePriceBand: &str = "outside_price_band";
    pub const PostOnlyWouldCross: &str = "post_only_would_cross";
    pub const FokNotFillable: &str = "fok_not_fillable";
    pub const UnknownOrder: &str = "unknown_order";
    pub const DuplicateOrderId: &str = "duplicate_order_id";
    pub const NotOwner: &str = "not_owner";
    pub const CapacityExhausted: &str = "capacity_exhausted";
    pub const InstrumentHalted: &str = "instrument_halted";
    pub const InvalidSide: &str = "invalid_side";
    pub const InvalidOrderType: &str = "invalid_order_type";
    pub const InvalidPrice: &str = "invalid_price";
    pub const InvalidStp: &str = "invalid_stp";
    pub const MalformedCommand: &str = "malformed_command";
    pub const Throttled: &str = "throttled";
    pub const NotAuthorised: &str = "not_authorised";
    pub const UserRequested: &str = "user_requested";
    pub const Unfilled: &str = "unfilled";
    pub const SelfTradePrevention: &str = "self_trade_prevention";
    pub const MassCancel: &str = "mass_cancel";
    pub const CancelOnDisconnect: &str = "cancel_on_disconnect";
    pub const Admin: &str = "admin";
    pub const New: &str = "new";
    pub const Cancel: &str = "cancel";
    pub const Replace: &str = "replace";
    pub const Halt: &str = "halt";
    pub const Resume: &str = "resume";
    pub const Accepted: &str = "accepted";
    pub const Rejected: &str = "rejected";
    pub const Fill: &str = "fill";
    pub const Cancelled: &str = "cancelled";
    pub const Replaced: &str = "replaced";
    pub const Decremented: &str = "decremented";
    pub const Trade: &str = "trade";
    pub const LevelDelta: &str = "level_delta";
    pub const InstrumentStatus: &str = "instrument_status";
    pub const MassCancelled: &str = "mass_cancelled";
}

wire_enum! {
    /// Order side.
    Side { Buy = 1, Sell = 2 }
}

impl Side {
    /// The other side.
    #[inline]
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

wire_enum! {
    /// Order type. See docs/matching.md for the exact semantics of each.
    OrderType {
        /// Limit, good till cancelled: trades what crosses, rests the remainder.
        LimitGtc = 1,
        /// Limit, immediate or cancel: trades what crosses, cancels the remainder.
        LimitIoc = 2,
        /// Limit, fill or kill: trades its whole quantity at once or is rejected with no effect.
        LimitFok = 3,
        /// Rests only: rejected if it would cross on arrival.
        PostOnly = 4,
        /// Sweeps up to an optional protection price; the remainder is cancelled, never rests.
        Market = 5,
    }
}

impl OrderType {
    /// Whether an order of this type may rest in the book.
    #[inline]
    pub const fn can_rest(self) -> bool {
        matches!(self, OrderType::LimitGtc | OrderType::PostOnly)
    }
}

wire_enum! {
    /// Self-trade prevention: what happens when an incoming order (taker) would trade with a
    /// resting order (maker) of the same account. The taker's mode decides.
    StpMode {
        /// Self trades are allowed.
        None = 1,
        /// The taker's remaining quantity is cancelled; the maker stays.
        CancelTaker = 2,
        /// The maker is cancelled and matching goes on.
        CancelMaker = 3,
        /// Both are cancelled.
        CancelBoth = 4,
        /// Both are reduced by the smaller open quantity; whichever reaches zero is cancelled.
        DecrementAndCancel = 5,
    }
}

wire_enum! {
    /// Why a command was rejected. One enum for the core and the gateway, documented in
    /// docs/matching.md; a rejected command has no other effect.
    RejectReason {
        UnknownInstrument = 1,
        PriceOffTick = 2,
        QuantityOffLot = 3,
        QuantityOutOfRange = 4,
        OutsidePriceBand = 5,
        PostOnlyWouldCross = 6,
        FokNotFillable = 7,
        UnknownOrder = 8,
        DuplicateOrderId = 9,
        NotOwner = 10,
        CapacityExhausted = 11,
        InstrumentHalted = 12,
        InvalidSide = 13,
        InvalidOrderType = 14,
        InvalidPrice = 15,
        InvalidStp = 16,
        MalformedCommand = 17,
        Throttled = 18,
        NotAuthorised = 19,
    }
}

wire_enum! {
    /// Why an order (or the rest of it) was cancelled.
    CancelReason {
        /// A Cancel command.
        UserRequested = 1,
        /// The part of an IOC or market order that found nothing to trade with.
        Unfilled = 2,
        /// Self-trade prevention.
        SelfTradePrevention = 3,
        /// A MassCancel command from the account.
        MassCancel = 4,
        /// A MassCancel issued by the gateway when a cancel-on-disconnect session dropped.
        CancelOnDisconnect = 5,
        /// A MassCancel issued by an administrator.
        Admin = 6,
    }
}
