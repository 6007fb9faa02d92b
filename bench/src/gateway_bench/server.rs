//! The server under test: `tickwire serve` as a child process, on a configuration generated in a
//! fresh temporary directory (N trade keys, one account each, no throttling, feed off, the
//! journal durability asked for), listening on a free loopback port.

use crate::serve::{self, ServeConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The secret of bench key `id` (generated config, never used outside this run).
pub fn secret(id: u64) -> Vec<u8> {
    format!("gateway-bench-key-{id}").into_bytes()
}

/// Instrument used by every order (BTC-USD-like: tick 1, lot 1).
pub const INSTRUMENT: u32 = 1;

/// Pids of the running servers, for the SIGINT/SIGTERM handler (a frozen server must not
/// outlive an interrupted bench).
static CHILDREN: [AtomicI32; 8] = [const { AtomicI32::new(0) }; 8];

extern "C" fn on_interrupt(_sig: libc::c_int) {
    for c in &CHILDREN {
        let pid = c.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe; the pid is one of our children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(130) };
}

/// Kills the servers on SIGINT/SIGTERM (the temporary directories then stay behind).
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only loads atomics and calls async-signal-safe functions.
        unsafe {
            libc::signal(sig, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

fn track(pid: u32, add: bool) {
    let (from, to) = if add { (0, pid as i32) } else { (pid as i32, 0) };
    for c in &CHILDREN {
        if c.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<base>/tickwire-gateway-bench-<pid>-<tag>`.
    pub fn new(base: &Path, tag: &str) -> Result<TempDir, String> {
        let p = base.join(format!("tickwire-gateway-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `tickwire serve`; stopped (SIGTERM, then SIGKILL after 15 s) on drop.
pub struct ServerProc {
    child: Option<Child>,
    /// Order-entry address.
    pub addr: SocketAddr,
    /// Journal durability it runs with.
    pub durability: &'static str,
    /// Its temporary directory (configuration and data).
    pub dir: TempDir,
    paused: bool,
}

static LATENCY_PROFILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the `--latency-profile` of the servers started from now on (once per run).
pub fn set_latency_profile(p: &str) {
    let _ = LATENCY_PROFILE.set(p.to_string());
}

impl ServerProc {
    /// Starts `bin serve` with `keys` trade keys (ids and accounts 1..=keys) and waits for its
    /// `order-entry:` line (at most 30 s). With `timer_slack_ns`, the child is forked from a
    /// thread whose timer slack (`PR_SET_TIMERSLACK`) is set to that value: the server's threads
    /// inherit it (a diagnostic of how much its sleeps cost; the server itself is unchanged).
    pub fn start(
        bin: &Path,
        base: &Path,
        durability: &'static str,
        keys: u64,
        timer_slack_ns: Option<u64>,
    ) -> Result<ServerProc, String> {
        let tag = match timer_slack_ns {
            Some(ns) => format!("{durability}-slack{ns}"),
            None => durability.to_string(),
        };
        let dir = TempDir::new(base, &tag)?;
        let data = dir.0.join("data");
        let cfg = dir.0.join("tickwire.toml");
        let text = ServeConfig {
            by: "tickwire-bench gateway",
            data_dir: &data,
            instruments: &[(INSTRUMENT, "BTC-USD".into())],
            keys,
            secret,
            durability: Some(durability),
        }
        .text();
        std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let mut cmd = serve::command(bin, &cfg, &data, durability);
        cmd.args(["--latency-profile", LATENCY_PROFILE.get().map_or("default", |s| s.as_str())]);
        let spawned = match timer_slack_ns {
            None => cmd.spawn(),
            Some(ns) => std::thread::scope(|sc| {
                sc.spawn(|| {
                    tickwire_gateway::server::set_timer_slack_ns(ns)?;
                    cmd.spawn()
                })
                .join()
                .expect("spawn thread")
            }),
        };
        let child = spawned.map_err(|e| format!("{}: {e}", bin.display()))?;
        track(child.id(), true);
        let mut sp = ServerProc { child: Some(child), addr: SocketAddr::from(([127, 0, 0, 1], 0)), durability, dir, paused: false };
        sp.addr = serve::wait_order_entry(sp.child.as_mut().expect("just set"), bin, &format!(" ({tag})"))?;
        Ok(sp)
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid (not yet reaped: we hold its `Child`); no
            // pointers involved.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Freezes the server (SIGSTOP) while another one is measured: an idle `tickwire serve`
    /// is not idle on the CPU (its journaler waits in a `sched_yield` loop), and the machine
    /// has two cores.
    pub fn pause(&mut self) {
        if !self.paused {
            self.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// SIGTERM, wait (15 s), else SIGKILL. Returns how long the stop took.
    pub fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.resume();
        self.signal(libc::SIGTERM);
        let Some(mut c) = self.child.take() else { return Duration::ZERO };
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = c.try_wait() {
                track(c.id(), false);
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("tickwire serve ({}) did not stop within 15 s: killed", self.durability);
        let _ = c.kill();
        let _ = c.wait();
        track(c.id(), false);
        t.elapsed()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}
