//! The `tickwire serve` configuration: a TOML file (`tickwire.example.toml` documents every key)
//! or the embedded demo default ([`ServerConfig::demo`]).
//!
//! Unknown keys are errors, so a typo never silently falls back to a default.

use crate::session::{ApiKey, SessionConfig};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tickwire_core::ring::WaitStrategyKind;
use tickwire_core::{EngineConfig, InstrumentConfig, StpMode};
use tickwire_feed::{ws, BackendKind, HubConfig, ShardConfig, SlowPolicy};
use tickwire_journal::Durability;
use tickwire_protocol::Role;

/// Id and secret of the demo trade key of the embedded default (account 1). DEMO ONLY.
pub const DEMO_TRADE_KEY: (u64, &str) = (1, "tickwire-demo-trade-secret");
/// Id and secret of the demo read (drop copy) key of the embedded default (accounts 1, 2). DEMO ONLY.
pub const DEMO_READ_KEY: (u64, &str) = (2, "tickwire-demo-read-secret");
/// Id and secret of the second demo trade key (account 2), a counterparty. DEMO ONLY.
pub const DEMO_TRADE_KEY_2: (u64, &str) = (3, "tickwire-demo-trade2-secret");

/// Limits of the network edge (per connection and per source address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Open connections at most (more are accepted and closed at once).
    pub max_connections: usize,
    /// New connections accepted per source IP address per second; more are closed at once.
    pub max_conn_per_ip_per_sec: u32,
    /// Bytes queued for one client that it has not read yet; beyond it the client is a slow
    /// consumer and is disconnected (logged with that reason).
    pub max_outbound_bytes: usize,
    /// Bytes read from one connection per readiness turn (fairness between connections).
    pub read_budget: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// A client with unsent output that reads nothing for this long is disconnected as a slow
    /// consumer.
    pub slow_consumer_ms: u64,
    /// `SO_SNDBUF` of accepted connections (0: the OS default).
    pub socket_send_buffer: usize,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_connections: 4096,
            max_conn_per_ip_per_sec: 50,
            max_outbound_bytes: 4 << 20,
            read_budget: 64 << 10,
            backlog: 1024,
            slow_consumer_ms: 5_000,
            socket_send_buffer: 0,
        }
    }
}

/// How the server's threads wait for one another (`[server] wait`): CPU traded for latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// The default: every hand-off sleeps when there is nothing to do, parked on a doorbell
    /// that the thread handing it work rings (a system call only when it is parked): the event
    /// loop in `epoll_wait` while a command is in flight, the engine after its backoff's spins
    /// and yields (parks up to 1 ms), the journaler likewise. No CPU when idle; each hand-off to
    /// a sleeping thread costs a wake-up (tens of µs on a VM whose other vCPU is halted).
    Backoff,
    /// Low latency: bounded spins (with a yield every few µs) before those parks (event loop
    /// while commands are in flight, journaler after each batch), and the engine waits
    /// `yielding` (spin, then `sched_yield`, never sleeps) by default. Costs CPU: the engine
    /// thread keeps one core busy even when idle (unless `[engine] wait = "backoff"`).
    Spin,
}

impl WaitMode {
    /// `backoff` or `spin`.
    pub fn name(self) -> &'static str {
        match self {
            WaitMode::Backoff => "backoff",
            WaitMode::Spin => "spin",
        }
    }

    /// Parses `backoff` or `spin`.
    pub fn parse(s: &str) -> Option<WaitMode> {
        match s {
            "backoff" => Some(WaitMode::Backoff),
            "spin" => Some(WaitMode::Spin),
            _ => None,
        }
    }
}

/// The wait profile of the server's threads (`[server] wait`, `spin_us`, `[engine] cpu`,
/// `[engine] wait`; `tickwire serve --latency-profile low|default`). See `docs/server.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitSettings {
    /// Backoff (default) or spin.
    pub mode: WaitMode,
    /// With `spin`: how long the event loop spins on the event consumer while commands are in
    /// flight before it yields and then sleeps, and how long the journaler spins after a batch.
    pub spin: Duration,
    /// CPU the engine thread is pinned to (`core_affinity` id); none by default.
    pub engine_cpu: Option<usize>,
    /// The engine thread's wait strategy; `None`: `backoff` with the `backoff` mode,
    /// `yielding` with `spin`.
    pub engine_wait: Option<WaitStrategyKind>,
}

