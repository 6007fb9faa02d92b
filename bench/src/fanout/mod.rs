//! `tickwire-bench fanout`: market-data fan-out to K WebSocket subscribers held by two separate
//! client processes, Tickwire's feed (epoll and/or io_uring backend) against two tokio +
//! tokio-tungstenite + `tokio::sync::broadcast` baselines (`naive`, `tuned`) and, when
//! `TICKWIRE_UWS_BIN` names it (bench/uws/build.sh), uWebSockets (`uws`: one epoll thread,
//! pub/sub), same clients, same stream, same run.
//!
//! Every server runs in its own process (this binary, `--role server`) with a publisher thread: a
//! real engine on random order flow, paced at R market-data updates/s (level deltas and trades;
//! one update alone is a 64-byte DeltaBatch payload). The baselines broadcast exactly the
//! payloads Tickwire's hub produces for the same batches. Clients (`--role client`, two
//! processes, sources 127.0.1.x and 127.0.2.x) subscribe to every instrument, check the
//! per-instrument sequences and record latency from the engine timestamp to receive. The
//! coordinator measures server RSS (idle subscribers), CPU of server and clients, then a phase
//! at 100 updates/s and a sweep of rising rates (×1.5 steps) until delivery stops keeping up: a
//! gap, resync or dead connection, under 95 % of the offered updates, or p99 ≥ 1 s (latency
//! growing without bound). The highest kept-up step is `phase=saturation`; the highest with
//! p99 < 250 ms is `phase=saturation_p99_250ms`. Delivered figures count updates (level changes
//! and trades), which every server sends in the same payloads; Tickwire may pack more of them
//! per WebSocket message (`messages_per_sec` shows how many messages carried them).

mod client;
mod server;
mod stats;

use crate::report::Report;
use crate::Common;
use hdrhistogram::Histogram;
use stats::Counts;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tickwire_feed::BackendKind;

const BENCH: &str = "fanout";
/// Instruments in the stream (every subscriber takes all of them).
const INSTRUMENTS: u32 = 4;
/// Client processes.
const CLIENTS: usize = 2;
/// Fixed-rate phase: updates/s (every subscriber receives all of them), the figure;
/// `--fixed-rate` changes it.
const FIXED_RATE: u64 = 100;

/// Arguments of `tickwire-bench fanout`.
#[derive(clap::Args, Clone, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber counts (comma-separated; default: 2000 with --quick, else 10000,18000).
    #[arg(long, value_delimiter = ',')]
    pub subscribers: Vec<usize>,
    /// Tickwire backend(s): epoll, uring or both.
    #[arg(long, default_value = "both")]
    pub backend: String,
    /// Servers to run (comma-separated from tickwire, naive, tuned, uws; uws needs
    /// TICKWIRE_UWS_BIN, see bench/uws/build.sh, and is skipped without it).
    #[arg(long, value_delimiter = ',', default_value = "tickwire,uws,naive,tuned")]
    pub servers: Vec<String>,
    /// Tickwire feed shards (threads of the server process, SO_REUSEPORT on one port).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Rate of the fixed phase, updates/s per subscriber.
    #[arg(long, default_value_t = FIXED_RATE, value_parser = clap::value_parser!(u64).range(1..))]
    pub fixed_rate: u64,
    /// Run only the fixed phase (no sweep, so no saturation figures).
    #[arg(long)]
    pub no_sweep: bool,
    /// Internal: server or client process.
    #[arg(long, hide = true)]
    pub role: Option<String>,
    /// Internal (server): tickwire, naive, tuned or uws.
    #[arg(long, hide = true, default_value = "tickwire")]
    pub kind: String,
    /// Internal (client): server address.
    #[arg(long, hide = true)]
    pub addr: Option<std::net::SocketAddr>,
    /// Internal (client): first three octets of the source addresses.
    #[arg(long, hide = true, default_value = "127.0.1")]
    pub src_net: String,
    /// Internal (client): subscribers to hold.
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: usize,
}

