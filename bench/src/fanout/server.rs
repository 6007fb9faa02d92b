//! Server role: a paced publisher (a real engine on random order flow) feeding either Tickwire's
//! feed (one shard, epoll or io_uring), a tokio + tokio-tungstenite + broadcast baseline
//! (`naive` or `tuned`), or the uWebSockets baseline (`uws`: a child process, the binary named
//! by `TICKWIRE_UWS_BIN`, fed the payloads over a pipe; bench/uws/). Control on stdin:
//! `RATE <updates/s>`, `QUIT`; prints `READY <port>`, or `READY <port> <pid>` when the
//! subscribers live in another process (`uws`), whose memory and CPU the coordinator then reads.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::{Command, Engine, EngineConfig, Event, InstrumentConfig, OrderType, Side};
use tickwire_feed::hub::Flush;
use tickwire_feed::{BackendKind, Feed, FeedConfig, Hub, HubConfig};
use tickwire_protocol::md::ClientMsg;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Engine event kinds that become market-data updates (one sequence number each).
const EV_TRADE: u8 = 7;
const EV_LEVEL_DELTA: u8 = 8;

/// Wall clock in ns (the clients compare against it from other processes).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A WebSocket upgrade request (the key is fixed; servers do not care).
pub const HANDSHAKE: &[u8] = b"GET /md HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked binary client frame.
pub fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x82];
    let n = payload.len();
    assert!(n < 126);
    v.push(0x80 | n as u8);
    let m = [0x5a, 0x13, 0xc4, 0x7e];
    v.extend_from_slice(&m);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
    v
}

/// The bytes a client sends after connecting: upgrade request + one Subscribe per instrument.
pub fn hello(instruments: u32) -> Vec<u8> {
    let mut v = HANDSHAKE.to_vec();
    for i in 1..=instruments {
        v.extend_from_slice(&client_frame(&ClientMsg::Subscribe { instrument: i }.to_vec()));
    }
    v
}

/// Random limit orders (resting and crossing) and cancels around price 10 000 on instruments
/// 1..=n: level deltas and trades.
pub struct Flow {
    engine: Engine,
    rng: u64,
    seq: u64,
    n: u32,
}