/// Default `spin_us`.
pub const DEFAULT_SPIN_US: u64 = 200;
/// Largest `spin_us` accepted (every spin is bounded).
pub const MAX_SPIN_US: u64 = 100_000;

impl Default for WaitSettings {
    fn default() -> Self {
        WaitSettings {
            mode: WaitMode::Backoff,
            spin: Duration::from_micros(DEFAULT_SPIN_US),
            engine_cpu: None,
            engine_wait: None,
        }
    }
}

impl WaitSettings {
    /// The engine thread's wait strategy (explicit, or from the mode).
    pub fn engine_wait(&self) -> WaitStrategyKind {
        self.engine_wait.unwrap_or(match self.mode {
            WaitMode::Backoff => WaitStrategyKind::backoff(),
            // Not BusySpin: on a machine with few cores a thread that never yields delays the
            // others on the acknowledgement path (measured: docs/benchmarks.md).
            WaitMode::Spin => WaitStrategyKind::yielding(),
        })
    }

    /// The event loop's spin budget while commands are in flight (zero with `backoff`).
    pub fn loop_spin(&self) -> Duration {
        match self.mode {
            WaitMode::Backoff => Duration::ZERO,
            WaitMode::Spin => self.spin,
        }
    }

    /// The journaler's idle spin after a batch (zero with `backoff`).
    pub fn journal_spin(&self) -> Duration {
        self.loop_spin()
    }

    /// Applies `--latency-profile`: `low` (the `spin` mode) or `default` (`backoff`).
    pub fn apply_profile(&mut self, profile: &str) -> Result<(), ServerConfigError> {
        self.mode = match profile {
            "low" => WaitMode::Spin,
            "default" => WaitMode::Backoff,
            p => return Err(ServerConfigError(format!("unknown latency profile {p:?} (low, default)"))),
        };
        Ok(())
    }

    /// One line for the start banner.
    pub fn describe(&self) -> String {
        let mut s = format!("wait {}", self.mode.name());
        if self.mode == WaitMode::Spin {
            s.push_str(&format!(" (spin {} us)", self.spin.as_micros()));
        }
        s.push_str(&format!(", engine wait {}", self.engine_wait().name()));
        if let Some(c) = self.engine_cpu {
            s.push_str(&format!(" pinned to cpu {c}"));
        }
        s
    }
}

/// Everything `tickwire serve` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Order-entry listen address.
    pub listen: SocketAddr,
    /// Data directory: the journal lives in `<data_dir>/journal`, the gateway reject log in
    /// `<data_dir>/gateway-rejects.log`.
    pub data_dir: PathBuf,
    /// Engine configuration (instruments, capacities, STP).
    pub engine: EngineConfig,
    /// Sessions: keys and session limits.
    pub session: SessionConfig,
    /// Execution reports kept in memory per key for re-logon replay.
    pub replay_per_key: usize,
    /// Network limits.
    pub net: NetLimits,
    /// Journal durability mode.
    pub durability: Durability,
    /// Journal segment size in bytes.
    pub segment_bytes: u64,
    /// Market-data feed; `None` = no feed.
    pub feed: Option<FeedSettings>,
    /// Whether this is the embedded demo default (the banner says so).
    pub is_demo: bool,
    /// Recovery cuts the journal at a damaged record before its tail (losing everything after
    /// it) instead of refusing to start. Only from the command line (`--truncate-at-corruption`):
    /// an operator's explicit decision after reading the refusal, never a configured default.
    pub truncate_at_corruption: bool,
    /// Shared-memory ring of durable, redacted events for external feed shard processes
    /// (`tickwire-feed --shm PATH`), with its book image beside it; `None` = not written.
    pub md_shm: Option<PathBuf>,
    /// Records in that ring (power of two).
    pub md_shm_capacity: usize,
    /// How the server's threads wait (latency vs CPU).
    pub wait: WaitSettings,
}

/// The in-process market-data feed (`[feed]`; docs/market-data.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedSettings {
    /// WebSocket listen address.
    pub listen: SocketAddr,
    /// Shard threads.
    pub shards: usize,
    /// OS interface of every shard (`backend = "epoll" | "uring"`; default epoll).
    pub backend: BackendKind,
    /// Read keys (`read_keys = [...]`, each `ws::valid_read_key`); empty: public, the default.
    pub read_keys: Vec<String>,
    /// Queued outbound bytes per subscriber before the slow policy applies (`budget_bytes`).
    pub budget_bytes: usize,
    /// Slow-consumer policy (`slow = "conflate" | "disconnect"`).
    pub slow_policy: SlowPolicy,
    /// Messages kept per instrument for Resume (`replay_msgs`).
    pub replay_msgs: usize,
}

