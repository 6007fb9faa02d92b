//! Memory per idle subscriber: 2000 WebSocket subscribers over loopback against an in-process
//! shard, on each backend (io_uring skipped, with the reason, where the kernel refuses it). Two
//! measures, neither depending on timing:
//!
//! - the shard's own accounting ([`FeedShard::memory`], sizes and capacities of everything it
//!   holds for connections), and
//! - a counting global allocator: live heap bytes after the subscribers are idle minus before they
//!   connected (requested sizes; the allocator's own per-chunk overhead is not included).
//!
//! Both must be at most [`LIMIT`] bytes per connection. "Idle" is observed, not waited for: every
//! client has read its upgrade answer and snapshots, then the shard has run two more ticks (its
//! tick counter, `HubStats::ticks`), so the per-tick trim of burst-sized tables has run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_feed::{BackendKind, FeedShard, HubConfig, ShardConfig, ShardMemory};
use tickwire_protocol::md::ClientMsg;

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

/// Reads until `want` server frames followed the `\r\n\r\n` of the upgrade answer.
fn read_upgrade_and_frames(s: &mut TcpStream, want: usize) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "no upgrade: {:?}", String::from_utf8_lossy(&buf[..p]));
            let mut pos = p + 4;
            let mut n = 0;
            while buf.len() >= pos + 2 {
                let len7 = (buf[pos + 1] & 0x7F) as usize;
                let (hl, len) = match len7 {
                    126 if buf.len() >= pos + 4 => (4, u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize),
                    126 => break,
                    127 if buf.len() >= pos + 10 => (10, u64::from_be_bytes(buf[pos + 2..pos + 10].try_into().unwrap()) as usize),
                    127 => break,
                    l => (2, l),
                };
                if buf.len() < pos + hl + len {
                    break;
                }
                pos += hl + len;
                n += 1;
            }
            if n >= want {
                return;
            }
        }
        let k = s.read(&mut tmp).expect("read");
        assert!(k > 0, "server closed");
        buf.extend_from_slice(&tmp[..k]);
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

fn measure(kind: BackendKind) {
    let instruments = vec![1, 2];
    let mut cfg = ShardConfig::new(HubConfig::new(instruments.clone()));
    cfg.backend = kind;
    cfg.tick = Duration::from_millis(20);
    // Heartbeats off: after setup nothing changes, so the idle state is well defined.
    cfg.heartbeats = false;
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
    let mut warm = TcpStream::connect(addr).unwrap();
    warm.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    warm.write_all(HANDSHAKE).unwrap();
    read_upgrade_and_frames(&mut warm, 0);
    warm.write_all(&subscribe).unwrap();
    let t0 = stats.lock().unwrap().ticks;
    wait_until("two ticks after the warm-up", || stats.lock().unwrap().ticks >= t0 + 2);
    let mut clients: Vec<TcpStream> = Vec::with_capacity(SUBSCRIBERS);
    let before = LIVE.load(Ordering::SeqCst);

    for _ in 0..SUBSCRIBERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(HANDSHAKE).unwrap();
        clients.push(s);
    }
    for s in &mut clients {
        read_upgrade_and_frames(s, 0);
        s.write_all(&subscribe).unwrap();
    }
    // (the upgrade answer was read above; now the two snapshots)
    for s in &mut clients {
        let mut hdr = [0u8; 2];
        for _ in 0..instruments.len() {
            s.read_exact(&mut hdr).unwrap();
            let len = match hdr[1] & 0x7F {
                126 => {
                    let mut l = [0u8; 2];
                    s.read_exact(&mut l).unwrap();
                    u16::from_be_bytes(l) as usize
                }
                l => l as usize,
            };
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).unwrap();
            assert_eq!(body.first(), Some(&1), "expected a Snapshot");
        }
    }
    let t1 = stats.lock().unwrap().ticks;
    wait_until("two ticks after every subscriber is idle", || stats.lock().unwrap().ticks >= t1 + 2);
    stop.store(true, Ordering::Release);
    notifier.notify();
    let (m, live) = mem_rx.recv().unwrap();
    th.join().unwrap();
    // The clients' own Vec<TcpStream> (4 bytes each) is in the delta too: subtract it.
    let client_side = (clients.capacity() * std::mem::size_of::<TcpStream>()) as isize;
    let heap_per_conn = (live - before - client_side) / SUBSCRIBERS as isize;
    eprintln!(
        "memory {kind}: {} connections, accounted hub {} B + backend {} B = {} B/conn (fixed per shard {} B); heap delta {} B/conn",
        m.conns,
        m.hub_bytes,
        m.backend_bytes,
        m.per_conn_bytes(),
        m.fixed_bytes,
        heap_per_conn
    );
    assert_eq!(m.conns, SUBSCRIBERS + 1);
    assert!(m.per_conn_bytes() <= LIMIT, "{kind}: accounted {} B per idle connection > {LIMIT}", m.per_conn_bytes());
    assert!(heap_per_conn <= LIMIT as isize, "{kind}: heap delta {heap_per_conn} B per idle connection > {LIMIT}");
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
            Ok(()) => measure(kind),
            Err(why) => eprintln!("idle_subscribers: SKIPPED on backend {kind}: {why}"),
        }
    }
}