struct Plan {
    ks: Vec<usize>,
    fixed_secs: f64,
    step_secs: f64,
    warmup_secs: f64,
    /// Warm-up of the fixed phase, the first after the connection storm: new connections ack
    /// every segment at first (TCP quick-ack) and queues and tables grow, which inflated its
    /// p99 by ~60 % at 18 000 subscribers with 1 s. The phase measures the steady state.
    fixed_warmup_secs: f64,
    rates: &'static [u64],
    fixed_rate: u64,
    sweep: bool,
}

/// Entry point (coordinator, or a child role).
pub fn run(a: &FanoutArgs) {
    match a.role.as_deref() {
        Some("server") => {
            let b: BackendKind = a.backend.parse().unwrap_or_else(|e| panic!("{e}"));
            return server::run(&a.kind, b, a.shards, INSTRUMENTS);
        }
        Some("client") => return client::run(a.addr.expect("--addr"), &a.src_net, a.count, INSTRUMENTS),
        Some(r) => panic!("unknown role {r}"),
        None => {}
    }
    let plan = if a.common.quick {
        Plan { ks: vec![2000], fixed_secs: 3.0, step_secs: 1.5, warmup_secs: 0.5, fixed_warmup_secs: 2.0, rates: &[1000, 1500, 2200, 3300, 5000, 7500, 10_000, 15_000, 22_000, 33_000, 50_000, 75_000], fixed_rate: a.fixed_rate, sweep: !a.no_sweep }
    } else {
        Plan { ks: vec![10_000, 18_000], fixed_secs: 6.0, step_secs: 3.0, warmup_secs: 1.0, fixed_warmup_secs: 5.0, rates: &[200, 300, 450, 700, 1000, 1500, 2200, 3300, 5000, 7500, 10_000, 15_000, 22_000, 33_000, 50_000], fixed_rate: a.fixed_rate, sweep: !a.no_sweep }
    };
    let ks = if a.subscribers.is_empty() { plan.ks.clone() } else { a.subscribers.clone() };
    let backends: Vec<BackendKind> = match a.backend.as_str() {
        "both" => BackendKind::ALL.to_vec(),
        b => vec![b.parse().unwrap_or_else(|e| panic!("--backend: {e}"))],
    };
    let mut servers: Vec<(&'static str, Option<BackendKind>)> = Vec::new();
    for s in &a.servers {
        match s.as_str() {
            "tickwire" => {
                for &b in &backends {
                    match b.available() {
                        Ok(()) => servers.push(("tickwire", Some(b))),
                        Err(why) => eprintln!("fanout: skipping tickwire on {b}: {why}"),
                    }
                }
            }
            "naive" => servers.push(("naive", None)),
            "tuned" => servers.push(("tuned", None)),
            "uws" => match std::env::var_os("TICKWIRE_UWS_BIN") {
                Some(p) if std::path::Path::new(&p).is_file() => servers.push(("uws", None)),
                _ => eprintln!("fanout: skipping uws: TICKWIRE_UWS_BIN does not name a binary (bench/uws/build.sh builds one)"),
            },
            s => panic!("--servers: unknown {s}"),
        }
    }
    let mut rep = Report::new(a.common.json);
    rep.note(&format!(
        "fanout: {} instruments, {CLIENTS} client processes, fixed phase {} updates/s per subscriber for {}s, {}; machine: {} cores shared by server, publisher and clients",
        INSTRUMENTS,
        plan.fixed_rate,
        plan.fixed_secs,
        if plan.sweep { format!("sweep {:?} updates/s ({}s steps)", plan.rates, plan.step_secs) } else { "no sweep".to_string() },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    for &k in &ks {
        let mut best: Vec<(&'static str, String, Outcome)> = Vec::new();
        for &(kind, b) in &servers {
            let backend = match (kind, b) {
                (_, Some(b)) => b.name().to_string(),
                ("uws", None) => "epoll".to_string(),
                _ => "tokio".to_string(),
            };
            match run_one(&mut rep, &plan, kind, b, &backend, k, a.shards) {
                Ok(o) => best.push((kind, backend, o)),
                Err(e) => rep.note(&format!("fanout: {kind}/{backend} with {k} subscribers failed: {e}")),
            }
        }
        let find = |name: &str| best.iter().find(|x| x.0 == name).map(|x| x.2);
        let (tuned, uws) = (find("tuned"), find("uws"));
        for (kind, backend, o) in &best {
            if *kind != "tickwire" {
                continue;
            }
            let tags = [("backend", backend.clone()), ("server", kind.to_string()), ("subscribers", k.to_string())];
            // The fixed-rate goal is a p99 under half of uWebSockets': this ratio < 0.5.
            if let Some(u) = uws.filter(|u| u.fixed_p99_us > 0.0) {
                rep.add(BENCH, "latency_p99_ratio_vs_uws", o.fixed_p99_us / u.fixed_p99_us, "x", &[&tags[..], &[("phase", "fixed".to_string())]].concat());
            }
            if !plan.sweep {
                continue; // no saturation figures to compare
            }
            if let Some(t) = tuned {
                if t.delivered > 0.0 {
                    rep.add(BENCH, "delivered_ratio_vs_tungstenite", o.delivered / t.delivered, "x", &tags);
                }
                if t.delivered_p99_250ms > 0.0 {
                    rep.add(BENCH, "delivered_ratio_vs_tungstenite_p99_250ms", o.delivered_p99_250ms / t.delivered_p99_250ms, "x", &tags);
                }
            }
            if let Some(u) = uws.filter(|u| u.delivered > 0.0) {
                rep.add(BENCH, "delivered_ratio_vs_uws", o.delivered / u.delivered, "x", &tags);
            }
        }
        if !plan.sweep {
            continue;
        }
        for (kind, backend, Outcome { saturated, .. }) in &best {
            if !saturated {
                rep.note(&format!("fanout: {kind}/{backend} at {k} subscribers kept up at the highest sweep rate: its saturation figure is a lower bound"));
            }
        }
    }
    rep.finish();
}

/// What one server run gives the comparisons.
#[derive(Clone, Copy)]
struct Outcome {
    /// Highest delivered updates/s that kept up.
    delivered: f64,
    /// The same with p99 < 250 ms.
    delivered_p99_250ms: f64,
    /// Whether a sweep step failed (else `delivered` is a lower bound).
    saturated: bool,
    /// p99 of the fixed phase, µs.
    fixed_p99_us: f64,
}

/// A child process of this binary with line-oriented stdin/stdout.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// A process of the server's own that holds the subscribers (`READY <port> <pid>`).
    io_pid: Option<u32>,
}

impl Proc {
    fn spawn(args: &[String]) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("fanout")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, stdin, lines, io_pid: None })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process whose memory holds the subscribers.
    fn mem_pid(&self) -> u32 {
        self.io_pid.unwrap_or_else(|| self.pid())
    }

    /// CPU seconds of the process and its subscriber process.
    fn cpu(&self) -> f64 {
        cpu(self.pid()) + self.io_pid.map_or(0.0, cpu)
    }

    fn send(&mut self, l: &str) {
        let _ = writeln!(self.stdin, "{l}");
        let _ = self.stdin.flush();
    }

    fn expect(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(format!("no {prefix:?} from pid {} within {timeout:?}", self.pid())),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.send("QUIT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of a process, in seconds.
fn cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (t(11) + t(12)) / hz // utime, stime (fields 14 and 15)
}

/// What the clients saw in one measured window.
#[derive(Default)]
struct Window {
    /// All clients' counters, summed.
    n: Counts,
    secs: f64,
    cpu_server: f64,
    cpu_clients: f64,
    hist: Option<Histogram<u64>>,
    /// Tickwire only: the shard's write passes in the window (from `GET /stats`).
    passes: Option<Passes>,
}

/// A Tickwire feed's write passes over a window (every shard's): an update waits up to about one
/// pass for its subscriber's write, so the pass time is the server's share of the fan-out latency.
#[derive(Clone, Copy, Default)]
struct Passes {
    /// Mean pass, over all shards' passes.
    avg_ms: f64,
    /// Longest pass of any shard in the 1 s ticks sampled during the window.
    max_ms: f64,
    /// Share of the time between the first and last sample a shard spent in write passes
    /// (averaged over the shards).
    busy_pct: f64,
}

/// A feed's pass counters (`HubStats::write_passes`, `write_pass_ns_sum`, `write_pass_ns_max`).
#[derive(Clone, Copy)]
struct PassCounters {
    passes: u64,
    ns_sum: u64,
    ns_max: u64,
}

/// `GET /stats` from a Tickwire feed: the answering shard (`pid`, `shard`) and its counters;
/// `None` if it fails or a step of it (connect, each read) takes over 2 s (an overloaded shard
/// answers between passes).
fn pass_stats(port: u16) -> Option<((u64, u64), PassCounters)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let field = |name: &str| -> Option<u64> {
        let key = format!("\"{name}\":");
        let at = body.find(&key)? + key.len();
        body[at..].split([',', '}']).next()?.parse().ok()
    };
    let shard = (field("pid")?, field("shard")?);
    Some((shard, PassCounters { passes: field("write_passes")?, ns_sum: field("write_pass_ns_sum")?, ns_max: field("write_pass_ns_max")? }))
}

/// Every shard's counters on `port`, summed (`ns_max`: the largest): SO_REUSEPORT picks the shard
/// that answers a connection, so it asks from new connections until each of the `shards` has
/// answered, at most `16 × shards` times (`None` if one never did: no partial sums; with 2
/// shards that is a chance of 2^-31 per sample, with 8 about 3 in 10^7).
fn all_pass_stats(port: u16, shards: usize) -> Option<PassCounters> {
    let want = shards.max(1);
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(want);
    let mut t = PassCounters { passes: 0, ns_sum: 0, ns_max: 0 };
    for _ in 0..16 * want {
        if let Some((id, p)) = pass_stats(port) {
            if !seen.contains(&id) {
                seen.push(id);
                t.passes += p.passes;
                t.ns_sum += p.ns_sum;
                t.ns_max = t.ns_max.max(p.ns_max);
            }
        }
        if seen.len() == want {
            return Some(t);
        }
    }
    None
}

/// Samples a feed's write passes about every 0.9 s (`write_pass_ns_max` is a per-tick gauge, 1 s
/// ticks) on its own thread, so a slow answer never stretches the clients' window.
struct PassPoller {
    shards: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, PassCounters)>>,
}

impl PassPoller {
    fn start(port: u16, shards: usize) -> PassPoller {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            // Bounded: one sample per 0.9 s until stopped (a window is seconds long).
            loop {
                let stopping = flag.load(Ordering::Acquire);
                if let Some(p) = all_pass_stats(port, shards) {
                    v.push((Instant::now(), p));
                }
                if stopping {
                    return v; // that was the sample at the window's end
                }
                let next = Instant::now() + Duration::from_millis(900);
                while !flag.load(Ordering::Acquire) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        PassPoller { shards: shards.max(1), stop, thread }
    }

    /// Stops and sums up the samples (`None` with fewer than two, or no pass between them).
    fn finish(self) -> Option<Passes> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let v = self.thread.join().ok()?;
        let (&(t0, a), &(t1, b)) = (v.first()?, v.last()?);
        (b.passes > a.passes).then(|| Passes {
            avg_ms: b.ns_sum.saturating_sub(a.ns_sum) as f64 / (b.passes - a.passes) as f64 / 1e6,
            // The first sample's gauge is the tick before the window.
            max_ms: v.iter().skip(1).map(|x| x.1.ns_max).max().unwrap_or(0) as f64 / 1e6,
            busy_pct: b.ns_sum.saturating_sub(a.ns_sum) as f64 / 1e9 / (t1 - t0).as_secs_f64().max(1e-9) * 100.0
                / self.shards as f64,
        })
    }
}

impl Window {
    fn pct(&self, q: f64) -> f64 {
        self.hist.as_ref().map_or(f64::NAN, |h| h.value_at_quantile(q) as f64)
    }
}

/// Runs one window at `rate`; `stats_port`: a Tickwire feed (port, shards) to read its write
/// passes from.
fn measure(srv: &mut Proc, clients: &mut [Proc], rate: u64, warmup: f64, secs: f64, stats_port: Option<(u16, usize)>) -> Result<Window, String> {
    srv.send(&format!("RATE {rate}"));
    std::thread::sleep(Duration::from_secs_f64(warmup));
    for c in clients.iter_mut() {
        c.send("RESET");
    }
    let t0 = Instant::now();
    let s0 = srv.cpu();
    let c0: f64 = clients.iter().map(|c| cpu(c.pid())).sum();
    let poller = stats_port.map(|(port, shards)| PassPoller::start(port, shards));
    std::thread::sleep(Duration::from_secs_f64(secs));
    for c in clients.iter_mut() {
        c.send("REPORT");
    }
    // The window ends here, whatever the feed's /stats answers cost afterwards.
    let secs = t0.elapsed().as_secs_f64();
    let cpu_server = (srv.cpu() - s0) / secs * 100.0;
    let cpu_clients = (clients.iter().map(|c| cpu(c.pid())).sum::<f64>() - c0) / secs * 100.0;
    let passes = poller.and_then(PassPoller::finish);
    let mut w = Window { hist: Some(Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?), passes, ..Window::default() };
    for c in clients.iter() {
        let st = c.expect(stats::PREFIX, Duration::from_secs(30))?;
        w.n.add(&Counts::parse_line(&st)?);
        let h = c.expect("HIST", Duration::from_secs(30))?;
        if let Some(hist) = w.hist.as_mut() {
            for pair in h.split_whitespace().skip(1) {
                if let Some((a, b)) = pair.split_once(':') {
                    if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                        let _ = hist.record_n(a, b);
                    }
                }
            }
        }
        c.expect("END", Duration::from_secs(30))?;
    }
    (w.secs, w.cpu_server, w.cpu_clients) = (secs, cpu_server, cpu_clients);
    srv.send("RATE 0");
    Ok(w)
}

