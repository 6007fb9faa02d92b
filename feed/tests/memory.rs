//! Memory per idle subscriber: 2000 WebSocket subscribers over loopback against an in-process
//! shard, on each backend (io_uring skipped, with the reason, where the kernel refuses it), with
//! heartbeats off and on. Two measures, neither depending on timing:
//!
//! - the shard's own accounting ([`FeedShard::memory`], sizes and capacities of everything it
//!   holds for connections), and
//! - a counting global allocator: live heap bytes after the subscribers are idle minus before they
//!   connected (requested sizes; the allocator's own per-chunk overhead is not included).
//!
//! Both must be at most [`LIMIT`] bytes per connection. "Idle" is observed, not waited for: every
//! client has read its upgrade answer and snapshots, then the shard has run two more ticks (its
//! tick counter, `HubStats::ticks`), so the per-tick trim of burst-sized tables has run. With
//! heartbeats on, every tick sends one to every connection (the clients do not read them), and
//! the shard stops right after a tick: a heartbeat burst may be in flight when it is measured, so
//! the burst itself must not cost a buffer per connection.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_feed::{BackendKind, FeedShard, HubConfig, ShardConfig, ShardMemory};
use tickwire_protocol::md::{self, ClientMsg};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Idle subscribers per backend.
const SUBSCRIBERS: usize = 2000;
/// Bytes per idle subscriber allowed (beyond the kernel's own socket and epoll memory).
const LIMIT: usize = 256;

const HANDSHAKE: &[u8] = b"GET /md HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x82, 0x80 | payload.len() as u8];
    let m = [0x11, 0x22, 0x33, 0x44];
    v.extend_from_slice(&m);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
    v
}

