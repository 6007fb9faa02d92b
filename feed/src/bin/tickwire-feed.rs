//! Runs one feed shard. Several processes may listen on the same port (SO_REUSEPORT).
//!
//! - `--shm PATH`: attach read-only to the engine's outbound event ring in shared memory and
//!   publish it (the ring must still hold the engine's first event for the books to be right:
//!   the feed starts from the oldest event in the ring).
//! - `--demo`: no engine attached: runs a small in-process engine with random order flow on the
//!   configured instruments (for trying clients).

use clap::Parser;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tickwire_core::{Command, Engine, EngineConfig, InstrumentConfig, OrderType, Side};
use tickwire_feed::{FeedShard, HubConfig, ShardConfig, ShmSource};

#[derive(Parser, Debug)]
#[command(name = "tickwire-feed", about = "Tickwire market-data feed shard (WebSocket)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Engine outbound ring in shared memory (e.g. /dev/shm/tickwire.events).
    #[arg(long)]
    shm: Option<std::path::PathBuf>,
    /// Run a built-in demo engine with random order flow instead of attaching to one.
    #[arg(long)]
    demo: bool,
    /// Demo order rate (commands per second).
    #[arg(long, default_value_t = 1000)]
    demo_rate: u64,
    /// Instruments served (comma-separated ids).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    instruments: Vec<u32>,
    /// Outbound budget per connection (bytes, 4096 ..= 1 GiB).
    #[arg(long, default_value_t = 4 << 20)]
    budget: usize,
    /// Slow-consumer policy: conflate or disconnect.
    #[arg(long, default_value = "conflate")]
    slow: String,
    /// Replay window per instrument (messages; 0: none, a Resume behind gets a snapshot).
    #[arg(long, default_value_t = 4096)]
    replay: usize,
    /// Polling interval of the shm ring (microseconds).
    #[arg(long, default_value_t = 200)]
    poll_us: u64,
    /// OS backend: epoll or uring (io_uring, Linux ≥ 6.0).
    #[arg(long, default_value = "epoll")]
    backend: tickwire_feed::BackendKind,
    /// Read keys, one per line (`#` comments and blank lines ignored): subscribers and HTTP
    /// requests must then carry one (`?key=KEY`, or the WebSocket subprotocol
    /// `tickwire-key.KEY`). A file, not a flag, so keys do not show in `ps`. Default: public.
    #[arg(long)]
    read_key_file: Option<std::path::PathBuf>,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(a) {
        eprintln!("tickwire-feed: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut hub = HubConfig::new(a.instruments.clone());
    HubConfig::check_budget_bytes(a.budget).map_err(|e| format!("--budget {e}"))?;
    hub.budget_bytes = a.budget;
    hub.replay_msgs = a.replay;
    hub.slow_policy = a.slow.parse().map_err(|e| format!("--slow: {e}"))?;
    if let Some(path) = &a.read_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--read-key-file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let k = line.trim();
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            if !tickwire_feed::ws::valid_read_key(k) {
                return Err(format!("--read-key-file {} line {}: a key is 1-128 characters of A-Z a-z 0-9 . _ ~ -", path.display(), n + 1).into());
            }
            hub.read_keys.push(k.to_string());
        }
        if hub.read_keys.is_empty() {
            return Err(format!("--read-key-file {}: no keys in it", path.display()).into());
        }
    }
    let mut cfg = ShardConfig::new(hub);
    cfg.backend = a.backend;
    a.backend.available().map_err(|e| format!("--backend {}: {e}", a.backend))?;
    let listener = tickwire_feed::sys::bind_reuseport(a.listen, 1024)?;
    let stop = Arc::new(AtomicBool::new(false));
    if a.duration > 0 {
        let stop = stop.clone();
        let d = a.duration;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(d));
            stop.store(true, std::sync::atomic::Ordering::Release);
        });
    }
    match (&a.shm, a.demo) {
        (Some(path), false) => {
            let src = ShmSource::open(path, Duration::from_micros(a.poll_us))?;
            eprintln!("tickwire-feed: ring {} from engine seq {}", path.display(), src.next_seq());
            let mut shard = FeedShard::new(listener, src, cfg)?;
            eprintln!("tickwire-feed: listening on {} (backend {})", shard.local_addr(), shard.backend_kind());
            shard.run(&stop)?;
            eprintln!("tickwire-feed: {:?}", shard.stats_handle().lock().map(|s| *s).unwrap_or_default());
        }
        (None, true) => {
            let (tx, rx) = tickwire_feed::channel();
            let mut shard = FeedShard::new(listener, rx, cfg)?;
            eprintln!("tickwire-feed: listening on {} (demo engine, backend {})", shard.local_addr(), shard.backend_kind());
            let ids = a.instruments.clone();
            let rate = a.demo_rate.max(1);
            let stop2 = stop.clone();
            std::thread::spawn(move || demo_engine(&ids, rate, tx, &stop2));
            shard.run(&stop)?;
        }
        _ => return Err("give exactly one of --shm PATH or --demo".into()),
    }
    Ok(())
}

/// Random limit orders, cancels and crossing orders around price 10_000.
fn demo_engine(ids: &[u32], rate: u64, tx: tickwire_feed::FeedSender, stop: &AtomicBool) {
    let cfg = EngineConfig {
        instruments: ids.iter().map(|&i| InstrumentConfig::simple(i, &format!("I{i}"))).collect(),
        ..EngineConfig::single_default()
    };
    let Ok(mut engine) = Engine::new(&cfg) else { return };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seq = 0u64;
    let mut evs = Vec::new();
    let t0 = std::time::Instant::now();
    let period = Duration::from_secs(1) / rate.min(1_000_000) as u32;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let inst = ids[(next() % ids.len() as u64) as usize];
        let side = if next() % 2 == 0 { Side::Buy } else { Side::Sell };
        let r = next();
        let cmd = if r % 10 < 2 {
            Command::cancel(1, inst, next() % 500)
        } else {
            let off = (r >> 8) % 20;
            let price = if side == Side::Buy { 10_000 - off as i64 + 2 } else { 10_000 + off as i64 - 2 };
            Command::new_order(1 + (r % 7) as u32, inst, next() % 500, side, OrderType::LimitGtc, Some(price), 1 + (r >> 16) % 50, None)
        };
        seq += 1;
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        evs.clear();
        engine.handle(&cmd.with_seq(seq, ts), &mut evs);
        tx.send(&evs);
        let due = t0 + period * (seq as u32);
        if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(d);
        }
    }
}