/// p99 bound of "kept up": a latency growing without bound over a step passes it within seconds.
const KEPT_UP_P99_US: f64 = 1_000_000.0;
/// The stricter latency bound also reported (`phase=saturation_p99_250ms`).
const STRICT_P99_US: f64 = 250_000.0;

/// Whether a window kept up: every expected update arrived, in sequence (no gap, resync or dead
/// connection, ≥ 95 % of the offered updates), with p99 under `p99_us`.
fn kept_up(w: &Window, k: usize, rate: u64, p99_us: f64) -> bool {
    let expected = k as f64 * rate as f64 * w.secs;
    w.n.gaps == 0 && w.n.snapshots == 0 && w.n.dead == 0 && w.n.updates as f64 >= 0.95 * expected && w.pct(0.99) < p99_us
}

/// The best kept-up step under one latency bound.
#[derive(Clone, Copy, Default)]
struct Best {
    delivered: f64,
    rate: u64,
    p99_us: f64,
}

impl Best {
    fn offer(&mut self, w: &Window, k: usize, rate: u64, bound_us: f64) -> bool {
        let ok = kept_up(w, k, rate, bound_us);
        let d = w.n.updates as f64 / w.secs;
        if ok && d > self.delivered {
            *self = Best { delivered: d, rate, p99_us: w.pct(0.99) };
        }
        ok
    }
}

