//! `c100k --server tickwire`: the order flow goes THROUGH THE GATEWAY of a real `tickwire serve`.
//!
//! [`Serve`] starts `tickwire serve --config <generated> --no-feed --feed-shm RING --durability D
//! --listen 127.0.0.1:0` in a fresh temporary directory (instruments 1..=N, `sessions` trade keys
//! without throttling, STP off) and waits for its `order-entry:` address; the server writes its
//! durable, redacted events into the shared-memory ring RING (and the book image `RING.image`)
//! that the `tickwire-feed --shm` shard processes read. Stopped with SIGTERM (SIGKILL after 10 s)
//! on drop, which also removes the ring, the image and the directory.
//!
//! [`Driver`] logs `sessions` order-entry sessions on (HMAC Logon, docs/protocol.md) and sends
//! `rate` commands/s open loop from one thread (the schedule does not wait for reports): limit
//! orders alternating buy/sell around a mid of 10 000 on every instrument in turn, mostly passive,
//! one in eight crossing (trades), plus cancels (level deltas); one reader thread per session
//! drains and counts the execution reports (a session whose reports are not read would be cut
//! as a slow consumer).
//!
//! Latency clock: the gateway stamps each command with its wall clock (`SystemTime`, i.e.
//! CLOCK_REALTIME, `gateway/src/net/mod.rs` `now_ns`) when it reads the bytes; the engine and the
//! feed copy that stamp into DeltaBatch/Trade `ts_ns`, and the c100k clients compute receive wall
//! clock (CLOCK_REALTIME too, same host) − `ts_ns`. So the latency covers gateway read → sequencer
//! → engine → journal barrier → shm ring → shard → subscriber; only the client→gateway loopback
//! hop (tens of µs) is outside it.

use crate::serve::{self, ServeConfig};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_protocol::{Cancel, ClientMsg, Decoded, ExecType, Logon, NewOrder, ServerMsg, MAX_FRAME};

fn secret(id: u64) -> Vec<u8> {
    format!("c100k-bench-key-{id}").into_bytes()
}

/// A running `tickwire serve` writing the shm ring; stopped and cleaned up on drop.
pub struct Serve {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    pub ring: PathBuf,
    dir: PathBuf,
}

