//! `tickwire`: the order-matching + market-data server.
//!
//! `tickwire serve` runs on an embedded demo default (BTC-USD and ETH-USD, demo keys printed at
//! start, data in `./tickwire-data`, order entry on 127.0.0.1:9001, feed on 127.0.0.1:9002);
//! `tickwire serve --config tickwire.toml` for everything else (`tickwire.example.toml`).
//! See `docs/server.md`.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tickwire_gateway::config::{ServerConfig, DEMO_READ_KEY, DEMO_TRADE_KEY, DEMO_TRADE_KEY_2};
use tickwire_gateway::server::Server;
use tickwire_journal::Durability;

#[derive(Parser, Debug)]
#[command(name = "tickwire", about = "Tickwire order-matching and market-data server", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Recover from the journal and serve order entry and market data until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Configuration file (TOML, see tickwire.example.toml). Without it: the embedded demo default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the data directory (journal, gateway reject log).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the order-entry listen address (port 0: any free port, printed).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the market-data listen address (port 0: any free port, printed).
    #[arg(long)]
    feed_listen: Option<SocketAddr>,
    /// Run without the market-data feed.
    #[arg(long)]
    no_feed: bool,
    /// Override the feed's OS backend (`[feed] backend`): epoll or uring.
    #[arg(long)]
    feed_backend: Option<tickwire_feed::BackendKind>,
    /// Override the journal durability: sync, async, async:<ms>, none.
    #[arg(long)]
    durability: Option<String>,
    /// If the journal has a damaged record BEFORE its tail, cut it there (dropping that record and
    /// everything after it) instead of refusing to start. Read the refusal message first.
    #[arg(long)]
    truncate_at_corruption: bool,
    /// Also write the durable market-data events to this shared-memory ring (and PATH.image) for
    /// external `tickwire-feed --shm PATH` shard processes (overrides `[feed] shm_ring`).
    #[arg(long)]
    feed_shm: Option<std::path::PathBuf>,
    /// Wait profile (overrides `[server] wait`): `low` = `spin` (bounded spins in the event loop
    /// and the journaler, a `yielding` engine unless `[engine] wait` says otherwise: one core
    /// busy even when idle); `default` = `backoff` (sleeps when idle; ~100+ us more per
    /// acknowledgement on a VM). See docs/server.md.
    #[arg(long, value_name = "low|default")]
    latency_profile: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C"` function that only performs an atomic store,
        // which is async-signal-safe; `signal` has no other precondition.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let Cmd::Serve(args) = cli.cmd;
    if let Err(e) = serve(args) {
        eprintln!("tickwire: {e}");
        std::process::exit(1);
    }
}