/// Runs one server with `k` subscribers.
#[allow(clippy::too_many_arguments)]
fn run_one(rep: &mut Report, plan: &Plan, kind: &'static str, b: Option<BackendKind>, backend: &str, k: usize, shards: usize) -> Result<Outcome, String> {
    eprintln!("fanout: {kind}/{backend}, {k} subscribers");
    let mut srv = Proc::spawn(&[
        "--role".into(),
        "server".into(),
        "--kind".into(),
        kind.into(),
        "--backend".into(),
        b.unwrap_or_default().name().into(),
        "--shards".into(),
        shards.to_string(),
    ])?;
    let ready = srv.expect("READY", Duration::from_secs(30))?;
    let port: u16 = ready.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or("bad READY line")?;
    // `READY <port> <pid>`: the subscribers live in that process (uws); its memory is the
    // figure, its CPU is added to the server's.
    srv.io_pid = ready.split_whitespace().nth(2).and_then(|p| p.parse().ok());
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss(srv.mem_pid());
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let n = k / CLIENTS + usize::from(c < k % CLIENTS);
        clients.push(Proc::spawn(&[
            "--role".into(),
            "client".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--src-net".into(),
            format!("127.0.{}", c + 1),
            "--count".into(),
            n.to_string(),
        ])?);
    }
    for c in &clients {
        c.expect("CONNECTED", Duration::from_secs(300))?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = rss(srv.mem_pid());
    let tags = |extra: &[(&'static str, String)]| {
        let mut v = vec![("backend", backend.to_string()), ("server", kind.to_string()), ("subscribers", k.to_string())];
        v.extend_from_slice(extra);
        v
    };
    rep.add(BENCH, "rss_per_sub_bytes", rss1.saturating_sub(rss0) as f64 / k as f64, "bytes", &tags(&[]));

    let stats_port = (kind == "tickwire").then_some((port, shards.max(1)));
    let w = measure(&mut srv, &mut clients, plan.fixed_rate, plan.fixed_warmup_secs, plan.fixed_secs, stats_port)?;
    let fixed = tags(&[("phase", "fixed".into()), ("rate", plan.fixed_rate.to_string())]);
    report_window(rep, &w, &fixed);
    let fixed_p99_us = w.pct(0.99);

    let (mut best, mut strict) = (Best::default(), Best::default());
    best.offer(&w, k, plan.fixed_rate, KEPT_UP_P99_US);
    strict.offer(&w, k, plan.fixed_rate, STRICT_P99_US);
    let mut saturated = false;
    let rates: &[u64] = if plan.sweep { plan.rates } else { &[] };
    for &rate in rates {
        std::thread::sleep(Duration::from_millis(300));
        let w = measure(&mut srv, &mut clients, rate, plan.warmup_secs, plan.step_secs, stats_port)?;
        let ok = best.offer(&w, k, rate, KEPT_UP_P99_US);
        strict.offer(&w, k, rate, STRICT_P99_US);
        let t = tags(&[("phase", "sweep".into()), ("rate", rate.to_string()), ("kept_up", ok.to_string())]);
        rep.add(BENCH, "sweep_delivered_per_sec", w.n.updates as f64 / w.secs, "upd/s", &t);
        rep.add(BENCH, "sweep_latency_p99", w.pct(0.99), "us", &t);
        rep.add(BENCH, "sweep_cpu_server", w.cpu_server, "%", &t);
        if let Some(p) = w.passes {
            rep.add(BENCH, "sweep_write_pass_ms_avg", p.avg_ms, "ms", &t);
        }
        if w.n.gaps > 0 || w.n.snapshots > 0 || w.n.dead > 0 {
            rep.add(BENCH, "sweep_gaps", (w.n.gaps + w.n.snapshots + w.n.dead) as f64, "count", &t);
        }
        if !ok {
            saturated = true;
            break;
        }
    }
    // Without a sweep the fixed phase alone says nothing about saturation.
    for (phase, b) in [("saturation", best), ("saturation_p99_250ms", strict)].into_iter().filter(|_| plan.sweep) {
        let t = tags(&[("phase", phase.into()), ("rate", b.rate.to_string())]);
        rep.add(BENCH, "delivered_per_sec", b.delivered, "upd/s", &t);
        rep.add(BENCH, "latency_p99", b.p99_us, "us", &t);
    }
    drop(clients);
    drop(srv);
    std::thread::sleep(Duration::from_millis(500));
    Ok(Outcome { delivered: best.delivered, delivered_p99_250ms: strict.delivered, saturated, fixed_p99_us })
}

fn report_window(rep: &mut Report, w: &Window, t: &[(&'static str, String)]) {
    rep.add(BENCH, "delivered_per_sec", w.n.updates as f64 / w.secs, "upd/s", t);
    rep.add(BENCH, "messages_per_sec", w.n.msgs as f64 / w.secs, "msg/s", t);
    rep.add(BENCH, "latency_p50", w.pct(0.5), "us", t);
    rep.add(BENCH, "latency_p99", w.pct(0.99), "us", t);
    rep.add(BENCH, "latency_p99_9", w.pct(0.999), "us", t);
    rep.add(BENCH, "cpu_server", w.cpu_server, "%", t);
    rep.add(BENCH, "cpu_clients", w.cpu_clients, "%", t);
    rep.add(BENCH, "gaps", (w.n.gaps + w.n.snapshots + w.n.dead + w.n.errors) as f64, "count", t);
    if let Some(p) = w.passes {
        rep.add(BENCH, "write_pass_ms_avg", p.avg_ms, "ms", t);
        rep.add(BENCH, "write_pass_ms_max", p.max_ms, "ms", t);
        rep.add(BENCH, "write_busy", p.busy_pct, "%", t);
    }
}