impl Serve {
    pub fn start(bin: &Path, ring: &Path, durability: &str, instruments: u32, keys: u64) -> Result<Serve, String> {
        let dir = std::env::temp_dir().join(format!("tickwire-c100k-serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(ring);
        let data = dir.join("data");
        let cfg = dir.join("tickwire.toml");
        let mut s = Serve { child: None, addr: SocketAddr::from(([127, 0, 0, 1], 0)), pid: 0, ring: ring.into(), dir };
        let symbols: Vec<(u32, String)> = (1..=instruments).map(|i| (i, format!("I{i}"))).collect();
        let text = ServeConfig {
            by: "tickwire-bench c100k --server tickwire",
            data_dir: &data,
            instruments: &symbols,
            keys,
            secret,
            durability: None,
        }
        .text();
        std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let mut cmd = serve::command(bin, &cfg, &data, durability);
        cmd.arg("--feed-shm").arg(ring);
        let child = s.child.insert(super::spawn(&mut cmd).map_err(|e| format!("{}: {e}", bin.display()))?);
        s.pid = child.id();
        s.addr = serve::wait_order_entry(child, bin, "")?;
        if !ring.exists() {
            return Err(format!("tickwire serve did not create the ring {}", ring.display()));
        }
        Ok(s)
    }

    /// Exited already? (`Some(status)` if so.)
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => Some(st.to_string()),
            _ => None,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid (not reaped yet: we hold its `Child`).
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let t = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    eprintln!("c100k: tickwire serve did not stop within 10 s: killed");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(&self.ring);
        let mut image = self.ring.clone().into_os_string();
        image.push(".image");
        let _ = std::fs::remove_file(PathBuf::from(image));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Report counters, all sessions together.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub fills: AtomicU64,
    pub cancelled: AtomicU64,
    pub send_errors: AtomicU64,
}

/// The open-loop order flow through the gateway.
pub struct Driver {
    stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    streams: Vec<TcpStream>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn logon(addr: SocketAddr, key: u64) -> Result<(TcpStream, Vec<u8>), String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let now = super::engine::wall_ns();
    let l = Logon::signed(&secret(key), key, now, now ^ key.rotate_left(20), u64::MAX, 60_000, false);
    let mut v = Vec::new();
    ClientMsg::Logon(l).encode_to_vec(&mut v);
    (&s).write_all(&v).map_err(|e| format!("logon: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match ServerMsg::decode(&buf, MAX_FRAME) {
            Decoded::Frame(ServerMsg::LogonAccepted(_), len) => {
                buf.drain(..len);
                return Ok((s, buf));
            }
            Decoded::Frame(ServerMsg::LogonRejected(r), _) => {
                return Err(format!("key {key}: logon rejected: {}", r.reason.name()))
            }
            Decoded::Frame(m, _) => return Err(format!("key {key}: unexpected {:?} at logon", m.msg_type())),
            Decoded::Error(e) => return Err(format!("key {key}: bad frame at logon: {e:?}")),
            Decoded::NeedMore(_) => {}
        }
        let n = (&s).read(&mut tmp).map_err(|e| format!("key {key}: logon: {e}"))?;
        if n == 0 {
            return Err(format!("key {key}: closed during logon"));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn reader(s: TcpStream, mut buf: Vec<u8>, c: Arc<Counters>, stop: Arc<AtomicBool>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut tmp = vec![0u8; 64 * 1024];
    let mut start = 0;
    loop {
        loop {
            match ServerMsg::decode(&buf[start..], MAX_FRAME) {
                Decoded::Frame(m, len) => {
                    start += len;
                    if let ServerMsg::ExecReport(r) = m {
                        let ctr = match r.exec_type {
                            ExecType::Accepted => &c.accepted,
                            ExecType::Rejected => &c.rejected,
                            ExecType::PartialFill | ExecType::Fill => &c.fills,
                            ExecType::Cancelled => &c.cancelled,
                            _ => continue,
                        };
                        ctr.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Decoded::NeedMore(_) => break,
                Decoded::Error(e) => {
                    eprintln!("c100k: order entry: bad frame from the server: {e:?}");
                    return;
                }
            }
        }
        buf.drain(..start);
        start = 0;
        match (&s).read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Driver {
    /// Logs `sessions` keys (1..=sessions) on and starts `rate` commands/s over instruments
    /// 1..=`instruments`.
    pub fn start(addr: SocketAddr, rate: f64, instruments: u32, sessions: u64) -> Result<Driver, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut d = Driver { stop: stop.clone(), counters: counters.clone(), streams: Vec::new(), threads: Vec::new() };
        let mut writers = Vec::new();
        for key in 1..=sessions {
            let (s, rest) = logon(addr, key)?;
            let w = s.try_clone().map_err(|e| e.to_string())?;
            d.streams.push(s.try_clone().map_err(|e| e.to_string())?);
            let (c, st) = (counters.clone(), stop.clone());
            d.threads.push(
                std::thread::Builder::new()
                    .name(format!("c100k-oe-rd{key}"))
                    .spawn(move || reader(s, rest, c, st))
                    .map_err(|e| e.to_string())?,
            );
            writers.push((key, w));
        }
        let (c, st) = (counters.clone(), stop.clone());
        let t = std::thread::Builder::new()
            .name("c100k-oe-send".into())
            .spawn(move || send_loop(writers, rate, instruments, &c, &st))
            .map_err(|e| e.to_string())?;
        d.threads.push(t);
        Ok(d)
    }
}

fn send_loop(writers: Vec<(u64, TcpStream)>, rate: f64, instruments: u32, c: &Counters, stop: &AtomicBool) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let n = writers.len() as u64;
    // Live orders per instrument, oldest first: (writer index, client order id).
    let mut live: Vec<std::collections::VecDeque<(usize, u64)>> = vec![Default::default(); instruments as usize + 1];
    let mut per_inst = vec![0u64; instruments as usize + 1];
    let mut next_id = 0u64;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let t0 = Instant::now();
    let mut seq = 0u64;
    let mut frame = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        let due = t0 + period.mul_f64(seq as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        seq += 1;
        let inst = 1 + (seq % instruments as u64) as u32;
        let k = per_inst[inst as usize];
        per_inst[inst as usize] += 1;
        let book = &mut live[inst as usize];
        let r = next();
        frame.clear();
        let w = if book.len() > 60 || (r % 10 < 2 && !book.is_empty()) {
            let (w, id) = book.pop_front().unwrap_or((0, 0));
            let account = writers[w].0 as u32;
            ClientMsg::Cancel(Cancel { account, client_order_id: id, instrument: inst }).encode_to_vec(&mut frame);
            w
        } else {
            next_id += 1;
            // Alternating sides per instrument; mostly passive around 10 000, one in eight crosses.
            let buy = k.is_multiple_of(2);
            let off = ((r >> 8) % 10) as i64;
            let cross = (r >> 16) % 8 == 0;
            let price = match (buy, cross) {
                (true, false) => 9_999 - off,
                (false, false) => 10_001 + off,
                (true, true) => 10_011,
                (false, true) => 9_989,
            };
            // Buys and sells on different sessions when there are several.
            let w = (((k % 2) + 2 * (seq % (n / 2).max(1))) % n) as usize;
            ClientMsg::NewOrder(NewOrder {
                side: if buy { 1 } else { 2 },
                order_type: 1,
                stp: 0,
                client_order_id: next_id,
                account: writers[w].0 as u32,
                instrument: inst,
                price: Some(price),
                qty: 1 + (r >> 32) % 20,
            })
            .encode_to_vec(&mut frame);
            book.push_back((w, next_id));
            w
        };
        if (&writers[w].1).write_all(&frame).is_ok() {
            c.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            c.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
