//! The matching engine: owns every order book, applies commands, emits events. Sans-IO.

use crate::command::Command;
use crate::config::{ConfigError, EngineConfig};
use crate::event::EventSink;
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

/// The matching engine. See docs/matching.md for the exact semantics.
pub struct Engine {
    _cfg: EngineConfig,
}

impl Engine {
    /// Builds an engine, allocating every capacity of `cfg` now.
    pub fn new(cfg: &EngineConfig) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        Ok(Engine { _cfg: cfg.clone() })
    }

    /// Applies one command, writing its events (at least one) to `out`.
    pub fn handle<S: EventSink + ?Sized>(&mut self, _cmd: &Command, _out: &mut S) {}

    /// Stable hash of the whole matching state (definition in docs/matching.md).
    pub fn state_hash(&self) -> u64 {
        0
    }

    /// Writes up to `levels_max` levels of one side, best first, into `out` (cleared first).
    /// Returns false for an unknown instrument.
    pub fn depth(&self, _instrument: InstrumentId, _side: Side, _levels_max: usize, out: &mut Vec<Level>) -> bool {
        out.clear();
        false
    }

    /// Every resting order of one side in priority order (tests, snapshots). False if unknown.
    pub fn book_orders(&self, _instrument: InstrumentId, _side: Side, out: &mut Vec<RestingOrder>) -> bool {
        out.clear();
        false
    }

    /// A live order by id.
    pub fn order(&self, _account: AccountId, _order_id: ClientOrderId) -> Option<RestingOrder> {
        None
    }

    /// Number of resting orders.
    pub fn resting_orders(&self) -> usize {
        0
    }

    /// Sequence the next event will get.
    pub fn next_event_seq(&self) -> Seq {
        1
    }

    /// Bytes allocated at start-up for orders, levels and id maps (all capacities).
    pub fn memory_bytes(&self) -> usize {
        0
    }

    /// Preallocated bytes per resting-order capacity: order slot plus its share of the id index.
    pub fn bytes_per_order(&self) -> usize {
        0
    }

    /// Sequence of the last command applied (0 before the first).
    pub fn last_cmd_seq(&self) -> Seq {
        0
    }
}
