//! TOML configuration file → [`EngineConfig`].
//!
//! Every key is documented in `tools/match.example.toml`. In short:
//!
//! ```toml
//! [capacities]            # optional; defaults are EngineConfig::single_default()'s
//! orders_max = 1048576
//! levels_max = 16384
//! accounts_max = 65536
//!
//! [stp]                   # optional
//! default = "none"        # none | cancel_taker | cancel_maker | cancel_both | decrement_and_cancel
//! accounts = [ { account = 7, mode = "cancel_taker" } ]
//!
//! [[instruments]]         # at least one
//! id = 1
//! symbol = "BTC-USD"
//! tick_size = 1
//! lot_size = 1
//! min_qty = 1
//! max_qty = 1000000
//! price_band_bps = 500    # optional
//! reference_price = 100000  # optional
//! ```
//!
//! Unknown keys are errors (a typo never silently falls back to a default). The result is checked
//! with [`EngineConfig::validate`].

use crate::config::{ConfigError, EngineConfig, InstrumentConfig};
use crate::types::*;
use serde::{Deserialize, Deserializer};
use std::fmt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    capacities: Capacities,
    #[serde(default)]
    stp: StpSection,
    instruments: Vec<InstrumentConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Capacities {
    orders_max: Option<u32>,
    levels_max: Option<u32>,
    accounts_max: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StpSection {
    #[serde(default, deserialize_with = "opt_stp")]
    default: Option<StpMode>,
    #[serde(default)]
    accounts: Vec<AccountStp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountStp {
    account: AccountId,
    #[serde(deserialize_with = "stp")]
    mode: StpMode,
}

fn stp_from_name<E: serde::de::Error>(s: &str) -> Result<StpMode, E> {
    StpMode::ALL.iter().copied().find(|m| m.name() == s).ok_or_else(|| {
        let all: Vec<&str> = StpMode::ALL.iter().map(|m| m.name()).collect();
        E::custom(format!("unknown stp mode {s:?}, expected one of {}", all.join(", ")))
    })
}

fn stp<'de, D: Deserializer<'de>>(d: D) -> Result<StpMode, D::Error> {
    let s = String::deserialize(d)?;
    stp_from_name(&s)
}

fn opt_stp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StpMode>, D::Error> {
    let s = String::deserialize(d)?;
    stp_from_name(&s).map(Some)
}

/// A configuration file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFileError {
    /// Not valid TOML, or a key is unknown, missing or of the wrong type (message from the TOML
    /// parser, with line and column).
    Syntax(String),
    /// Well-formed, but [`EngineConfig::validate`] refuses it.
    Invalid(ConfigError),
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigFileError::Syntax(m) => write!(f, "configuration file: {}", m.trim_end()),
            ConfigFileError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// Parses a TOML configuration and validates it.
pub fn parse_config(text: &str) -> Result<EngineConfig, ConfigFileError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| ConfigFileError::Syntax(e.to_string()))?;
    let defaults = EngineConfig::single_default();
    let cfg = EngineConfig {
        instruments: file.instruments,
        orders_max: file.capacities.orders_max.unwrap_or(defaults.orders_max),
        levels_max: file.capacities.levels_max.unwrap_or(defaults.levels_max),
        accounts_max: file.capacities.accounts_max.unwrap_or(defaults.accounts_max),
        default_stp: file.stp.default.unwrap_or(defaults.default_stp),
        account_stp: file.stp.accounts.into_iter().map(|a| (a.account, a.mode)).collect(),
    };
    let mut accounts: Vec<AccountId> = cfg.account_stp.iter().map(|a| a.0).collect();
    accounts.sort_unstable();
    if let Some(w) = accounts.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigFileError::Invalid(ConfigError(format!("account {} listed twice in [stp] accounts", w[0]))));
    }
    cfg.validate().map_err(ConfigFileError::Invalid)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[capacities]
orders_max = 1000
levels_max = 100
accounts_max = 10

[stp]
default = "cancel_taker"
accounts = [ { account = 7, mode = "decrement_and_cancel" }, { account = 8, mode = "none" } ]

[[instruments]]
id = 2
symbol = "ETH-USD"
tick_size = 5
lot_size = 10
min_qty = 10
max_qty = 1000
price_band_bps = 500
reference_price = 2000

[[instruments]]
id = 1
symbol = "BTC-USD"
tick_size = 1
lot_size = 1
min_qty = 1
max_qty = 1000000
"#;

    #[test]
    fn full_file() {
        let cfg = parse_config(FULL).unwrap();
        assert_eq!(cfg.orders_max, 1000);
        assert_eq!(cfg.levels_max, 100);
        assert_eq!(cfg.accounts_max, 10);
        assert_eq!(cfg.default_stp, StpMode::CancelTaker);
        assert_eq!(cfg.account_stp, vec![(7, StpMode::DecrementAndCancel), (8, StpMode::None)]);
        assert_eq!(cfg.instruments.len(), 2);
        let eth = &cfg.instruments[0];
        assert_eq!(
            eth,
            &InstrumentConfig {
                id: 2,
                symbol: "ETH-USD".into(),
                tick_size: 5,
                lot_size: 10,
                min_qty: 10,
                max_qty: 1000,
                price_band_bps: Some(500),
                reference_price: Some(2000),
            }
        );
        assert_eq!(cfg.instruments[1].price_band_bps, None);
        assert_eq!(cfg.instruments[1].reference_price, None);
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let cfg = parse_config(
            "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\nmin_qty = 1\nmax_qty = 10\n",
        )
        .unwrap();
        let d = EngineConfig::single_default();
        assert_eq!((cfg.orders_max, cfg.levels_max, cfg.accounts_max), (d.orders_max, d.levels_max, d.accounts_max));
        assert_eq!(cfg.default_stp, StpMode::None);
        assert!(cfg.account_stp.is_empty());
    }

    fn err(text: &str) -> String {
        parse_config(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_are_clear() {
        let inst = "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick_size = 1\nlot_size = 1\nmin_qty = 1\nmax_qty = 10\n";
        assert!(err("").contains("instruments"), "{}", err(""));
        assert!(err("instruments = []").contains("no instruments"));
        let e = err(&format!("{inst}tick = 3\n"));
        assert!(e.contains("tick"), "{e}");
        let e = err(&format!("[stp]\ndefault = \"sometimes\"\n{inst}"));
        assert!(e.contains("unknown stp mode \"sometimes\"") && e.contains("line"), "{e}");
        let e = err(&inst.replace("tick_size = 1", "tick_size = 0"));
        assert!(e.contains("tick_size must be > 0"), "{e}");
        let e = err(&inst.replace("max_qty = 10\n", ""));
        assert!(e.contains("max_qty"), "{e}");
        let e = err(&inst.replace("lot_size = 1", "lot_size = -1"));
        assert!(e.contains("lot_size") || e.contains("invalid value"), "{e}");
        let e = err(&format!("{inst}{inst}"));
        assert!(e.contains("duplicate instrument id"), "{e}");
        let e = err(&format!("[stp]\naccounts = [{{account = 1, mode = \"none\"}}, {{account = 1, mode = \"none\"}}]\n{inst}"));
        assert!(e.contains("account 1 listed twice"), "{e}");
        let e = err("[capacities]\norders = 5\n");
        assert!(e.contains("orders"), "{e}");
    }
}
