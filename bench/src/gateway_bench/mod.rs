//! `tickwire-bench gateway`: order entry through the whole server (`tickwire serve` as a child
//! process: TCP, the mio loop, sessions, the ring pipeline, the engine, the journal), each figure
//! against a baseline measured in the same run:
//!
//! 1. **RTT**, closed loop, one session: NewOrder → its `accepted` ExecutionReport (then Cancel →
//!    `cancelled`, timed separately, so the book stays empty). Journal `none` and `sync`, each
//!    on its own server (fresh temporary directory, free port, `--no-feed`).
//!    Baseline: a raw TCP ping-pong between two plain threads of this process with the same
//!    message sizes (40-byte request, 88-byte reply), `TCP_NODELAY` and the same client wait
//!    (a blocking read); and write + `fdatasync` of one 88-byte record in the `sync` server's
//!    directory, one sample after each `sync` round trip. They are measured in interleaved
//!    blocks (raw, none, sync + fdatasync, diagnostics, …),
//!    so a load change on the (shared) machine hits all of them alike. Only the server being
//!    measured runs: the others are frozen with SIGSTOP (an idle `tickwire serve` is not idle on
//!    the CPU: its journaler waits in a `sched_yield` loop).
//!    Goals: `none`: p50 ≤ 1.3× raw p50 and p99.9 ≤ 2× raw p99.9; `sync`: p50 ≤ raw p50 +
//!    fdatasync p50 + 20 µs.
//! 2. **Throughput**: N sessions (default 4) pipeline NewOrders open loop at fixed offered rates
//!    (each session a sender thread writing every order at its intended time, and a receiver
//!    thread); buys and sells at one price, so they trade and the book stays small. Per rate:
//!    orders/s achieved (acknowledged / time to the last acknowledgement) and ack latency
//!    (intended send time → `accepted` report) percentiles.
//!
//!    Ack latency counts from the intended send time, so it includes the sender's own lateness
//!    (sleep granularity, shared cores), reported separately as `send_lag_*`.
//! 3. Diagnostics: the same RTT on two more servers whose threads run with a 1 ns timer slack
//!    (`PR_SET_TIMERSLACK`, inherited from the thread that forks them; the server is unchanged),
//!    and what `sleep(50 µs)` (the event loop's idle step while a command is in flight) takes.
//!
//! The server binary is `tickwire` next to this one (`cargo build --release -p
//! tickwire-gateway`), or `--server-bin`. Temporary directories go under `--dir` (default: the
//! system temp directory, which must be on a real disk for `sync` to mean anything).

mod client;
mod load;
mod raw;
mod server;

use crate::report::Report;
use crate::Common;
use hdrhistogram::Histogram;
use server::ServerProc;
use std::path::PathBuf;
use std::time::Instant;

const BENCH: &str = "gateway";
/// Timer slack of the diagnostic servers (ns).
const SLACK_NS: u64 = 1;

/// Options of `tickwire-bench gateway`.
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub common: Common,
    /// The `tickwire` server binary (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Directory for the servers' temporary data directories (removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Sessions of the throughput part.
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Offered rates of the throughput part, orders/s over all sessions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// `tickwire serve --latency-profile` of every server started (`default` or `low`; see
    /// docs/server.md "Wait profiles"). Printed with the results.
    #[arg(long, default_value = "default")]
    pub latency_profile: String,
}

/// Sizes of one run.
struct Plan {
    reps: usize,
    raw_block: usize,
    none_block: usize,
    sync_block: usize,
    rates: Vec<f64>,
    rate_secs: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 4,
                raw_block: 1_500,
                none_block: 750,
                sync_block: 150,
                rates: vec![5_000.0, 20_000.0, 50_000.0],
                rate_secs: 2.0,
            }
        } else {
            Plan {
                reps: 8,
                raw_block: 5_000,
                none_block: 2_500,
                sync_block: 500,
                rates: vec![10_000.0, 50_000.0, 100_000.0, 200_000.0],
                rate_secs: 5.0,
            }
        }
    }
}

struct Pct {
    p50: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
    n: u64,
}