impl Flow {
    pub fn new(n: u32) -> Flow {
        let cfg = EngineConfig {
            instruments: (1..=n).map(|i| InstrumentConfig::simple(i, &format!("I{i}"))).collect(),
            ..EngineConfig::single_default()
        };
        Flow { engine: Engine::new(&cfg).expect("valid engine config"), rng: 0x9E37_79B9_7F4A_7C15, seq: 0, n }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Runs one command stamped `ts`; appends its events; returns the market-data updates.
    pub fn step(&mut self, ts: u64, out: &mut Vec<Event>) -> u64 {
        let inst = 1 + (self.next() % self.n as u64) as u32;
        let side = if self.next() & 1 == 0 { Side::Buy } else { Side::Sell };
        let r = self.next();
        let cmd = if r % 10 < 2 {
            let id = self.next() % 500;
            Command::cancel(1, inst, id)
        } else {
            let off = (r >> 8) % 20;
            let price = if side == Side::Buy { 10_000 - off as i64 + 2 } else { 10_000 + off as i64 - 2 };
            let id = self.next() % 500;
            Command::new_order(1 + (r % 7) as u32, inst, id, side, OrderType::LimitGtc, Some(price), 1 + (r >> 16) % 50, None)
        };
        self.seq += 1;
        let start = out.len();
        self.engine.handle(&cmd.with_seq(self.seq, ts), out);
        out[start..].iter().filter(|e| e.kind == EV_TRADE || e.kind == EV_LEVEL_DELTA).count() as u64
    }
}

/// Publishes `rate` updates/s (read from `rate` each slice) until `stop`: every ~0.5 ms the
/// updates due are generated and handed over as one batch.
pub fn publisher(n: u32, rate: Arc<AtomicU64>, stop: Arc<AtomicBool>, mut sink: impl FnMut(&[Event])) {
    let mut flow = Flow::new(n);
    let mut evs = Vec::new();
    let mut cur = 0u64;
    let mut t0 = Instant::now();
    let mut done = 0u64;
    while !stop.load(Ordering::Acquire) {
        let r = rate.load(Ordering::Acquire);
        if r != cur {
            cur = r;
            t0 = Instant::now();
            done = 0;
        }
        if cur == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let due = (t0.elapsed().as_secs_f64() * cur as f64) as u64;
        if done < due {
            evs.clear();
            let ts = now_ns();
            // Bounded work per slice, so a rate the publisher cannot reach does not stall control.
            let mut k = 0;
            while done < due && k < 100_000 {
                done += flow.step(ts, &mut evs);
                k += 1;
            }
            sink(&evs);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Raises the soft open-file limit to the hard one.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Server role entry point.
pub fn run(kind: &str, backend: BackendKind, shards: usize, instruments: u32) {
    raise_nofile();
    let rate = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher_thread;
    let port;
    let mut rt_guard = None;
    let mut io_pid = None;
    match kind {
        "tickwire" => {
            let mut cfg = FeedConfig::new("127.0.0.1:0".parse().expect("addr"), (1..=instruments).collect()).with_backend(backend);
            cfg.shards = shards.max(1);
            let feed = Feed::spawn(cfg).expect("feed starts");
            port = feed.local_addr().port();
            let (r, s) = (rate.clone(), stop.clone());
            publisher_thread = std::thread::spawn(move || {
                publisher(instruments, r, s, |evs| feed.publish(evs));
                let st = feed.stats();
                let _ = feed.shutdown();
                eprintln!("fanout server (tickwire, backend {backend}): {st:?}");
            });
            eprintln!("fanout server: tickwire feed, {} shard(s), backend {backend}", shards.max(1));
        }
        "naive" | "tuned" => {
            let tuned = kind == "tuned";
            let (tx, _) = broadcast::channel::<Bytes>(65_536);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            let listener = rt
                .block_on(async {
                    let s = tokio::net::TcpSocket::new_v4()?;
                    s.set_reuseaddr(true)?;
                    s.bind("127.0.0.1:0".parse::<SocketAddr>().expect("addr"))?;
                    s.listen(4096)
                })
                .expect("listen");
            port = listener.local_addr().expect("addr").port();
            let tx2 = tx.clone();
            rt.spawn(async move {
                loop {
                    let Ok((s, _)) = listener.accept().await else { continue };
                    let _ = s.set_nodelay(true);
                    let rx = tx2.subscribe();
                    tokio::spawn(async move {
                        let _ = if tuned { conn_tuned(s, rx).await } else { conn_naive(s, rx).await };
                    });
                }
            });
            rt_guard = Some(rt);
            let (r, s) = (rate.clone(), stop.clone());
            publisher_thread = std::thread::spawn(move || {
                let mut fan = HubFrames::new(instruments);
                publisher(instruments, r, s, |evs| {
                    fan.frames(evs, |payload| {
                        let _ = tx.send(payload);
                    })
                });
            });
            eprintln!("fanout server: tokio + tokio-tungstenite + broadcast ({kind})");
        }
        "uws" => {
            let (p, pid, t) = spawn_uws(instruments, rate.clone(), stop.clone());
            (port, io_pid, publisher_thread) = (p, Some(pid), t);
            eprintln!("fanout server: uWebSockets (pid {pid}), one epoll thread, pub/sub topic");
        }
        k => panic!("unknown server kind {k}"),
    }
    match io_pid {
        Some(pid) => println!("READY {port} {pid}"),
        None => println!("READY {port}"),
    }
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("RATE"), Some(r)) => rate.store(r, Ordering::Release),
            (Some("QUIT"), _) => break,
            _ => {}
        }
    }
    stop.store(true, Ordering::Release);
    let _ = publisher_thread.join();
    if let Some(rt) = rt_guard {
        rt.shutdown_timeout(Duration::from_millis(500));
    }
}

/// Starts the uWebSockets baseline (bench/uws/fanout_uws.cpp, built by bench/uws/build.sh, path
/// in `TICKWIRE_UWS_BIN`) and a publisher thread that writes it every batch's payloads
/// (`[u32 le length][payload]…`, then a u32 zero; see the .cpp). Returns (port, its pid, the
/// publisher thread, which closes the pipe and reaps the child when it stops).
fn spawn_uws(instruments: u32, rate: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> (u16, u32, std::thread::JoinHandle<()>) {
    use std::process::{Command, Stdio};
    let bin = std::env::var("TICKWIRE_UWS_BIN").expect("TICKWIRE_UWS_BIN names the uWebSockets baseline (bench/uws/build.sh)");
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    out.read_line(&mut line).expect("read READY from the uWebSockets baseline");
    let port: u16 = line.strip_prefix("READY ").and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("{bin}: expected READY <port>, got {line:?}"));
    let pid = child.id();
    let mut pipe = child.stdin.take().expect("piped stdin");
    let thread = std::thread::spawn(move || {
        let mut fan = HubFrames::new(instruments);
        let mut buf = Vec::new();
        publisher(instruments, rate, stop, |evs| {
            buf.clear();
            fan.frames(evs, |payload| {
                buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                buf.extend_from_slice(&payload);
            });
            if buf.is_empty() {
                return; // no update in this batch
            }
            buf.extend_from_slice(&0u32.to_le_bytes());
            // A dead child shows up as gaps and dead connections in the clients' counts.
            let _ = pipe.write_all(&buf);
        });
        drop(pipe); // EOF: the child exits
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    });
    (port, pid, thread)
}

/// The same messages Tickwire sends, for the baselines: a sans-IO [`Hub`] with one connection
/// subscribed to everything; each frame's payload is handed out as `Bytes` (shared, no copy).
pub struct HubFrames {
    hub: Hub,
    id: tickwire_feed::ConnId,
    out: Vec<u8>,
}

impl HubFrames {
    pub fn new(instruments: u32) -> HubFrames {
        let mut hub = Hub::new(HubConfig::new((1..=instruments).collect()));
        let id = hub.open();
        let mut h = hello(instruments);
        hub.on_read(id, &mut h);
        hub.publish();
        let mut f = HubFrames { hub, id, out: Vec::new() };
        f.drain();
        f.out.clear();
        f
    }

