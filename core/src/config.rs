//! Instrument and engine configuration. Capacities fixed here are allocated once, at start-up.

use crate::types::*;
use std::fmt;

/// One tradable instrument. Also the `[[instruments]]` table of every TOML configuration
/// (`tickwire-match --config`, `tickwire serve --config`): the field names are the keys,
/// `price_band_bps` and `reference_price` may be left out, any other key is an error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// Instrument id, 1..=u32::MAX (0 is reserved), unique.
    pub id: InstrumentId,
    /// Display symbol, e.g. "BTC-USD".
    pub symbol: String,
    /// Prices must be multiples of this (> 0).
    pub tick_size: Price,
    /// Quantities must be multiples of this (> 0).
    pub lot_size: Qty,
    /// Smallest order quantity accepted (>= lot_size).
    pub min_qty: Qty,
    /// Largest order quantity accepted.
    pub max_qty: Qty,
    /// Optional price band in basis points around the reference price (the last trade, or
    /// `reference_price` before the first trade). Limit prices outside it are rejected, and a
    /// market order without protection price is protected at the band's edge.
    pub price_band_bps: Option<u32>,
    /// Reference price before the first trade (used only by the price band).
    pub reference_price: Option<Price>,
}

impl InstrumentConfig {
    /// An instrument with tick 1, lot 1, quantities 1..=10^12 and no band.
    pub fn simple(id: InstrumentId, symbol: &str) -> InstrumentConfig {
        InstrumentConfig {
            id,
            symbol: symbol.to_string(),
            tick_size: 1,
            lot_size: 1,
            min_qty: 1,
            max_qty: 1_000_000_000_000,
            price_band_bps: None,
            reference_price: None,
        }
    }
}

/// The engine's configuration: instruments and every capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Instruments, any order (books are kept in ascending id order).
    pub instruments: Vec<InstrumentConfig>,
    /// Resting orders across all books.
    pub orders_max: u32,
    /// Price levels per side per book.
    pub levels_max: u32,
    /// Distinct accounts that may hold resting orders.
    pub accounts_max: u32,
    /// Self-trade prevention mode of an order that names none and whose account has no default.
    pub default_stp: StpMode,
    /// Per-account default self-trade prevention mode.
    pub account_stp: Vec<(AccountId, StpMode)>,
}

impl EngineConfig {
    /// The embedded default of `tickwire-match`: instrument 1, tick 1, lot 1, no band, no STP.
    pub fn single_default() -> EngineConfig {
        EngineConfig {
            instruments: vec![InstrumentConfig::simple(1, "DEFAULT")],
            orders_max: 1 << 20,
            levels_max: 1 << 14,
            accounts_max: 1 << 16,
            default_stp: StpMode::None,
            account_stp: Vec::new(),
        }
    }

    /// Checks every field; the engine refuses to start on any error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.instruments.is_empty() {
            return Err(ConfigError("no instruments configured".into()));
        }
        if self.instruments.len() > u16::MAX as usize {
            return Err(ConfigError("more than 65535 instruments".into()));
        }
        if self.orders_max == 0 || self.orders_max >= u32::MAX / 4 {
            return Err(ConfigError(format!("orders_max {} out of range 1..{}", self.orders_max, u32::MAX / 4)));
        }
        if self.levels_max == 0 || self.levels_max >= u32::MAX / 4 {
            return Err(ConfigError(format!("levels_max {} out of range", self.levels_max)));
        }
        if self.accounts_max == 0 || self.accounts_max >= u32::MAX / 4 {
            return Err(ConfigError(format!("accounts_max {} out of range", self.accounts_max)));
        }
        let mut ids: Vec<InstrumentId> = self.instruments.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError("duplicate instrument id".into()));
        }
        for i in &self.instruments {
            let bad = |what: &str| Err(ConfigError(format!("instrument {} ({}): {what}", i.id, i.symbol)));
            if i.id == 0 {
                return bad("id 0 is reserved");
            }
            if i.tick_size <= 0 {
                return bad("tick_size must be > 0");
            }
            if i.lot_size == 0 {
                return bad("lot_size must be > 0");
            }
            if i.min_qty < i.lot_size || i.max_qty < i.min_qty {
                return bad("need lot_size <= min_qty <= max_qty");
            }
            if i.price_band_bps == Some(0) {
                return bad("price_band_bps must be > 0 when set");
            }
            if i.max_qty.checked_mul(self.orders_max as u64).is_none() {
                return bad("max_qty * orders_max overflows a level total (u64)");
            }
            if matches!(i.reference_price, Some(p) if p <= 0) {
                return bad("reference_price must be > 0");
            }
        }
        if self.account_stp.len() > self.accounts_max as usize {
            return Err(ConfigError("more account_stp entries than accounts_max".into()));
        }
        Ok(())
    }
}

/// A configuration the engine cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}