/// A subscriber's socket and the bytes read from it but not yet parsed.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 4096];
        let k = self.s.read(&mut tmp).expect("read");
        assert!(k > 0, "server closed");
        self.buf.extend_from_slice(&tmp[..k]);
    }

    /// Reads the upgrade answer (keeping what follows it).
    fn read_upgrade(&mut self) {
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(self.buf.starts_with(b"HTTP/1.1 101"), "no upgrade: {:?}", String::from_utf8_lossy(&self.buf[..p]));
                self.buf.drain(..p + 4);
                return;
            }
            self.fill();
        }
    }

    /// The payload of the next server frame.
    fn next_frame(&mut self) -> Vec<u8> {
        loop {
            let b = &self.buf;
            if b.len() >= 2 {
                let (hl, len) = match b[1] & 0x7F {
                    126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
                    127 if b.len() >= 10 => (10, u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize),
                    126 | 127 => (usize::MAX, 0),
                    l => (2, l as usize),
                };
                if hl != usize::MAX && b.len() >= hl + len {
                    let payload = b[hl..hl + len].to_vec();
                    self.buf.drain(..hl + len);
                    return payload;
                }
            }
            self.fill();
        }
    }

    /// Reads `n` snapshots, skipping heartbeats.
    fn read_snapshots(&mut self, n: usize) {
        let mut seen = 0;
        while seen < n {
            let body = self.next_frame();
            match body.first() {
                Some(&md::MSG_HEARTBEAT) => {}
                Some(&md::MSG_SNAPSHOT) => seen += 1,
                other => panic!("expected a Snapshot, got message type {other:?}"),
            }
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    // A generous bound only so a broken shard fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn measure(kind: BackendKind, heartbeats: bool) {
    let instruments = vec![1, 2];
    let mut hub = HubConfig::new(instruments.clone());
    // 20 ms ticks: a connection still in its handshake after the default 3 ticks would be closed,
    // which a loaded machine (or a debug build) answering 2000 upgrades at once can exceed.
    hub.linger_ticks = 250;
    let mut cfg = ShardConfig::new(hub);
    cfg.backend = kind;
    cfg.tick = Duration::from_millis(20);
    // Heartbeats off: after setup nothing changes, so the idle state is well defined. On: the
    // state also holds what a heartbeat burst leaves (or has in flight).
    cfg.heartbeats = heartbeats;
    let listener = tickwire_feed::sys::bind_reuseport("127.0.0.1:0".parse().unwrap(), 4096).unwrap();
    let (_tx, rx) = tickwire_feed::channel();
    let mut shard = FeedShard::new(listener, rx, cfg).unwrap();
    let addr = shard.local_addr();
    let stats = shard.stats_handle();
    let notifier = shard.notifier();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (mem_tx, mem_rx) = std::sync::mpsc::channel::<(ShardMemory, isize)>();
    let th = std::thread::spawn(move || {
        shard.run(&stop2).unwrap();
        let m = shard.memory();
        let live = LIVE.load(Ordering::SeqCst);
        mem_tx.send((m, live)).unwrap();
        drop(shard);
    });
    let subscribe: Vec<u8> = instruments.iter().flat_map(|&i| client_frame(&ClientMsg::Subscribe { instrument: i }.to_vec())).collect();

    // Warm-up: one subscriber, so the shard's fixed buffers (io_uring ring, scratch) exist.
    let mut warm = Client::connect(addr);
    warm.s.write_all(HANDSHAKE).unwrap();
    warm.read_upgrade();
    warm.s.write_all(&subscribe).unwrap();
    warm.read_snapshots(instruments.len());
    let t0 = stats.lock().unwrap().ticks;
    wait_until("two ticks after the warm-up", || stats.lock().unwrap().ticks >= t0 + 2);
    // The clients' own memory (their table and read buffers) is allocated before `before`, out
    // of the delta; 8 KiB is more than a client ever holds unparsed (checked below).
    let mut clients: Vec<Client> = Vec::with_capacity(SUBSCRIBERS);
    let mut bufs: Vec<Vec<u8>> = (0..SUBSCRIBERS).map(|_| Vec::with_capacity(8192)).collect();
    let before = LIVE.load(Ordering::SeqCst);

    for b in &mut bufs {
        let mut c = Client::connect(addr);
        c.buf = std::mem::take(b);
        c.s.write_all(HANDSHAKE).unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        c.read_upgrade();
        c.s.write_all(&subscribe).unwrap();
    }
    for c in &mut clients {
        c.read_snapshots(instruments.len());
    }
    let t1 = stats.lock().unwrap().ticks;
    wait_until("two ticks after every subscriber is idle", || stats.lock().unwrap().ticks >= t1 + 2);
    stop.store(true, Ordering::Release);
    notifier.notify();
    let (m, live) = mem_rx.recv().unwrap();
    th.join().unwrap();
    assert!(clients.iter().all(|c| c.buf.capacity() == 8192), "a client's read buffer grew (its memory would be in the delta)");
    let heap_per_conn = (live - before) / SUBSCRIBERS as isize;
    let hb = if heartbeats { "heartbeats on" } else { "heartbeats off" };
    eprintln!(
        "memory {kind}, {hb}: {} connections, accounted hub {} B + backend {} B = {} B/conn (fixed per shard {} B); heap delta {} B/conn",
        m.conns,
        m.hub_bytes,
        m.backend_bytes,
        m.per_conn_bytes(),
        m.fixed_bytes,
        heap_per_conn
    );
    assert_eq!(m.conns, SUBSCRIBERS + 1);
    assert!(m.per_conn_bytes() <= LIMIT, "{kind}, {hb}: accounted {} B per idle connection > {LIMIT}", m.per_conn_bytes());
    assert!(heap_per_conn <= LIMIT as isize, "{kind}, {hb}: heap delta {heap_per_conn} B per idle connection > {LIMIT}");
    drop(clients);
    drop(warm);
}

/// Raises the soft open-file limit to the hard one (2 fds per subscriber in this process).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

#[test]
fn idle_subscribers_cost_at_most_256_bytes_each() {
    raise_nofile();
    for kind in BackendKind::ALL {
        match kind.available() {
            Ok(()) => {
                measure(kind, false);
                measure(kind, true);
            }
            Err(why) => eprintln!("idle_subscribers: SKIPPED on backend {kind}: {why}"),
        }
    }
}