impl FeedSettings {
    /// The feed's defaults (those of `HubConfig::new`) on `listen` with one shard.
    pub fn new(listen: SocketAddr) -> FeedSettings {
        let h = HubConfig::new(Vec::new());
        FeedSettings {
            listen,
            shards: 1,
            backend: BackendKind::default(),
            read_keys: h.read_keys,
            budget_bytes: h.budget_bytes,
            slow_policy: h.slow_policy,
            replay_msgs: h.replay_msgs,
        }
    }

    /// The shard configuration serving `instruments` with these settings.
    pub fn shard_config(&self, instruments: Vec<u32>) -> ShardConfig {
        let mut hub = HubConfig::new(instruments);
        hub.read_keys = self.read_keys.clone();
        hub.budget_bytes = self.budget_bytes;
        hub.slow_policy = self.slow_policy;
        hub.replay_msgs = self.replay_msgs;
        let mut shard = ShardConfig::new(hub);
        shard.backend = self.backend;
        shard
    }
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfigError(pub String);

impl fmt::Display for ServerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration: {}", self.0)
    }
}

impl std::error::Error for ServerConfigError {}

fn addr(s: &str) -> SocketAddr {
    // Only called on literals below.
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl ServerConfig {
    /// The embedded default: BTC-USD (1) and ETH-USD (2), demo keys, `./tickwire-data`, order
    /// entry on 127.0.0.1:9001, feed on 127.0.0.1:9002, journal `sync`.
    pub fn demo() -> ServerConfig {
        let engine = EngineConfig {
            instruments: vec![
                // Price in whole USD (tick $1); quantity in 0.001 BTC (lot 1); 0.001 .. 1000 BTC.
                InstrumentConfig {
                    id: 1,
                    symbol: "BTC-USD".into(),
                    tick_size: 1,
                    lot_size: 1,
                    min_qty: 1,
                    max_qty: 1_000_000,
                    price_band_bps: None,
                    reference_price: None,
                },
                // Price in USD cents (tick $0.01); quantity in 0.01 ETH (lot 1); 0.01 .. 10000 ETH.
                InstrumentConfig {
                    id: 2,
                    symbol: "ETH-USD".into(),
                    tick_size: 1,
                    lot_size: 1,
                    min_qty: 1,
                    max_qty: 1_000_000,
                    price_band_bps: None,
                    reference_price: None,
                },
            ],
            ..EngineConfig::single_default()
        };
        let key = |(id, secret): (u64, &str), role, accounts: Vec<u32>| ApiKey {
            id,
            secret: secret.as_bytes().to_vec(),
            role,
            accounts,
        };
        let session = SessionConfig {
            keys: vec![
                key(DEMO_TRADE_KEY, Role::Trade, vec![1]),
                key(DEMO_READ_KEY, Role::Read, vec![1, 2]),
                key(DEMO_TRADE_KEY_2, Role::Trade, vec![2]),
            ],
            ..SessionConfig::default()
        };
        ServerConfig {
            listen: addr("127.0.0.1:9001"),
            data_dir: PathBuf::from("./tickwire-data"),
            engine,
            session,
            replay_per_key: 1 << 20,
            net: NetLimits::default(),
            durability: Durability::Sync,
            segment_bytes: 64 << 20,
            feed: Some(FeedSettings::new(addr("127.0.0.1:9002"))),
            is_demo: true,
            truncate_at_corruption: false,
            md_shm: None,
            md_shm_capacity: 1 << 20,
            wait: WaitSettings::default(),
        }
    }

    /// Parses a TOML configuration file's text; paths in it are relative to the current folder.
    pub fn parse(text: &str) -> Result<ServerConfig, ServerConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|e| ServerConfigError(e.to_string().trim_end().to_string()))?;
        let d = ServerConfig::demo();
        let sd = SessionConfig::default();
        let nd = NetLimits::default();
        let server = f.server.unwrap_or_default();
        let stp_of = |s: &str| -> Result<StpMode, ServerConfigError> {
            StpMode::ALL
                .iter()
                .copied()
                .find(|m| m.name() == s)
                .ok_or_else(|| ServerConfigError(format!("unknown stp mode {s:?}")))
        };
        let eng = f.engine.unwrap_or_default();
        let mut engine = EngineConfig {
            instruments: Vec::new(),
            orders_max: eng.orders_max.unwrap_or(d.engine.orders_max),
            levels_max: eng.levels_max.unwrap_or(d.engine.levels_max),
            accounts_max: eng.accounts_max.unwrap_or(d.engine.accounts_max),
            default_stp: match &eng.default_stp {
                Some(s) => stp_of(s)?,
                None => StpMode::None,
            },
            account_stp: Vec::new(),
        };
        for a in eng.account_stp {
            engine.account_stp.push((a.account, stp_of(&a.mode)?));
        }
        engine.instruments = match f.instruments {
            None => d.engine.instruments.clone(),
            Some(list) => list,
        };
        engine.validate().map_err(|e| ServerConfigError(e.to_string()))?;
        let keys = match f.keys {
            None => return Err(ServerConfigError("no [[keys]]: a configuration file must list its API keys".into())),
            Some(keys) => {
                let mut out = Vec::new();
                for k in keys {
                    let role = match k.role.as_str() {
                        "trade" => Role::Trade,
                        "read" => Role::Read,
                        "admin" => Role::Admin,
                        r => return Err(ServerConfigError(format!("key {}: unknown role {r:?} (trade, read, admin)", k.id))),
                    };
                    let secret = match (k.secret, k.secret_hex) {
                        (Some(s), None) => s.into_bytes(),
                        (None, Some(h)) => hex(&h).ok_or_else(|| ServerConfigError(format!("key {}: bad secret_hex", k.id)))?,
                        _ => return Err(ServerConfigError(format!("key {}: give exactly one of secret, secret_hex", k.id))),
                    };
                    out.push(ApiKey { id: k.id, secret, role, accounts: k.accounts });
                }
                out
            }
        };
        let l = f.limits.unwrap_or_default();
        let session = SessionConfig {
            keys,
            logon_window_ns: l.logon_window_ms.map_or(sd.logon_window_ns, |m| m * 1_000_000),
            logon_timeout_ns: l.logon_timeout_ms.map_or(sd.logon_timeout_ns, |m| m * 1_000_000),
            heartbeat_min_ms: l.heartbeat_min_ms.unwrap_or(sd.heartbeat_min_ms),
            heartbeat_max_ms: l.heartbeat_max_ms.unwrap_or(sd.heartbeat_max_ms),
            rate_per_sec: l.rate_per_sec.unwrap_or(sd.rate_per_sec),
            burst: l.burst.unwrap_or(sd.burst),
            throttle_disconnect_after: l.throttle_disconnect_after.unwrap_or(sd.throttle_disconnect_after),
            max_frame: sd.max_frame,
            max_order_ids_per_account: l.max_order_ids_per_account.unwrap_or(sd.max_order_ids_per_account),
            max_reports_per_flush: sd.max_reports_per_flush,
        };
        session.validate().map_err(|e| ServerConfigError(e.to_string()))?;
        let net = NetLimits {
            max_connections: l.max_connections.unwrap_or(nd.max_connections).max(1),
            max_conn_per_ip_per_sec: l.max_conn_per_ip_per_sec.unwrap_or(nd.max_conn_per_ip_per_sec).max(1),
            max_outbound_bytes: l.max_outbound_bytes.unwrap_or(nd.max_outbound_bytes).max(4096),
            read_budget: nd.read_budget,
            backlog: l.backlog.unwrap_or(nd.backlog).max(1),
            slow_consumer_ms: l.slow_consumer_ms.unwrap_or(nd.slow_consumer_ms).max(1),
            socket_send_buffer: l.socket_send_buffer.unwrap_or(nd.socket_send_buffer),
        };
        let j = f.journal.unwrap_or_default();
        let durability = match j.durability {
            None => Durability::Sync,
            Some(s) => s.parse().map_err(|e: tickwire_journal::JournalError| ServerConfigError(e.to_string()))?,
        };
        let (md_shm, md_shm_capacity) = match &f.feed {
            Some(fd) => (fd.shm_ring.as_ref().map(PathBuf::from), fd.shm_ring_capacity.unwrap_or(d.md_shm_capacity)),
            None => (None, d.md_shm_capacity),
        };
        if !md_shm_capacity.is_power_of_two() {
            return Err(ServerConfigError(format!("feed.shm_ring_capacity {md_shm_capacity} is not a power of two")));
        }
        let mut wait = WaitSettings::default();
        if let Some(w) = &server.wait {
            wait.mode = WaitMode::parse(w)
                .ok_or_else(|| ServerConfigError(format!("server.wait: unknown {w:?} (backoff, spin)")))?;
        }
        if let Some(us) = server.spin_us {
            if us > MAX_SPIN_US {
                return Err(ServerConfigError(format!("server.spin_us {us} is over {MAX_SPIN_US}")));
            }
            wait.spin = Duration::from_micros(us);
        }
        wait.engine_cpu = eng.cpu;
        if let Some(w) = &eng.wait {
            wait.engine_wait = Some(WaitStrategyKind::parse(w).ok_or_else(|| {
                ServerConfigError(format!("engine.wait: unknown {w:?} (backoff, yielding, busy-spin)"))
            })?);
        }
        let feed = match f.feed {
            None => d.feed.clone(),
            // Checked even when disabled: a typo should not wait for the day it is enabled.
            Some(fd) => {
                let enabled = fd.enabled != Some(false);
                let f = feed_settings(fd)?;
                enabled.then_some(f)
            }
        };
        Ok(ServerConfig {
            listen: parse_addr(server.listen, d.listen, "server.listen")?,
            data_dir: server.data_dir.map(PathBuf::from).unwrap_or(d.data_dir),
            engine,
            session,
            replay_per_key: l.replay_per_key.unwrap_or(d.replay_per_key).max(1),
            net,
            durability,
            segment_bytes: j.segment_bytes.unwrap_or(d.segment_bytes),
            feed,
            is_demo: false,
            truncate_at_corruption: false,
            md_shm,
            md_shm_capacity,
            wait,
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &std::path::Path) -> Result<ServerConfig, ServerConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerConfigError(format!("{}: {e}", path.display())))?;
        ServerConfig::parse(&text).map_err(|e| ServerConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// The journal directory.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// The gateway reject log.
    pub fn reject_log_path(&self) -> PathBuf {
        self.data_dir.join("gateway-rejects.log")
    }

    /// The instrument with this symbol (case-insensitive) or id.
    pub fn instrument_id(&self, name: &str) -> Option<u32> {
        self.engine
            .instruments
            .iter()
            .find(|i| i.symbol.eq_ignore_ascii_case(name) || name.parse::<u32>().ok() == Some(i.id))
            .map(|i| i.id)
    }
}

/// Most `feed.shards` (threads of the in-process feed; more subscribers than one process can
/// hold need `tickwire-feed` shard processes, docs/server.md).
const FEED_SHARDS_MAX: usize = 64;

/// `s` parsed as an address, `dflt` when absent.
fn parse_addr(s: Option<String>, dflt: SocketAddr, what: &str) -> Result<SocketAddr, ServerConfigError> {
    match s {
        None => Ok(dflt),
        Some(s) => s.parse().map_err(|_| ServerConfigError(format!("{what}: bad address {s:?}"))),
    }
}

/// `[feed]` with defaults filled in; refuses an unknown backend or policy, a malformed or empty
/// read-key list, or a budget outside `HubConfig::check_budget_bytes`.
fn feed_settings(fd: FeedSection) -> Result<FeedSettings, ServerConfigError> {
    let mut f = FeedSettings::new(parse_addr(fd.listen, addr("127.0.0.1:9002"), "feed.listen")?);
    f.shards = fd.shards.unwrap_or(1).max(1);
    if f.shards > FEED_SHARDS_MAX {
        // A thread and a listener each: a typo here would start thousands.
        return Err(ServerConfigError(format!("feed.shards {} is over {FEED_SHARDS_MAX}", f.shards)));
    }
    if let Some(b) = fd.backend {
        f.backend = b.parse().map_err(|e| ServerConfigError(format!("feed.backend: {e}")))?;
    }
    if let Some(keys) = fd.read_keys {
        if keys.is_empty() {
            // An empty list reads like "locked down" but would mean public: say so instead.
            return Err(ServerConfigError("feed.read_keys is empty (omit it for a public feed)".into()));
        }
        if let Some(k) = keys.iter().position(|k| !ws::valid_read_key(k)) {
            return Err(ServerConfigError(format!(
                "feed.read_keys[{k}]: a key is 1-128 characters of A-Z a-z 0-9 . _ ~ -"
            )));
        }
        f.read_keys = keys;
    }
    if let Some(b) = fd.budget_bytes {
        HubConfig::check_budget_bytes(b).map_err(|e| ServerConfigError(format!("feed.budget_bytes {e}")))?;
        f.budget_bytes = b;
    }
    if let Some(p) = fd.slow {
        f.slow_policy = p.parse().map_err(|e| ServerConfigError(format!("feed.slow: {e}")))?;
    }
    if let Some(r) = fd.replay_msgs {
        // 0: no replay window (a Resume that is behind gets a snapshot), as in `tickwire-feed --replay 0`.
        f.replay_msgs = r;
    }
    Ok(f)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() & 1 == 1 || s.is_empty() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<ServerSection>,
    engine: Option<EngineSection>,
    instruments: Option<Vec<InstrumentConfig>>,
    keys: Option<Vec<FileKey>>,
    limits: Option<LimitsSection>,
    journal: Option<JournalSection>,
    feed: Option<FeedSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    data_dir: Option<String>,
    wait: Option<String>,
    spin_us: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineSection {
    orders_max: Option<u32>,
    levels_max: Option<u32>,
    accounts_max: Option<u32>,
    default_stp: Option<String>,
    #[serde(default)]
    account_stp: Vec<AccountStp>,
    cpu: Option<usize>,
    wait: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountStp {
    account: u32,
    mode: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: u64,
    role: String,
    secret: Option<String>,
    secret_hex: Option<String>,
    #[serde(default)]
    accounts: Vec<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    logon_window_ms: Option<u64>,
    logon_timeout_ms: Option<u64>,
    heartbeat_min_ms: Option<u32>,
    heartbeat_max_ms: Option<u32>,
    rate_per_sec: Option<u32>,
    burst: Option<u32>,
    throttle_disconnect_after: Option<u32>,
    max_order_ids_per_account: Option<usize>,
    replay_per_key: Option<usize>,
    max_connections: Option<usize>,
    max_conn_per_ip_per_sec: Option<u32>,
    max_outbound_bytes: Option<usize>,
    backlog: Option<i32>,
    slow_consumer_ms: Option<u64>,
    socket_send_buffer: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    durability: Option<String>,
    segment_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FeedSection {
    enabled: Option<bool>,
    listen: Option<String>,
    shards: Option<usize>,
    shm_ring: Option<String>,
    shm_ring_capacity: Option<usize>,
    backend: Option<String>,
    read_keys: Option<Vec<String>>,
    budget_bytes: Option<usize>,
    slow: Option<String>,
    replay_msgs: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_typos_are_refused() {
        let text = include_str!("../../tickwire.example.toml");
        let c = ServerConfig::parse(text).unwrap();
        assert_eq!(c.engine.instruments.len(), 2);
        assert_eq!(c.feed, Some(FeedSettings::new(addr("127.0.0.1:9002"))), "the example lists the defaults");
        assert!(!c.session.keys.is_empty());
        assert!(ServerConfig::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 1\n").is_err());
        assert!(ServerConfig::parse("[server]\nlisten = \"127.0.0.1:1\"\n").is_err(), "keys are required");
        let demo = ServerConfig::demo();
        assert_eq!(demo.instrument_id("btc-usd"), Some(1));
        assert_eq!(demo.instrument_id("2"), Some(2));
        assert_eq!(c.wait.mode, WaitMode::Backoff, "the example keeps the default wait");
        assert_eq!(c.wait.engine_wait(), WaitStrategyKind::backoff());
    }

    #[test]
    fn feed_section() {
        let keys = "[[keys]]\nid = 1\nrole = \"trade\"\nsecret = \"s\"\naccounts = [1]\n";
        let d = ServerConfig::parse(keys).unwrap().feed.unwrap();
        assert_eq!(d, FeedSettings::new(addr("127.0.0.1:9002")), "no [feed]: the defaults, public");
        assert_eq!(ServerConfig::demo().feed, Some(d.clone()));
        let c = ServerConfig::parse(&format!(
            "[feed]\nlisten = \"127.0.0.1:7000\"\nshards = 2\nbackend = \"uring\"\nread_keys = [\"k-1\", \"K.2\"]\n\
             budget_bytes = 65536\nslow = \"disconnect\"\nreplay_msgs = 100\n{keys}"
        ))
        .unwrap()
        .feed
        .unwrap();
        assert_eq!((c.listen, c.shards, c.backend), (addr("127.0.0.1:7000"), 2, BackendKind::Uring));
        assert_eq!(c.read_keys, ["k-1", "K.2"]);
        let sc = c.shard_config(vec![1, 2]);
        assert_eq!(sc.backend, BackendKind::Uring);
        assert_eq!(sc.hub.instruments, [1, 2]);
        assert_eq!(sc.hub.read_keys, c.read_keys);
        assert_eq!((sc.hub.budget_bytes, sc.hub.slow_policy, sc.hub.replay_msgs), (65536, SlowPolicy::Disconnect, 100));
        assert_eq!(ServerConfig::parse(&format!("[feed]\nenabled = false\n{keys}")).unwrap().feed, None);
        assert!(
            ServerConfig::parse(&format!("[feed]\nenabled = false\nbackend = \"kqueue\"\n{keys}")).is_err(),
            "a disabled section is still checked"
        );
        let r = ServerConfig::parse(&format!("[feed]\nreplay_msgs = 0\n{keys}")).unwrap().feed.unwrap();
        assert_eq!(r.replay_msgs, 0, "0: no replay window");
        for bad in [
            "backend = \"kqueue\"",
            "read_keys = []",
            "read_keys = [\"has space\"]",
            "read_keys = [\"\"]",
            "budget_bytes = 100",
            "budget_bytes = 1099511627776",
            "slow = \"drop\"",
            "listen = \"nowhere\"",
            "shards = 65",
        ] {
            let e = ServerConfig::parse(&format!("[feed]\n{bad}\n{keys}")).unwrap_err();
            assert!(e.0.starts_with("feed."), "{bad}: {e}");
        }
    }

    #[test]
    fn wait_profile_options() {
        let keys = "[[keys]]\nid = 1\nrole = \"trade\"\nsecret = \"s\"\naccounts = [1]\n";
        let d = ServerConfig::parse(keys).unwrap();
        assert_eq!(d.wait, WaitSettings::default());
        assert_eq!(d.wait.loop_spin(), Duration::ZERO, "backoff: no spin");
        assert_eq!(d.wait.journal_spin(), Duration::ZERO);
        let c = ServerConfig::parse(&format!(
            "[server]\nwait = \"spin\"\nspin_us = 150\n[engine]\ncpu = 1\nwait = \"yielding\"\n{keys}"
        ))
        .unwrap();
        assert_eq!(c.wait.mode, WaitMode::Spin);
        assert_eq!(c.wait.loop_spin(), Duration::from_micros(150));
        assert_eq!(c.wait.journal_spin(), Duration::from_micros(150));
        assert_eq!(c.wait.engine_cpu, Some(1));
        assert_eq!(c.wait.engine_wait(), WaitStrategyKind::yielding());
        let s = ServerConfig::parse(&format!("[server]\nwait = \"spin\"\n{keys}")).unwrap();
        assert_eq!(s.wait.engine_wait(), WaitStrategyKind::yielding(), "spin: yielding engine by default");
        let b = ServerConfig::parse(&format!("[engine]\nwait = \"busy-spin\"\n{keys}")).unwrap();
        assert_eq!(b.wait.engine_wait(), WaitStrategyKind::BusySpin);
        assert_eq!(b.wait.loop_spin(), Duration::ZERO, "engine wait alone does not change the mode");
        assert_eq!(s.wait.loop_spin(), Duration::from_micros(DEFAULT_SPIN_US));
        assert!(ServerConfig::parse(&format!("[server]\nwait = \"fast\"\n{keys}")).is_err());
        assert!(ServerConfig::parse(&format!("[server]\nspin_us = 1000000\n{keys}")).is_err(), "bounded");
        assert!(ServerConfig::parse(&format!("[engine]\nwait = \"nap\"\n{keys}")).is_err());
        let mut w = s.wait;
        w.apply_profile("default").unwrap();
        assert_eq!(w.mode, WaitMode::Backoff);
        w.apply_profile("low").unwrap();
        assert_eq!(w.mode, WaitMode::Spin);
        assert!(w.apply_profile("turbo").is_err());
    }
}