fn serve(a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = match &a.config {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::demo(),
    };
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if (cfg.feed.is_none() || a.no_feed) && (a.feed_listen.is_some() || a.feed_backend.is_some()) {
        eprintln!("tickwire: the feed is off (--no-feed or [feed] enabled = false): --feed-listen / --feed-backend ignored");
    }
    if a.no_feed {
        cfg.feed = None;
    } else if let Some(f) = cfg.feed.as_mut() {
        if let Some(l) = a.feed_listen {
            f.listen = l;
        }
        if let Some(b) = a.feed_backend {
            f.backend = b;
        }
    }
    if let Some(d) = &a.durability {
        cfg.durability = d.parse::<Durability>()?;
    }
    cfg.truncate_at_corruption = a.truncate_at_corruption;
    if let Some(p) = a.feed_shm {
        cfg.md_shm = Some(p);
    }
    if let Some(p) = &a.latency_profile {
        cfg.wait.apply_profile(p)?;
    }
    install_signal_handlers();
    let mut out = std::io::stdout();
    writeln!(out, "tickwire {} starting", env!("CARGO_PKG_VERSION"))?;
    if cfg.is_demo {
        writeln!(out, "configuration: EMBEDDED DEMO DEFAULT (no --config given)")?;
    } else if let Some(p) = &a.config {
        writeln!(out, "configuration: {}", p.display())?;
    }
    for i in &cfg.engine.instruments {
        writeln!(
            out,
            "instrument {} {}: tick_size {} lot_size {} qty {}..={}{}",
            i.id,
            i.symbol,
            i.tick_size,
            i.lot_size,
            i.min_qty,
            i.max_qty,
            i.price_band_bps.map(|b| format!(" band {b} bps")).unwrap_or_default()
        )?;
    }
    if cfg.is_demo {
        writeln!(out, "DEMO KEYS (publicly known secrets, for trying the server only; use --config for real keys):")?;
        writeln!(out, "  demo trade key: id {} secret {:?} (role trade, account 1)", DEMO_TRADE_KEY.0, DEMO_TRADE_KEY.1)?;
        writeln!(out, "  demo read key:  id {} secret {:?} (role read, accounts 1, 2)", DEMO_READ_KEY.0, DEMO_READ_KEY.1)?;
        writeln!(
            out,
            "  demo trade key 2: id {} secret {:?} (role trade, account 2)",
            DEMO_TRADE_KEY_2.0, DEMO_TRADE_KEY_2.1
        )?;
    } else {
        for k in &cfg.session.keys {
            writeln!(out, "key {}: role {} accounts {:?}", k.id, k.role.name(), k.accounts)?;
        }
    }
    writeln!(out, "data directory: {}", cfg.data_dir.display())?;
    out.flush()?;
    let handle = Server::start(cfg.clone())?;
    let i = &handle.info;
    writeln!(
        out,
        "backends: order entry = mio/epoll event loop (1 thread, TCP_NODELAY); engine = lock-free ring pipeline \
         (1 engine thread, heap rings); {}; journal = segment files, durability {}, group commit; \
         feed = {}",
        cfg.wait.describe(),
        i.durability,
        match &cfg.feed {
            Some(f) => format!(
                "WebSocket, {}, {} shard(s), {}",
                f.backend,
                f.shards,
                if f.read_keys.is_empty() { "public".to_string() } else { format!("{} read key(s)", f.read_keys.len()) }
            ),
            None => "off".into(),
        }
    )?;
    writeln!(
        out,
        "recovered: {} commands (last sequence {}), {} gateway rejects, {} admin follows, {} torn bytes cut",
        i.recovered_commands, i.last_cmd_seq, i.rebuild.rejects, i.rebuild.follows, i.truncated_bytes
    )?;
    writeln!(out, "recovered-state-hash: {:#018x}", i.recovered_hash)?;
    if let Some(f) = i.feed {
        writeln!(out, "market-data: ws://{f}/")?;
    }
    if let Some(p) = &cfg.md_shm {
        writeln!(
            out,
            "market-data-ring: {} (+ .image; attach shards with: tickwire-feed --shm {} --listen ADDR)",
            p.display(),
            p.display()
        )?;
    }
    writeln!(out, "order-entry: {}", i.order_entry)?;
    writeln!(out, "ready (SIGINT or SIGTERM to stop)")?;
    out.flush()?;
    let stop = handle.stop_handle();
    while !STOP.load(Ordering::SeqCst) && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if STOP.load(Ordering::SeqCst) {
        writeln!(out, "stopping: no new connections, ending sessions, draining")?;
        out.flush()?;
    }
    stop.stop();
    let r = handle.join()?;
    writeln!(
        out,
        "stopped: {} connections served, {} commands, last sequence {} (journal durable {}), \
         {} refused by rate, {} refused full, {} slow consumers",
        r.stats.accepted,
        r.stats.commands,
        r.last_cmd_seq,
        r.durable_seq,
        r.stats.refused_rate,
        r.stats.refused_full,
        r.stats.slow_disconnects
    )?;
    match &r.snapshot {
        Ok(p) => writeln!(out, "snapshot: {}", p.display())?,
        Err(e) => writeln!(out, "snapshot: not written: {e}")?,
    }
    writeln!(out, "final-state-hash: {:#018x}", r.state_hash)?;
    out.flush()?;
    Ok(())
}
