//! Shared helpers of the socket-level server tests: start the `tickwire` binary in a temp dir on
//! free loopback ports, and a blocking protocol client. Every child process is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tickwire_protocol::{ClientMsg, Decoded, ExecReport, Logon, LogonAccepted, NewOrder, ServerMsg, MAX_FRAME};

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("tw-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Test configuration: trade keys 1..=4 (secret "secret-N", account N), read key 10 (accounts
/// 1..=4); small throttle limits so floods are cut quickly.
pub fn test_config(durability: &str) -> String {
    let mut s = String::from(
        "[engine]\norders_max = 65536\nlevels_max = 1024\naccounts_max = 64\n\n\
         [[instruments]]\nid = 1\nsymbol = \"BTC-USD\"\ntick_size = 1\nlot_size = 1\nmin_qty = 1\nmax_qty = 1000000\n\n\
         [[instruments]]\nid = 2\nsymbol = \"ETH-USD\"\ntick_size = 1\nlot_size = 1\nmin_qty = 1\nmax_qty = 1000000\n\n",
    );
    for k in 1..=4 {
        s += &format!("[[keys]]\nid = {k}\nrole = \"trade\"\nsecret = \"secret-{k}\"\naccounts = [{k}]\n\n");
    }
    s += "[[keys]]\nid = 10\nrole = \"read\"\nsecret = \"secret-10\"\naccounts = [1, 2, 3, 4]\n\n";
    s += "[limits]\nrate_per_sec = 2000\nburst = 400\nthrottle_disconnect_after = 20\nlogon_timeout_ms = 3000\n\
          max_conn_per_ip_per_sec = 40\nheartbeat_min_ms = 100\n\n";
    s += &format!("[journal]\ndurability = \"{durability}\"\nsegment_bytes = 1048576\n\n[feed]\nenabled = false\n");
    s
}

pub fn engine_config() -> tickwire_core::EngineConfig {
    let t = test_config("sync");
    tickwire_gateway::config::ServerConfig::parse(&t).unwrap().engine
}

pub fn secret(key: u64) -> Vec<u8> {
    format!("secret-{key}").into_bytes()
}

/// A limit buy of 1 lot on instrument 1 (BTC-USD).
pub fn limit_buy(client_order_id: u64, account: u32, price: i64) -> ClientMsg {
    ClientMsg::NewOrder(NewOrder {
        side: 1,
        order_type: 1,
        stp: 0,
        client_order_id,
        account,
        instrument: 1,
        price: Some(price),
        qty: 1,
    })
}

/// A running `tickwire serve` child process.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    /// Starts the server with `config` (file written into `dir`), data in `dir/data`.
    pub fn start(dir: &Path, config: Option<&str>) -> ServerProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
        cmd.arg("serve");
        if let Some(c) = config {
            let p = dir.join("tickwire.toml");
            std::fs::write(&p, c).unwrap();
            cmd.arg("--config").arg(&p);
        } else {
            cmd.arg("--feed-listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir").arg(dir.join("data")).arg("--listen").arg("127.0.0.1:0");
        cmd.current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tickwire");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let l3 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l3.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let t0 = Instant::now();
        loop {
            if let Some(a) = find(&lines, "order-entry: ") {
                let addr = a.parse().unwrap();
                return ServerProc { child, addr, lines };
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("server exited at start ({st}): {:?}", lines.lock().unwrap());
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "server did not start: {:?}", lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value after `prefix` in the first output line starting with it.
    pub fn line(&self, prefix: &str) -> Option<String> {
        find(&self.lines, prefix)
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait for the exit (bounded), return the final state hash it printed.
    pub fn sigterm(&mut self) -> u64 {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "server exit status {st}: {:?}", self.lines.lock().unwrap());
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The output threads finish reading after the exit.
        let t0 = Instant::now();
        loop {
            if let Some(h) = self.line("final-state-hash: ") {
                return parse_hex(&h);
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no final hash: {:?}", self.lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn parse_hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
}

fn find(lines: &Arc<Mutex<Vec<String>>>, prefix: &str) -> Option<String> {
    lines.lock().unwrap().iter().find_map(|l| l.strip_prefix(prefix).map(|s| s.trim().to_string()))
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A blocking protocol client.
pub struct Client {
    pub s: TcpStream,
    buf: Vec<u8>,
}

pub enum Recv {
    Msg(ServerMsg),
    Timeout,
    Closed,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        Ok(Client { s, buf: Vec::new() })
    }

    pub fn from_stream(s: TcpStream) -> Client {
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, m: ClientMsg) -> std::io::Result<()> {
        let mut b = Vec::new();
        m.encode_to_vec(&mut b);
        self.s.write_all(&b)
    }

    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    pub fn recv(&mut self, wait: Duration) -> Recv {
        let deadline = Instant::now() + wait;
        loop {
            match ServerMsg::decode(&self.buf, MAX_FRAME) {
                Decoded::Frame(m, n) => {
                    self.buf.drain(..n);
                    return Recv::Msg(m);
                }
                Decoded::Error(e) => panic!("bad server frame {e:?}"),
                Decoded::NeedMore(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Timeout;
            }
            self.s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut tmp = [0u8; 8192];
            match self.s.read(&mut tmp) {
                Ok(0) => return Recv::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Recv::Closed,
            }
        }
    }

    /// Logs on; returns LogonAccepted (panics on anything else).
    pub fn logon(&mut self, key: u64, last_seq_seen: u64) -> LogonAccepted {
        self.try_logon(key, last_seq_seen).unwrap_or_else(|m| panic!("logon of key {key}: {m}"))
    }

    pub fn try_logon(&mut self, key: u64, last_seq_seen: u64) -> Result<LogonAccepted, String> {
        self.try_logon_hb(key, last_seq_seen, 1000)
    }

    /// Logon asking for a heartbeat interval of `heartbeat_ms`: a session that stays silent for
    /// longer stretches than two intervals (these clients send no heartbeats) must ask for more.
    pub fn logon_hb(&mut self, key: u64, last_seq_seen: u64, heartbeat_ms: u32) -> LogonAccepted {
        self.try_logon_hb(key, last_seq_seen, heartbeat_ms).unwrap_or_else(|e| panic!("logon of key {key}: {e}"))
    }

    fn try_logon_hb(&mut self, key: u64, last_seq_seen: u64, heartbeat_ms: u32) -> Result<LogonAccepted, String> {
        static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let nonce = now_ns() ^ NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let l = Logon::signed(&secret(key), key, now_ns(), nonce, last_seq_seen, heartbeat_ms, false);
        self.send(ClientMsg::Logon(l)).map_err(|e| e.to_string())?;
        match self.recv(Duration::from_secs(20)) {
            Recv::Msg(ServerMsg::LogonAccepted(a)) => Ok(a),
            Recv::Msg(m) => Err(format!("{m:?}")),
            Recv::Timeout => Err("timeout".into()),
            Recv::Closed => Err("closed".into()),
        }
    }

    /// Reads until an ExecReport matching `f` (others are returned too, in order).
    pub fn until_report<F: Fn(&ExecReport) -> bool>(&mut self, f: F, wait: Duration) -> Vec<ExecReport> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Msg(ServerMsg::ExecReport(r)) => {
                    let done = f(&r);
                    got.push(r);
                    if done {
                        return got;
                    }
                }
                Recv::Msg(ServerMsg::Heartbeat(_)) => {}
                Recv::Msg(m) => panic!("unexpected {m:?} while waiting for a report (got {got:?})"),
                Recv::Timeout => panic!("no matching report in time (got {got:?})"),
                Recv::Closed => panic!("closed while waiting for a report (got {got:?})"),
            }
        }
    }

    /// Reads frames until the server closes (bounded); returns them.
    pub fn until_closed(&mut self, wait: Duration) -> Vec<ServerMsg> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Msg(m) => got.push(m),
                Recv::Timeout => panic!("server did not close in time (got {got:?})"),
                Recv::Closed => return got,
            }
        }
    }
}