fn pct(h: &Histogram<u64>) -> Pct {
    Pct {
        p50: h.value_at_quantile(0.5) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p99_9: h.value_at_quantile(0.999) as f64,
        max: h.max() as f64,
        n: h.len(),
    }
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1e3)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One RTT block on `srv`, the only server running meanwhile (20 round trips of warm-up after
/// the resume are discarded). With `fsync`, one write + `fdatasync` sample follows each round
/// trip (NewOrder + Cancel), so the two are measured at the same moments of the disk's load.
fn server_block(
    srv: &mut ServerProc,
    c: &mut client::Client,
    n: usize,
    coid: &mut u64,
    h: &mut Histogram<u64>,
    hc: &mut Histogram<u64>,
    mut fsync: Option<(&mut raw::SyncFile, &mut Histogram<u64>)>,
) -> Result<(), String> {
    srv.resume();
    let (mut w1, mut w2) = (raw::hist(), raw::hist());
    load::rtt_block(c, 20, coid, &mut w1, &mut w2)?;
    for _ in 0..n {
        load::rtt_block(c, 1, coid, h, hc)?;
        if let Some((f, fh)) = fsync.as_mut() {
            f.block(1, fh)?;
        }
    }
    srv.pause();
    Ok(())
}

/// Entry point.
pub fn run(a: &GatewayArgs) {
    if let Err(e) = run_inner(a) {
        eprintln!("tickwire-bench gateway: {e}");
        std::process::exit(1);
    }
}

fn run_inner(a: &GatewayArgs) -> Result<(), String> {
    let t_start = Instant::now();
    let mut plan = Plan::new(a.common.quick);
    if !a.rates.is_empty() {
        plan.rates = a.rates.clone();
    }
    let sessions = a.sessions.max(1);
    let bin = match &a.server_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("own path: {e}"))?.with_file_name("tickwire"),
    };
    if !bin.exists() {
        return Err(format!(
            "server binary {} not found: build it first (`cargo build --release -p tickwire-gateway`) or pass --server-bin",
            bin.display()
        ));
    }
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    server::install_interrupt_handler();
    let mut r = Report::new(a.common.json);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    r.note(&format!(
        "gateway bench: server {} (child process, --no-feed), data under {}, {cpus} CPUs, load average at start {}",
        bin.display(),
        base.display(),
        loadavg()
    ));
    // One key for the RTT session (key 1), then `sessions` keys for the throughput part.
    let keys = 1 + sessions as u64;
    server::set_latency_profile(&a.latency_profile);
    r.note(&format!("servers: tickwire serve --latency-profile {}", a.latency_profile));
    let mut srv_none = ServerProc::start(&bin, &base, "none", keys, None)?;
    let mut srv_sync = ServerProc::start(&bin, &base, "sync", keys, None)?;
    // Diagnostic: the same servers with a 1 ns timer slack (inherited by their threads), to
    // see what the sleeps of the event loop, the engine's backoff and the journaler cost.
    let mut srv_none_s = ServerProc::start(&bin, &base, "none", 2, Some(SLACK_NS))?;
    let mut srv_sync_s = ServerProc::start(&bin, &base, "sync", 2, Some(SLACK_NS))?;

    // ---- RTT, interleaved with its baselines.
    let mut raw_pair = raw::RawPair::start()?;
    let mut fsync_file = raw::SyncFile::new(&srv_sync.dir.0)?;
    let mut c_none = client::Client::logon(srv_none.addr, 1)?;
    let mut c_sync = client::Client::logon(srv_sync.addr, 1)?;
    let mut c_none_s = client::Client::logon(srv_none_s.addr, 1)?;
    let mut c_sync_s = client::Client::logon(srv_sync_s.addr, 1)?;
    let (mut coid_none, mut coid_sync, mut coid_none_s, mut coid_sync_s) = (0u64, 0u64, 0u64, 0u64);
    let (mut h_none_s, mut h_sync_s, mut hc_dummy) = (raw::hist(), raw::hist(), raw::hist());
    let (mut h_raw, mut h_none, mut h_sync, mut h_fs) = (raw::hist(), raw::hist(), raw::hist(), raw::hist());
    let (mut hc_none, mut hc_sync) = (raw::hist(), raw::hist());
    // Warm-up (discarded): connections, caches, the servers' first allocations.
    {
        let (mut w1, mut w2) = (raw::hist(), raw::hist());
        raw_pair.block(300, &mut w1)?;
        load::rtt_block(&mut c_none, 200, &mut coid_none, &mut w1, &mut w2)?;
        load::rtt_block(&mut c_sync, 50, &mut coid_sync, &mut w1, &mut w2)?;
        load::rtt_block(&mut c_none_s, 200, &mut coid_none_s, &mut w1, &mut w2)?;
        load::rtt_block(&mut c_sync_s, 50, &mut coid_sync_s, &mut w1, &mut w2)?;
        fsync_file.block(20, &mut w1)?;
    }
    // Only the server being measured runs; the others are frozen (SIGSTOP), also during the
    // raw and fdatasync blocks.
    for sp in [&mut srv_none, &mut srv_sync, &mut srv_none_s, &mut srv_sync_s] {
        sp.pause();
    }
    let mut rep_p50: [Vec<f64>; 4] = Default::default();
    for _ in 0..plan.reps {
        let mut hs = [raw::hist(), raw::hist(), raw::hist(), raw::hist()];
        raw_pair.block(plan.raw_block, &mut hs[0])?;
        server_block(&mut srv_none, &mut c_none, plan.none_block, &mut coid_none, &mut hs[1], &mut hc_none, None)?;
        let [_, _, h_s, h_f] = &mut hs;
        let fs = Some((&mut fsync_file, h_f));
        server_block(&mut srv_sync, &mut c_sync, plan.sync_block, &mut coid_sync, h_s, &mut hc_sync, fs)?;
        server_block(&mut srv_none_s, &mut c_none_s, plan.none_block, &mut coid_none_s, &mut h_none_s, &mut hc_dummy, None)?;
        server_block(&mut srv_sync_s, &mut c_sync_s, plan.sync_block, &mut coid_sync_s, &mut h_sync_s, &mut hc_dummy, None)?;
        for (i, h) in hs.iter().enumerate() {
            rep_p50[i].push(h.value_at_quantile(0.5) as f64);
        }
        h_raw.add(&hs[0]).expect("bounds");
        h_none.add(&hs[1]).expect("bounds");
        h_sync.add(&hs[2]).expect("bounds");
        h_fs.add(&hs[3]).expect("bounds");
    }
    for sp in [&mut srv_none, &mut srv_sync, &mut srv_none_s, &mut srv_sync_s] {
        sp.resume();
    }
    c_none.logout();
    c_sync.logout();
    c_none_s.logout();
    c_sync_s.logout();
    srv_none_s.stop();
    srv_sync_s.stop();
    drop(raw_pair);
    drop(fsync_file);
    let sleep_h = raw::sleep_50us(400, None);
    let sleep_hs = raw::sleep_50us(400, Some(SLACK_NS));

    let (raw_p, none_p, sync_p, fs_p) = (pct(&h_raw), pct(&h_none), pct(&h_sync), pct(&h_fs));
    let (cn_p, cs_p) = (pct(&hc_none), pct(&hc_sync));
    let sleep_p = pct(&sleep_h);
    let sleep_ps = pct(&sleep_hs);
    let (none_ps, sync_ps) = (pct(&h_none_s), pct(&h_sync_s));
    let reps = ("reps", plan.reps.to_string());
    let s = |k: &'static str, v: u64| (k, v.to_string());
    r.add(BENCH, "raw_p50", raw_p.p50, "ns", &[s("samples", raw_p.n), reps.clone()]);
    r.add(BENCH, "raw_p99", raw_p.p99, "ns", &[]);
    r.add(BENCH, "raw_p99_9", raw_p.p99_9, "ns", &[("max_ns", format!("{:.0}", raw_p.max))]);
    r.add(BENCH, "fdatasync_p50", fs_p.p50, "ns", &[s("samples", fs_p.n), ("p99_ns", format!("{:.0}", fs_p.p99))]);
    for (d, p, c) in [("none", &none_p, &cn_p), ("sync", &sync_p, &cs_p)] {
        let dur = ("durability", d.to_string());
        r.add(BENCH, "rtt_p50", p.p50, "ns", &[dur.clone(), s("samples", p.n)]);
        r.add(BENCH, "rtt_p99", p.p99, "ns", std::slice::from_ref(&dur));
        r.add(BENCH, "rtt_p99_9", p.p99_9, "ns", &[dur.clone(), ("max_ns", format!("{:.0}", p.max))]);
        r.add(BENCH, "rtt_p50_ratio_vs_raw", p.p50 / raw_p.p50, "x", std::slice::from_ref(&dur));
        r.add(BENCH, "rtt_p99_9_ratio_vs_raw", p.p99_9 / raw_p.p99_9, "x", std::slice::from_ref(&dur));
        r.add(BENCH, "rtt_cancel_p50", c.p50, "ns", &[dur.clone(), s("samples", c.n)]);
    }
    r.add(BENCH, "sleep_50us_p50", sleep_p.p50, "ns", &[("p99_ns", format!("{:.0}", sleep_p.p99))]);
    let sl = ("timer_slack_ns", SLACK_NS.to_string());
    r.add(BENCH, "sleep_50us_p50_slack1ns", sleep_ps.p50, "ns", &[sl.clone(), ("p99_ns", format!("{:.0}", sleep_ps.p99))]);
    for (d, p) in [("none", &none_ps), ("sync", &sync_ps)] {
        let dur = ("durability", d.to_string());
        r.add(BENCH, "rtt_p50_slack1ns", p.p50, "ns", &[dur.clone(), sl.clone(), s("samples", p.n)]);
        r.add(BENCH, "rtt_p99_slack1ns", p.p99, "ns", &[dur.clone(), sl.clone()]);
        r.add(BENCH, "rtt_p99_9_slack1ns", p.p99_9, "ns", &[dur.clone(), sl.clone()]);
    }

    // Goals.
    let g1_lim = 1.3 * raw_p.p50;
    let g2_lim = 2.0 * raw_p.p99_9;
    let g3_lim = raw_p.p50 + fs_p.p50 + 20_000.0;
    let goals = [
        ("goal_none_p50", "none", none_p.p50, g1_lim, "journal none: RTT p50 <= 1.3x raw p50"),
        ("goal_none_p99_9", "none", none_p.p99_9, g2_lim, "journal none: RTT p99.9 <= 2x raw p99.9"),
        ("goal_sync_p50", "sync", sync_p.p50, g3_lim, "journal sync: RTT p50 <= raw p50 + fdatasync p50 + 20 us"),
    ];
    let mut goal_lines = Vec::new();
    for (name, d, v, lim, what) in goals {
        let pass = v <= lim;
        r.add(BENCH, name, if pass { 1.0 } else { 0.0 }, "pass", &[
            ("durability", d.to_string()),
            ("value_ns", format!("{v:.0}")),
            ("limit_ns", format!("{lim:.0}")),
        ]);
        goal_lines.push(format!(
            "  {}  {what}: {} vs limit {}",
            if pass { "PASS" } else { "FAIL" },
            us(v),
            us(lim)
        ));
    }

    // ---- Throughput.
    let mut tp_lines = Vec::new();
    for d in ["none", "sync"] {
        let srv = if d == "none" {
            srv_sync.pause();
            srv_none.resume();
            &srv_none
        } else {
            srv_none.pause();
            srv_sync.resume();
            &srv_sync
        };
        for (k, &rate) in plan.rates.iter().enumerate() {
            let stage = 1 + k as u64;
            let res = load::run_rate(srv.addr, 2, sessions, rate, plan.rate_secs, stage)?;
            let p = pct(&res.hist);
            let ex = |extra: Vec<(&'static str, String)>| -> Vec<(&'static str, String)> {
                let mut v = vec![
                    ("durability", d.to_string()),
                    ("rate", format!("{rate:.0}")),
                    ("sessions", sessions.to_string()),
                ];
                v.extend(extra);
                v
            };
            r.add(BENCH, "orders_per_sec", res.achieved, "ops/s", &ex(vec![
                s("sent", res.sent),
                s("acked", res.acked),
                s("rejected", res.rejected),
            ]));
            r.add(BENCH, "ack_p50", p.p50, "ns", &ex(vec![]));
            r.add(BENCH, "ack_p99", p.p99, "ns", &ex(vec![]));
            r.add(BENCH, "ack_p99_9", p.p99_9, "ns", &ex(vec![("max_ns", format!("{:.0}", p.max))]));
            let lag = pct(&res.send_lag);
            r.add(BENCH, "send_lag_p50", lag.p50, "ns", &ex(vec![("p99_ns", format!("{:.0}", lag.p99))]));
            tp_lines.push(format!(
                "  {d:<4} offered {rate:>8.0}/s: achieved {:>8.0}/s, ack p50 {} p99 {} p99.9 {} (sender lag p50 {} p99 {}; {} of {} sent acked{}{})",
                res.achieved,
                us(p.p50),
                us(p.p99),
                us(p.p99_9),
                us(lag.p50),
                us(lag.p99),
                res.acked,
                res.sent,
                if res.rejected > 0 { format!(", {} REJECTED", res.rejected) } else { String::new() },
                if res.errors.is_empty() { String::new() } else { format!(", errors: {}", res.errors.join("; ")) },
            ));
        }
    }
    srv_none.stop();
    srv_sync.stop();

    // ---- Summary.
    r.note("");
    r.note(&format!(
        "RTT (closed loop, 1 session, {} blocks interleaved: raw, none, sync with one fdatasync after each round trip, diagnostics; \
         only the measured server runs, the others are SIGSTOPped; blocking reads, TCP_NODELAY):",
        plan.reps
    ));
    r.note(&format!("  raw TCP ping-pong 40B/88B   p50 {}  p99 {}  p99.9 {}", us(raw_p.p50), us(raw_p.p99), us(raw_p.p99_9)));
    for (d, p) in [("none", &none_p), ("sync", &sync_p)] {
        r.note(&format!(
            "  gateway journal {d:<4}        p50 {}  p99 {}  p99.9 {}   (x{:.2} / x{:.2} of raw p50 / p99.9)",
            us(p.p50),
            us(p.p99),
            us(p.p99_9),
            p.p50 / raw_p.p50,
            p.p99_9 / raw_p.p99_9
        ));
    }
    for (d, p) in [("none", &none_ps), ("sync", &sync_ps)] {
        r.note(&format!(
            "  diagnostic: journal {d}, server threads with 1 ns timer slack: p50 {}  p99 {}  p99.9 {}",
            us(p.p50),
            us(p.p99),
            us(p.p99_9)
        ));
    }
    r.note(&format!("  write+fdatasync (88 B)      p50 {}  p99 {}", us(fs_p.p50), us(fs_p.p99)));
    r.note(&format!("  cancel RTT: none p50 {}, sync p50 {}", us(cn_p.p50), us(cs_p.p50)));
    let fmt_reps = |v: &[f64]| v.iter().map(|x| format!("{:.0}", x / 1e3)).collect::<Vec<_>>().join(" ");
    let mut m = rep_p50.clone();
    r.note(&format!(
        "  per-block p50 (µs): raw [{}] none [{}] sync [{}] fdatasync [{}]; medians {:.1} / {:.1} / {:.1} / {:.1}",
        fmt_reps(&rep_p50[0]),
        fmt_reps(&rep_p50[1]),
        fmt_reps(&rep_p50[2]),
        fmt_reps(&rep_p50[3]),
        median(&mut m[0]) / 1e3,
        median(&mut m[1]) / 1e3,
        median(&mut m[2]) / 1e3,
        median(&mut m[3]) / 1e3,
    ));
    r.note(&format!(
        "  std::thread::sleep(50 µs) takes p50 {} p99 {} here (the event loop's idle step while a command is in flight); \
         with 1 ns timer slack p50 {} p99 {}",
        us(sleep_p.p50),
        us(sleep_p.p99),
        us(sleep_ps.p50),
        us(sleep_ps.p99)
    ));
    r.note("GOALS:");
    for l in &goal_lines {
        r.note(l);
    }
    r.note(&format!(
        "THROUGHPUT ({sessions} sessions, open loop, {:.0} s per rate, buys and sells at one price: every second order trades):",
        plan.rate_secs
    ));
    for l in &tp_lines {
        r.note(l);
    }
    r.note(&format!(
        "load average at end {} (the machine is shared: figures vary between runs; compare against the baselines of the same run)",
        loadavg()
    ));
    r.note(&format!("(total {:.1} s)", t_start.elapsed().as_secs_f64()));
    r.finish();
    Ok(())
}
