//! `tickwire-bench c100k`: many market-data subscribers on one machine.
//!
//! ```text
//! cargo run --release -p tickwire-bench -- c100k --subscribers 100000 [--shards S] [--client-procs P]
//!     [--rate R] [--duration SECS] [--json] [--chart FILE] [--attach ADDR]
//!     [--server tickwire|inproc] [--durability none|sync] [--sessions N] [--server-bin PATH]
//! ```
//!
//! What runs (backend `shm-shards`), `--server tickwire` (default): `tickwire serve --feed-shm RING
//! --no-feed --durability none|sync` as a child process (generated config in a temporary
//! directory, `gateway.rs`), fed `--rate` commands/s over `--instruments` instruments through its
//! order-entry gateway by `--sessions` logged-on sessions (open loop); the server writes its
//! durable, redacted events into the shared-memory ring RING (+ RING.image). `--server inproc`
//! (the earlier behaviour): a matching engine in this process (a thread, `engine.rs`) with the
//! same kind of generated flow writes the ring directly. Then, in both: `S` `tickwire-feed --shm`
//! shard processes attached to that ring, all listening on one port (SO_REUSEPORT: the kernel
//! spreads the connections); `P` client processes (this binary, `c100k-client`), each under the
//! 20000 open-file limit (soft RLIMIT_NOFILE raised to the hard one), each binding its sockets to
//! its own /24 of 127.0.0.0/8 (127.0.1.x, 127.0.2.x, …) so the 4-tuple space never runs out. The
//! server's own feed (threads of one process, ~19K sockets at most under this limit) is off.
//!
//! Phases: start the shards, sample their idle RSS; ramp the connections at `--connect-rate` (time
//! to full population, connect rate, handshake failures); then `--duration` seconds of steady
//! state while every subscriber listens (delivered messages/s, fan-out latency engine stamp →
//! client receive — with `--server tickwire` the stamp is the gateway's CLOCK_REALTIME receive time
//! of the command, the clients' clock too —, merged over the client processes, sequence gaps and
//! conflations); shard RSS
//! and CPU from /proc throughout. Everything started is killed when this ends (also on Ctrl-C or a
//! panic: the guards' Drop). `--attach ADDR` measures an already running feed instead (no engine,
//! no shards started; latency then comes from whatever order flow that feed has).
//!
//! The `tuned` tokio-tungstenite baseline of the fanout benchmark is run side by side once that
//! benchmark exists (it does not yet: the output says so).

mod chart;
pub mod client;
pub mod shard;
mod engine;
mod gateway;
pub mod sysctl;

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Most sockets one process holds (the hard open-file limit here is 20000).
pub const PER_PROCESS: usize = 18_000;