    fn drain(&mut self) {
        let out = &mut self.out;
        let r = self.hub.flush(self.id, &mut |bufs: &[IoSlice<'_>]| {
            let mut n = 0;
            for b in bufs {
                out.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        });
        assert_ne!(r, Flush::Close);
    }

    /// Turns a batch of engine events into frame payloads.
    pub fn frames(&mut self, evs: &[Event], mut each: impl FnMut(Bytes)) {
        self.hub.on_events(evs);
        self.hub.publish();
        self.drain();
        let all = Bytes::from(std::mem::take(&mut self.out));
        let mut pos = 0;
        while all.len() - pos >= 2 {
            let b = &all[pos..];
            let (len, h) = match b[1] & 0x7F {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) as usize, 10),
                l => (l as usize, 2),
            };
            if b[0] & 0x0F == 2 {
                each(all.slice(pos + h..pos + h + len));
            }
            pos += h + len;
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One task per subscriber: select on the channel and the socket, one send per message,
/// default configuration.
async fn conn_naive(s: tokio::net::TcpStream, mut rx: broadcast::Receiver<Bytes>) -> Result<(), Box<dyn std::error::Error>> {
    let mut ws: Ws = tokio_tungstenite::accept_async(s).await?;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(b) => ws.send(Message::Binary(b)).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            r = ws.next() => match r {
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}

/// As naive, but after each receive drains the channel (`try_recv`), feeds every message and
/// flushes once; 4 KiB read buffer.
async fn conn_tuned(s: tokio::net::TcpStream, mut rx: broadcast::Receiver<Bytes>) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws: Ws = tokio_tungstenite::accept_async_with_config(s, Some(cfg)).await?;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(b) => {
                    ws.feed(Message::Binary(b)).await?;
                    loop {
                        match rx.try_recv() {
                            Ok(b) => ws.feed(Message::Binary(b)).await?,
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(broadcast::error::TryRecvError::Closed) => return Ok(()),
                        }
                    }
                    ws.flush().await?;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            r = ws.next() => match r {
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}