#[derive(clap::Args, Debug, Clone)]
pub struct C100kArgs {
    /// Subscriber connections in all.
    #[arg(long, default_value_t = 100_000)]
    pub subscribers: usize,
    /// Feed shard processes on the one port (default: enough for 18000 connections each).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Client processes (default: enough for 18000 connections each).
    #[arg(long)]
    pub client_procs: Option<usize>,
    /// Engine order flow, commands per second (each subscriber receives about this many updates
    /// per second divided by --instruments, plus trades).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Instruments; subscriber i listens to instrument 1 + i % N.
    #[arg(long, default_value_t = 1)]
    pub instruments: u32,
    /// New connections per second, all clients together.
    #[arg(long, default_value_t = 10_000.0)]
    pub connect_rate: f64,
    /// Seconds of steady state once the population is complete (or the ramp gave up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Give up ramping after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub ramp_timeout: f64,
    /// Where the order flow enters: `tickwire` = a `tickwire serve` child process (`--feed-shm`
    /// ring for the shards) fed over its order-entry gateway by `--sessions` sessions;
    /// `inproc` = a matching engine thread in this process writing the ring directly.
    #[arg(long, default_value = "tickwire", value_parser = ["tickwire", "inproc"])]
    pub server: String,
    /// Journal durability of `tickwire serve` (`--server tickwire`).
    #[arg(long, default_value = "none", value_parser = ["none", "sync"])]
    pub durability: String,
    /// The `tickwire` server binary (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Order-entry sessions driving the flow (`--server tickwire`); buys and sells go on
    /// different sessions when there are two or more.
    #[arg(long, default_value_t = 2)]
    pub sessions: u64,
    /// Measure an already running feed at this address (starts no engine and no shards).
    #[arg(long)]
    pub attach: Option<SocketAddr>,
    /// The tickwire-feed binary (default: next to this one).
    #[arg(long)]
    pub feed_bin: Option<PathBuf>,
    /// PNG chart of the latency distribution and the connection ramp.
    #[arg(long, default_value = "c100k.png")]
    pub chart: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip the tokio-tungstenite baseline (fanout bench's `tuned` server, one process, at most
    /// 18000 subscribers: the same population when it fits, else 18000).
    #[arg(long)]
    pub no_baseline: bool,
    /// Recommended kernel settings to compare /proc/sys against (warnings only).
    #[arg(long, default_value = sysctl::CONF)]
    pub sysctl_conf: PathBuf,
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Child processes killed (SIGKILL) and reaped on drop: normal end, error, Ctrl-C, panic.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Removes the shm ring file on drop.
struct ShmFile(PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
    // async-signal-safe; it makes the child die with this process even on SIGKILL.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// RSS (bytes) and CPU time (clock ticks) of a process, from /proc.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss_kb * 1024, ticks))
}

/// The ramp stops when the machine's available memory falls below this.
const MIN_MEM_AVAILABLE: u64 = 3 << 30;

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[derive(Default, Clone)]
struct ClientResult {
    established: u64,
    connect_failures: u64,
    handshake_failures: u64,
    closed_by_server: u64,
    measured_msgs: u64,
    gaps: u64,
    conflations: u64,
    errors: u64,
    full_ns: u64,
    error: String,
}

fn parse_result(line: &str) -> ClientResult {
    let mut r = ClientResult::default();
    for kv in line.split_whitespace().skip(1) {
        let Some((k, v)) = kv.split_once('=') else { continue };
        let n = v.parse::<u64>().unwrap_or(0);
        match k {
            "established" => r.established = n,
            "connect_failures" => r.connect_failures = n,
            "handshake_failures" => r.handshake_failures = n,
            "closed_by_server" => r.closed_by_server = n,
            "measured_msgs" => r.measured_msgs = n,
            "gaps" => r.gaps = n,
            "conflations" => r.conflations = n,
            "errors" => r.errors = n,
            "full_ns" => r.full_ns = n,
            "error" => r.error = v.trim_matches('"').to_string(),
            _ => {}
        }
    }
    r
}

/// Everything one population run measured.
pub struct Outcome {
    pub server: &'static str,
    pub backend: String,
    pub target: usize,
    pub connections: u64,
    pub connect_rate: f64,
    pub time_to_full_s: Option<f64>,
    pub handshake_failures: u64,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub delivered_per_sec: f64,
    pub per_sub_rate: f64,
    pub hist: Histogram<u64>,
    pub rss_idle: u64,
    pub rss_full: u64,
    pub cpu_pct: f64,
    pub client_cpu_pct: f64,
    /// Machine load average (1 min) during the measurement.
    pub load: f64,
    pub gaps: u64,
    pub conflations: u64,
    pub errors: u64,
    pub ramp: Vec<(f64, u64)>,
    pub commands: u64,
    pub first_error: String,
    /// `gateway` (through tickwire serve), `inproc` (engine thread in the bench) or `n/a`.
    pub order_path: &'static str,
    /// CPU of the `tickwire serve` process in the window (% of one core).
    pub serve_cpu_pct: Option<f64>,
    /// Execution reports in the window: accepted, rejected, fills (incl. partial), cancelled,
    /// send errors.
    pub oe: [u64; 5],
}

fn commands(flow: &Option<engine::OrderFlow>, driver: &Option<gateway::Driver>) -> u64 {
    match (flow, driver) {
        (Some(f), _) => f.commands.load(Ordering::Relaxed),
        (None, Some(d)) => d.counters.sent.load(Ordering::Relaxed),
        _ => 0,
    }
}

fn oe_counts(driver: &Option<gateway::Driver>) -> [u64; 5] {
    match driver {
        Some(d) => {
            let c = &d.counters;
            [&c.accepted, &c.rejected, &c.fills, &c.cancelled, &c.send_errors].map(|x| x.load(Ordering::Relaxed))
        }
        None => [0; 5],
    }
}

fn server_bin(a: &C100kArgs) -> Result<PathBuf, String> {
    let bin = match &a.server_bin {
        Some(p) => p.clone(),
        None => self_exe()?.with_file_name("tickwire"),
    };
    if !bin.exists() {
        return Err(format!(
            "server binary {} not found: build it first (`cargo build --release -p tickwire-gateway`), pass --server-bin, or use --server inproc",
            bin.display()
        ));
    }
    Ok(bin)
}

impl Outcome {
    fn rss_per_conn(&self) -> f64 {
        if self.connections == 0 {
            0.0
        } else {
            self.rss_full.saturating_sub(self.rss_idle) as f64 / self.connections as f64
        }
    }
}

pub fn run(a: &C100kArgs) {
    let nofile = raise_nofile();
    // SAFETY: installing an async-signal-safe handler (an atomic store).
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    let per = (nofile as usize).saturating_sub(500).clamp(100, PER_PROCESS);
    let shards = a.shards.unwrap_or_else(|| a.subscribers.div_ceil(per).max(1));
    let procs = a.client_procs.unwrap_or_else(|| a.subscribers.div_ceil(per).max(1));
    if a.subscribers.div_ceil(procs) > per {
        eprintln!(
            "c100k: warning: {} connections per client process exceed the open-file limit ({nofile}); use more --client-procs",
            a.subscribers.div_ceil(procs)
        );
    }
    let need = sysctl::Need {
        connections: a.subscribers as u64,
        per_process: a.subscribers.div_ceil(procs.min(shards).max(1)) as u64,
        accept_rate_per_shard: (a.connect_rate / shards as f64) as u64,
        per_source_addr: (a.subscribers.div_ceil(procs * 250)) as u64,
    };
    for w in sysctl::warnings(&a.sysctl_conf, &need) {
        eprintln!("c100k: warning: {w}");
    }
    let out = match run_tickwire(a, shards, procs, false) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("c100k: error: {e}");
            std::process::exit(1);
        }
    };
    let mut outs = vec![out];
    // The fanout benchmark's `tuned` baseline: one process, so at most PER_PROCESS subscribers.
    if a.attach.is_none() && !a.no_baseline {
        let n = a.subscribers.min(per);
        if !a.json {
            eprintln!("c100k: baseline (tuned tokio-tungstenite) with {n} subscribers");
        }
        let b = C100kArgs { subscribers: n, ..a.clone() };
        match run_tickwire(&b, 1, n.div_ceil(per).max(1), true) {
            Ok(o) => outs.push(o),
            Err(e) => eprintln!("c100k: baseline not measured: {e}"),
        }
    }
    report(a, &outs);
}

fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("own path: {e}"))
}

fn run_tickwire(a: &C100kArgs, shards: usize, procs: usize, baseline: bool) -> Result<Outcome, String> {
    let mut children = Children(Vec::new());
    // Kept open for the baseline server: its stdin closing means QUIT.
    let mut _baseline_stdin: Option<ChildStdin> = None;
    let mut _shm = None;
    let mut flow = None;
    // Declared after `children`: dropped before them (the driver first, then the server).
    let mut serve: Option<gateway::Serve> = None;
    let mut driver: Option<gateway::Driver> = None;
    let mut shard_pids = Vec::new();
    let mut shard_kind = "attached";
    let addr = match a.attach {
        Some(addr) => addr,
        None if baseline => {
            let mut c = Command::new(self_exe()?);
            c.args(["fanout", "--role", "server", "--kind", "tuned", "--backend", "epoll"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = spawn(&mut c).map_err(|e| format!("baseline server: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("baseline stdin")?;
            let out = child.stdout.take().ok_or("baseline stdout")?;
            shard_pids.push(child.id());
            children.0.push(("baseline server".into(), child));
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map_err(|e| format!("baseline server: {e}"))?;
            let port: u16 = line
                .strip_prefix("READY ")
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| format!("baseline server said {line:?}"))?;
            // Its publisher's rate is in updates/s, integer.
            let r = a.rate.round().max(1.0) as u64;
            stdin.write_all(format!("RATE {r}\n").as_bytes()).and_then(|_| stdin.flush()).map_err(|e| e.to_string())?;
            _baseline_stdin = Some(stdin);
            shard_kind = "tuned tokio-tungstenite + broadcast (fanout bench), 1 process, 4 instruments, all to every subscriber";
            SocketAddr::from(([127, 0, 0, 1], port))
        }
        None => {
            let feed_bin = match &a.feed_bin {
                Some(p) => p.clone(),
                None => self_exe()?.with_file_name("tickwire-feed"),
            };
            // Without a built tickwire-feed next to this binary (e.g. `cargo test -p
            // tickwire-bench`), the shards run as this binary's `c100k-shard` mode: the same
            // library code (FeedShard + ShmSource) as `tickwire-feed --shm`.
            let own_shard = !feed_bin.exists();
            if own_shard && a.feed_bin.is_some() {
                return Err(format!("--feed-bin {}: not found", feed_bin.display()));
            }
            let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
            let path = dir.join(format!("tickwire-c100k-{}", std::process::id()));
            let producer = if a.server == "tickwire" {
                let bin = server_bin(a)?;
                let s = gateway::Serve::start(&bin, &path, &a.durability, a.instruments, a.sessions.max(1))?;
                if !a.json {
                    eprintln!("c100k: tickwire serve (pid {}) order entry on {}, ring {}", s.pid, s.addr, path.display());
                }
                serve = Some(s);
                None
            } else {
                let p = engine::OrderFlow::create_ring(&path)?;
                _shm = Some(ShmFile(path.clone()));
                Some(p)
            };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("free port: {e}"))?
                .port();
            let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
            let (tx, rx) = mpsc::channel();
            let instruments: Vec<String> = (1..=a.instruments).map(|i| i.to_string()).collect();
            for s in 0..shards {
                let mut c = if own_shard {
                    let mut c = Command::new(self_exe()?);
                    c.arg("c100k-shard");
                    c
                } else {
                    Command::new(&feed_bin)
                };
                c.args(["--listen", &addr.to_string(), "--shm"])
                    .arg(&path)
                    .args(["--instruments", &instruments.join(","), "--poll-us", "500"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let mut child = spawn(&mut c).map_err(|e| format!("{}: {e}", feed_bin.display()))?;
                let err = child.stderr.take();
                shard_pids.push(child.id());
                children.0.push((format!("shard {s}"), child));
                let tx = tx.clone();
                std::thread::spawn(move || {
                    if let Some(err) = err {
                        for line in BufReader::new(err).lines().map_while(Result::ok) {
                            let _ = tx.send(line);
                        }
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut listening = 0;
            while listening < shards {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) if l.contains("listening on") => listening += 1,
                    Ok(l) if l.contains("rror") => return Err(format!("feed shard: {l}")),
                    Ok(_) => {}
                    Err(_) => return Err(format!("only {listening} of {shards} feed shards started within 20 s")),
                }
            }
            match (producer, &serve) {
                (Some(p), _) => flow = Some(engine::OrderFlow::start(p, a.rate, a.instruments)?),
                (None, Some(s)) => driver = Some(gateway::Driver::start(s.addr, a.rate, a.instruments, a.sessions.max(1))?),
                (None, None) => return Err("no order flow".into()),
            }
            shard_kind = if own_shard { "tickwire-bench c100k-shard (tickwire-feed's --shm code)" } else { "tickwire-feed --shm" };
            addr
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle: u64 = shard_pids.iter().filter_map(|&p| proc_sample(p)).map(|s| s.0).sum();
    // Clients.
    let exe = self_exe()?;
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    let mut client_pids = Vec::new();
    let mut base = a.subscribers / procs;
    if base == 0 {
        base = 1;
    }
    for p in 0..procs {
        let conns = if p + 1 == procs { a.subscribers - base * (procs - 1) } else { base };
        let mut c = Command::new(&exe);
        c.args([
            "c100k-client",
            "--addr",
            &addr.to_string(),
            "--conns",
            &conns.to_string(),
            "--connect-rate",
            &(a.connect_rate / procs as f64).to_string(),
            "--src-net",
            &((p % 250) + 1).to_string(),
            "--instruments",
            &a.instruments.to_string(),
            "--ramp-timeout",
            &a.ramp_timeout.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = spawn(&mut c).map_err(|e| format!("client process: {e}"))?;
        stdins.push(child.stdin.take().ok_or("client stdin")?);
        let out = child.stdout.take().ok_or("client stdout")?;
        client_pids.push(child.id());
        children.0.push((format!("client {p}"), child));
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((p, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let t0 = Instant::now();
    let mut est = vec![0u64; procs];
    let mut failed = vec![0u64; procs];
    let mut ramp: Vec<(f64, u64)> = vec![(0.0, 0)];
    let mut full_at: Option<f64> = None;
    let mut measure_from: Option<(Instant, u64, u64)> = None;
    let mut rss_full = 0u64;
    let mut results: Vec<Option<ClientResult>> = vec![None; procs];
    let mut hists: Vec<Histogram<u64>> = Vec::new();
    let mut last_sample = Instant::now();
    let mut cpu_ticks_at_measure = 0u64;
    let mut cpu_ticks_end = 0u64;
    let (mut client_ticks_at_measure, mut client_ticks_end) = (0u64, 0u64);
    let (mut load_at_measure, mut load_end) = (0.0f64, 0.0f64);
    let (mut serve_ticks_at_measure, mut serve_ticks_end) = (0u64, 0u64);
    let (mut oe_at_measure, mut oe_end) = ([0u64; 5], [0u64; 5]);
    let bar_every = Duration::from_secs(2);
    let mut last_print = Instant::now();
    let mut stopped = false;
    let mut held: Option<String> = None;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted: every started process was killed".into());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((p, line)) => {
                if let Some(rest) = line.strip_prefix("progress ") {
                    let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                    est[p] = v.first().copied().unwrap_or(0);
                    failed[p] = v.get(1).copied().unwrap_or(0);
                } else if line.starts_with("result ") {
                    results[p] = Some(parse_result(&line));
                } else if let Some(h) = line.strip_prefix("hist") {
                    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds");
                    for pair in h.trim().split(',').filter(|s| !s.is_empty()) {
                        if let Some((v, c)) = pair.split_once(':') {
                            let (v, c) = (v.parse::<u64>().unwrap_or(0), c.parse::<u64>().unwrap_or(0));
                            let _ = hist.record_n(v.clamp(1_000, 600_000_000_000), c);
                        }
                    }
                    hists.push(hist);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let total: u64 = est.iter().sum();
        if last_sample.elapsed() >= Duration::from_millis(250) {
            last_sample = Instant::now();
            ramp.push((t0.elapsed().as_secs_f64(), total));
            for (name, c) in &mut children.0 {
                if let Ok(Some(st)) = c.try_wait() {
                    if name.starts_with("shard") {
                        return Err(format!("{name} exited during the run ({st})"));
                    }
                }
            }
            if let Some(st) = serve.as_mut().and_then(|s| s.exited()) {
                return Err(format!("tickwire serve exited during the run ({st})"));
            }
        }
        if !a.json && last_print.elapsed() >= bar_every && measure_from.is_none() {
            last_print = Instant::now();
            eprintln!(
                "c100k: {:6.1} s  {total}/{} connected, {} failed",
                t0.elapsed().as_secs_f64(),
                a.subscribers,
                failed.iter().sum::<u64>()
            );
        }
        // Guard the shared machine: stop opening connections when memory runs short.
        if measure_from.is_none() && held.is_none() {
            if let Some(avail) = mem_available() {
                if avail < MIN_MEM_AVAILABLE {
                    held = Some(format!(
                        "ramp stopped at {total} connections: MemAvailable {} MiB < {} MiB",
                        avail >> 20,
                        MIN_MEM_AVAILABLE >> 20
                    ));
                    for s in &mut stdins {
                        let _ = s.write_all(b"hold\n").and_then(|_| s.flush());
                    }
                    eprintln!("c100k: warning: {}", held.as_deref().unwrap_or(""));
                }
            }
        }
        // No progress for 10 s once the ramp should be over (or after a memory hold): measure
        // what is there.
        let expected = a.subscribers as f64 / a.connect_rate.max(1.0);
        let no_progress = ramp.len() > 40 && ramp[ramp.len() - 40].1 == total;
        let stalled = no_progress && (held.is_some() || t0.elapsed().as_secs_f64() > expected + 10.0);
        if measure_from.is_none()
            && (total as usize >= a.subscribers || t0.elapsed().as_secs_f64() > a.ramp_timeout || stalled)
        {
            if total as usize >= a.subscribers {
                full_at = Some(t0.elapsed().as_secs_f64());
            }
            // Let the last snapshots go out, then measure.
            std::thread::sleep(Duration::from_millis(500));
            rss_full = shard_pids.iter().filter_map(|&p| proc_sample(p)).map(|s| s.0).sum();
            cpu_ticks_at_measure = shard_pids.iter().filter_map(|&p| proc_sample(p)).map(|s| s.1).sum();
            client_ticks_at_measure = client_pids.iter().filter_map(|&p| proc_sample(p)).map(|s: (u64, u64)| s.1).sum();
            load_at_measure = loadavg();
            let cmds = commands(&flow, &driver);
            serve_ticks_at_measure = serve.as_ref().and_then(|s| proc_sample(s.pid)).map_or(0, |s| s.1);
            oe_at_measure = oe_counts(&driver);
            for s in &mut stdins {
                let _ = s.write_all(b"measure\n").and_then(|_| s.flush());
            }
            measure_from = Some((Instant::now(), cmds, 0));
            if !a.json {
                eprintln!("c100k: {total} connected after {:.1} s; measuring {} s", t0.elapsed().as_secs_f64(), a.duration);
            }
        }
        if let Some((m0, _, _)) = measure_from {
            if !stopped && m0.elapsed().as_secs_f64() >= a.duration {
                stopped = true;
                let samples: Vec<(u64, u64)> = shard_pids.iter().filter_map(|&p| proc_sample(p)).collect();
                cpu_ticks_end = samples.iter().map(|s| s.1).sum();
                client_ticks_end = client_pids.iter().filter_map(|&p| proc_sample(p)).map(|s: (u64, u64)| s.1).sum();
                load_end = loadavg();
                rss_full = rss_full.max(samples.iter().map(|s| s.0).sum());
                for s in &mut stdins {
                    let _ = s.write_all(b"stop\n").and_then(|_| s.flush());
                }
                let cmds = commands(&flow, &driver);
                serve_ticks_end = serve.as_ref().and_then(|s| proc_sample(s.pid)).map_or(0, |s| s.1);
                oe_end = oe_counts(&driver);
                measure_from = Some((m0, measure_from.map_or(0, |m| m.1), cmds));
            }
        }
        if stopped && results.iter().all(Option::is_some) && hists.len() == procs {
            break;
        }
    }
    let (m0, c0, c1) = measure_from.ok_or("the clients ended before the measurement")?;
    let _ = m0;
    let secs = a.duration;
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("bounds");
    for h in &hists {
        let _ = hist.add(h);
    }
    let rs: Vec<ClientResult> = results.into_iter().flatten().collect();
    let sum = |f: fn(&ClientResult) -> u64| rs.iter().map(f).sum::<u64>();
    let connections = sum(|r| r.established);
    let delivered = sum(|r| r.measured_msgs) as f64 / secs;
    let ramp_end = full_at.unwrap_or(a.ramp_timeout);
    let cpu_pct = (cpu_ticks_end.saturating_sub(cpu_ticks_at_measure)) as f64 / ticks_per_sec() / secs * 100.0;
    let client_cpu_pct = (client_ticks_end.saturating_sub(client_ticks_at_measure)) as f64 / ticks_per_sec() / secs * 100.0;
    Ok(Outcome {
        server: if baseline { "baseline" } else { "tickwire" },
        backend: if a.attach.is_some() {
            "attached".into()
        } else if baseline {
            format!("{shard_kind}; {procs} client process(es)")
        } else if serve.is_some() {
            format!(
                "shm-shards: {shards} {shard_kind} processes (epoll) on tickwire serve --feed-shm (durability {}), order flow through its gateway ({} order-entry sessions), {procs} client processes",
                a.durability,
                a.sessions.max(1)
            )
        } else {
            format!(
                "shm-shards: {shards} {} processes (epoll), engine thread in the bench, {procs} client processes",
                shard_kind
            )
        },
        order_path: if baseline || a.attach.is_some() {
            "n/a"
        } else if serve.is_some() {
            "gateway"
        } else {
            "inproc"
        },
        serve_cpu_pct: serve.as_ref().map(|_| serve_ticks_end.saturating_sub(serve_ticks_at_measure) as f64 / ticks_per_sec() / secs * 100.0),
        oe: {
            let mut d = [0u64; 5];
            for i in 0..5 {
                d[i] = oe_end[i].saturating_sub(oe_at_measure[i]);
            }
            d
        },
        target: a.subscribers,
        connections,
        connect_rate: connections as f64 / ramp_end.max(1e-3),
        time_to_full_s: full_at,
        handshake_failures: sum(|r| r.handshake_failures),
        connect_failures: sum(|r| r.connect_failures),
        closed_by_server: sum(|r| r.closed_by_server),
        delivered_per_sec: delivered,
        per_sub_rate: if connections > 0 { delivered / connections as f64 } else { 0.0 },
        hist,
        rss_idle,
        rss_full,
        cpu_pct,
        client_cpu_pct,
        load: (load_at_measure + load_end) / 2.0,
        gaps: sum(|r| r.gaps),
        conflations: sum(|r| r.conflations),
        errors: sum(|r| r.errors),
        ramp,
        commands: c1.saturating_sub(c0),
        first_error: held
            .into_iter()
            .chain(rs.iter().map(|r| r.error.clone()))
            .find(|e| !e.is_empty())
            .unwrap_or_default(),
    })
}

fn q(h: &Histogram<u64>, p: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(p) as f64 / 1e6
    }
}

fn report(a: &C100kArgs, outs: &[Outcome]) {
    for o in outs {
        if a.json {
            println!(
                "{{\"bench\":\"c100k\",\"server\":\"{}\",\"backend\":\"{}\",\"subscribers\":{},\"connections\":{},\
                 \"connect_rate\":{:.1},\"time_to_full_s\":{},\"handshake_failures\":{},\"connect_failures\":{},\
                 \"closed_by_server\":{},\"order_rate\":{},\"commands\":{},\"delivered_per_sec\":{:.1},\
                 \"per_subscriber_msgs_per_sec\":{:.3},\"latency_p50\":{:.3},\"latency_p99\":{:.3},\
                 \"latency_p99_9\":{:.3},\"latency_max\":{:.3},\"latency_unit\":\"ms\",\"latency_samples\":{},\
                 \"rss_per_conn_bytes\":{:.0},\"rss_idle_bytes\":{},\"rss_full_bytes\":{},\"server_cpu_pct\":{:.1},\"client_cpu_pct\":{:.1},\"loadavg\":{:.2},\
                 \"gaps\":{},\"conflations\":{},\"errors\":{},\"order_path\":\"{}\",\"serve_cpu_pct\":{},\"reports_accepted\":{},\"reports_rejected\":{},\"reports_fills\":{},\"reports_cancelled\":{},\"send_errors\":{}}}",
                o.server,
                o.backend,
                o.target,
                o.connections,
                o.connect_rate,
                o.time_to_full_s.map_or("null".into(), |t| format!("{t:.2}")),
                o.handshake_failures,
                o.connect_failures,
                o.closed_by_server,
                a.rate,
                o.commands,
                o.delivered_per_sec,
                o.per_sub_rate,
                q(&o.hist, 0.5),
                q(&o.hist, 0.99),
                q(&o.hist, 0.999),
                o.hist.max() as f64 / 1e6,
                o.hist.len(),
                o.rss_per_conn(),
                o.rss_idle,
                o.rss_full,
                o.cpu_pct,
                o.client_cpu_pct,
                o.load,
                o.gaps,
                o.conflations,
                o.errors,
                o.order_path,
                o.serve_cpu_pct.map_or("null".into(), |c| format!("{c:.1}")),
                o.oe[0],
                o.oe[1],
                o.oe[2],
                o.oe[3],
                o.oe[4],
            );
        } else {
            println!("c100k — {} ({})", o.server, o.backend);
            println!("  connections        {} of {}", o.connections, o.target);
            println!(
                "  ramp               {} , {:.0} connections/s, {} connect failures, {} handshake failures, {} closed by server",
                o.time_to_full_s.map_or("never complete".into(), |t| format!("full after {t:.2} s")),
                o.connect_rate,
                o.connect_failures,
                o.handshake_failures,
                o.closed_by_server
            );
            println!(
                "  order flow         {} commands/s ({} commands in the window, {})",
                a.rate,
                o.commands,
                match o.order_path {
                    "gateway" => "sent through the gateway",
                    "inproc" => "engine thread in the bench",
                    p => p,
                }
            );
            if o.order_path == "gateway" {
                println!(
                    "  order entry        reports in the window: {} accepted, {} rejected, {} fills, {} cancelled; {} send errors; tickwire serve CPU {:.1} % of one core",
                    o.oe[0],
                    o.oe[1],
                    o.oe[2],
                    o.oe[3],
                    o.oe[4],
                    o.serve_cpu_pct.unwrap_or(0.0)
                );
            }
            println!(
                "  delivered          {:.0} msgs/s in all, {:.2} msgs/s per subscriber",
                o.delivered_per_sec, o.per_sub_rate
            );
            println!(
                "  fan-out latency    p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples; {} → client receive)",
                q(&o.hist, 0.5),
                q(&o.hist, 0.99),
                q(&o.hist, 0.999),
                o.hist.max() as f64 / 1e6,
                o.hist.len(),
                if o.order_path == "gateway" { "gateway's receive stamp of the command" } else { "engine stamp" }
            );
            println!(
                "  server memory      RSS {:.1} MiB idle → {:.1} MiB full: {:.0} bytes/connection (user space; kernel socket buffers not included)",
                o.rss_idle as f64 / 1048576.0,
                o.rss_full as f64 / 1048576.0,
                o.rss_per_conn()
            );
            println!(
                "  CPU                shards {:.1} %, clients {:.1} % of one core (steady state); machine load average {:.2} on {} cores",
                o.cpu_pct,
                o.client_cpu_pct,
                o.load,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            println!("  sequence           {} gaps, {} conflations, {} error messages", o.gaps, o.conflations, o.errors);
            if !o.first_error.is_empty() {
                println!("  first client error {}", o.first_error);
            }
        }
    }
    match chart::draw(&a.chart, outs, a.rate) {
        Ok(()) => {
            if !a.json {
                println!("chart: {}", a.chart.display());
            }
        }
        Err(e) => eprintln!("c100k: chart not written: {e}"),
    }
}
