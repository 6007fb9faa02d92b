//! `tickwire-bench c100k-client`: one subscriber process of the c100k benchmark (started by the
//! controller, never by hand). It opens `--conns` WebSocket connections to the feed at
//! `--connect-rate` per second, each bound to a source address of its own /24 in 127.0.0.0/8
//! (127.0.N.1 ..= 127.0.N.250) so the 4-tuple space never runs out, subscribes each to one
//! instrument, and checks every connection's per-instrument sequence:
//!
//! - a sequenced message must start at the last applied sequence + 1, else a **gap**;
//! - a Snapshot after the first one may jump (the server conflated a slow connection): counted
//!   as a **conflation**, not a gap.
//!
//! Latency: receive wall clock − the engine stamp (`ts_ns` of DeltaBatch and Trade), recorded
//! while the controller says `measure`. Controller protocol on stdin: `measure`, `stop` (or EOF).
//! On stdout: `progress ESTABLISHED FAILED` lines, then `result k=v ...` and `hist v:c,...`.

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_protocol::md::ServerMsg;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Feed address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Connections to open.
    #[arg(long)]
    pub conns: usize,
    /// New connections per second.
    #[arg(long)]
    pub connect_rate: f64,
    /// Third byte of the source addresses (127.0.N.x).
    #[arg(long)]
    pub src_net: u8,
    /// Instruments 1..=N; connection i subscribes to 1 + i % N.
    #[arg(long, default_value_t = 1)]
    pub instruments: u32,
    /// Give up opening after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub ramp_timeout: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Handshake,
    Open,
    Closed,
}

struct Conn {
    /// `None` once closed (the fd is given back).
    stream: Option<TcpStream>,
    /// Completed its handshake once.
    est: bool,
    st: St,
    /// Bytes of an incomplete HTTP response or frame.
    partial: Vec<u8>,
    /// Last applied sequence per instrument (a subscriber may get several: the baseline server
    /// sends every instrument to everyone).
    seqs: [(u32, u64); 4],
    snapshots: u32,
    instrument: u32,
}

impl Conn {
    /// The socket of a connection that is not closed.
    fn s(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("only open connections are handled")
    }
}

const REQUEST: &[u8] = b"GET /md HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame (RFC 6455 requires client frames masked) carrying a Subscribe.
fn subscribe_frame(instrument: u32, mask: [u8; 4]) -> Vec<u8> {
    let payload = tickwire_protocol::md::ClientMsg::Subscribe { instrument }.to_vec();
    let mut f = vec![0x82, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[derive(Default)]
struct Counters {
    opened: u64,
    established: u64,
    connect_failures: u64,
    handshake_failures: u64,
    closed_by_server: u64,
    msgs: u64,
    measured_msgs: u64,
    gaps: u64,
    conflations: u64,
    errors: u64,
    first_connect: Option<Instant>,
    full_at: Option<Instant>,
}

fn open(args: &ClientArgs, i: usize) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    // Choose the port at connect time, from the whole 4-tuple (not per address at bind time).
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd, a pointer to a live c_int and its size; the kernel only reads it.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let src = Ipv4Addr::new(127, 0, args.src_net, 1 + (i % 250) as u8);
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    match s.connect(&args.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// Parses server frames from `buf`; returns bytes consumed.
fn frames(buf: &[u8], c: &mut Conn, k: &mut Counters, measuring: bool, hist: &mut Histogram<u64>) -> usize {
    let mut off = 0;
    loop {
        let b = &buf[off..];
        if b.len() < 2 {
            return off;
        }
        let op = b[0] & 0x0f;
        let (len, hl) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap_or([0; 8])) as usize, 10),
            126 | 127 => return off,
            n => (n as usize, 2),
        };
        if b.len() < hl + len {
            return off;
        }
        let payload = &b[hl..hl + len];
        off += hl + len;
        match op {
            2 => {
                k.msgs += 1;
                if measuring {
                    k.measured_msgs += 1;
                }
                on_msg(payload, c, k, measuring, hist);
            }
            8 => {
                c.st = St::Closed;
                return off;
            }
            _ => {}
        }
    }
}

fn on_msg(p: &[u8], c: &mut Conn, k: &mut Counters, measuring: bool, hist: &mut Histogram<u64>) {
    let Ok(m) = ServerMsg::decode(p) else {
        k.errors += 1;
        return;
    };
    let inst = match m {
        ServerMsg::Snapshot(s) => s.instrument,
        ServerMsg::DeltaBatch(d) => d.instrument,
        ServerMsg::Trade(t) => t.instrument,
        ServerMsg::Status(s) => s.instrument,
        ServerMsg::Candle(cd) => cd.instrument,
        _ => 0,
    };
    let slot = c.seqs.iter().position(|e| e.0 == inst).or_else(|| c.seqs.iter().position(|e| e.0 == 0)).unwrap_or(inst as usize % 4);
    c.seqs[slot].0 = inst;
    let last_seq = &mut c.seqs[slot].1;
    let mut seq_step = |first: u64, last: u64, k: &mut Counters| {
        if *last_seq != 0 && first != *last_seq + 1 {
            k.gaps += 1;
        }
        *last_seq = last;
    };
    let mut lat = |ts: u64| {
        if measuring && ts != 0 {
            let d = super::engine::wall_ns().saturating_sub(ts);
            hist.saturating_record(d.max(1));
        }
    };
    match m {
        ServerMsg::Snapshot(s) => {
            if c.snapshots > 0 && s.seq != *last_seq {
                k.conflations += 1;
            }
            c.snapshots += 1;
            *last_seq = s.seq;
        }
        ServerMsg::DeltaBatch(d) => {
            seq_step(d.first_seq, d.last_seq, k);
            lat(d.ts_ns);
        }
        ServerMsg::Trade(t) => {
            seq_step(t.seq, t.seq, k);
            lat(t.ts_ns);
        }
        ServerMsg::Status(s) => seq_step(s.seq, s.seq, k),
        ServerMsg::Candle(cd) => seq_step(cd.seq, cd.seq, k),
        ServerMsg::Error(_) => k.errors += 1,
        ServerMsg::Heartbeat(_) => {}
    }
    let _ = c.instrument;
}

#[allow(clippy::too_many_arguments)]
fn handle(
    c: &mut Conn,
    ev: &mio::event::Event,
    k: &mut Counters,
    scratch: &mut [u8],
    measuring: bool,
    hist: &mut Histogram<u64>,
    first_error: &mut Option<String>,
    mask_seed: &mut u32,
    target: usize,
) {
    if c.st == St::Closed {
        return;
    }
    if c.st == St::Connecting && (ev.is_writable() || ev.is_error()) {
        match c.s().take_error() {
            Ok(None) if c.s().peer_addr().is_ok() => {
                if c.s().write(REQUEST).map(|n| n == REQUEST.len()).unwrap_or(false) {
                    c.st = St::Handshake;
                } else {
                    k.handshake_failures += 1;
                    c.st = St::Closed;
                }
            }
            Ok(None) => return,
            Ok(Some(e)) | Err(e) => {
                first_error.get_or_insert_with(|| format!("connect: {e}"));
                k.connect_failures += 1;
                c.st = St::Closed;
            }
        }
    }
    if !(ev.is_readable() || ev.is_read_closed()) || c.st == St::Closed || c.st == St::Connecting {
        return;
    }
    loop {
        let n = match c.s().read(scratch) {
            Ok(0) => {
                if c.st == St::Handshake {
                    k.handshake_failures += 1;
                } else {
                    k.closed_by_server += 1;
                }
                c.st = St::Closed;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                first_error.get_or_insert_with(|| format!("read: {e}"));
                k.closed_by_server += 1;
                c.st = St::Closed;
                break;
            }
        };
        let mut data: Vec<u8>;
        let buf: &[u8] = if c.partial.is_empty() {
            &scratch[..n]
        } else {
            data = std::mem::take(&mut c.partial);
            data.extend_from_slice(&scratch[..n]);
            &data
        };
        let mut used = 0;
        if c.st == St::Handshake {
            match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                None => {
                    if buf.len() > 4096 {
                        k.handshake_failures += 1;
                        c.st = St::Closed;
                        break;
                    }
                    c.partial = buf.to_vec();
                    continue;
                }
                Some(end) => {
                    if !buf.starts_with(b"HTTP/1.1 101") {
                        k.handshake_failures += 1;
                        c.st = St::Closed;
                        break;
                    }
                    used = end + 4;
                    *mask_seed = mask_seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let f = subscribe_frame(c.instrument, mask_seed.to_le_bytes());
                    if c.s().write(&f).map(|n| n == f.len()).unwrap_or(false) {
                        c.st = St::Open;
                        c.est = true;
                        k.established += 1;
                        if k.established as usize == target {
                            k.full_at = Some(Instant::now());
                        }
                    } else {
                        k.handshake_failures += 1;
                        c.st = St::Closed;
                        break;
                    }
                }
            }
        }
        used += frames(&buf[used..], c, k, measuring, hist);
        if used < buf.len() {
            c.partial = buf[used..].to_vec();
        }
        if c.st == St::Closed {
            k.closed_by_server += 1;
            break;
        }
    }
}

pub fn run(args: ClientArgs) {
    super::raise_nofile();
    // 0 = ramping, 1 = measuring, 2 = stop.
    let phase = Arc::new(AtomicU8::new(0));
    let p2 = phase.clone();
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = hold.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line.as_deref().map(str::trim) {
                Ok("measure") => p2.store(1, Ordering::Relaxed),
                Ok("hold") => h2.store(true, Ordering::Relaxed),
                Ok("stop") | Err(_) => break,
                _ => {}
            }
        }
        p2.store(2, Ordering::Relaxed);
    });
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            println!("result fatal=\"poll: {e}\"");
            return;
        }
    };
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Conn> = Vec::with_capacity(args.conns);
    let mut k = Counters::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram bounds");
    let mut scratch = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut mask_seed = 0x1234_5678u32 ^ std::process::id();
    let mut first_error: Option<String> = None;
    let mut active = 0usize;
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == 2 {
            break;
        }
        let measuring = ph == 1;
        // Ramp.
        let ramping = start.elapsed().as_secs_f64() < args.ramp_timeout && !hold.load(Ordering::Relaxed);
        let target = ((start.elapsed().as_secs_f64() * args.connect_rate) as usize + 1).min(args.conns);
        let mut budget = 2_000;
        // Failed attempts (before their handshake completed) free their slot: retried, up to
        // three attempts per connection in all.
        while ramping && active < target && (k.opened as usize) < args.conns * 3 && budget > 0 {
            budget -= 1;
            let i = conns.len();
            let attempt = k.opened as usize;
            k.first_connect.get_or_insert_with(Instant::now);
            k.opened += 1;
            match open(&args, attempt) {
                Ok(s) => {
                    let mut stream = TcpStream::from_std(s);
                    if poll
                        .registry()
                        .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        k.connect_failures += 1;
                    }
                    active += 1;
                    conns.push(Conn {
                        stream: Some(stream),
                        est: false,
                        st: St::Connecting,
                        partial: Vec::new(),
                        seqs: [(0, 0); 4],
                        snapshots: 0,
                        instrument: 1 + (i as u32 % args.instruments.max(1)),
                    });
                }
                Err(e) => {
                    k.connect_failures += 1;
                    first_error.get_or_insert_with(|| format!("connect: {e}"));
                    break;
                }
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                first_error.get_or_insert_with(|| format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if let Some(c) = conns.get_mut(i) {
                handle(
                    c,
                    ev,
                    &mut k,
                    &mut scratch,
                    measuring,
                    &mut hist,
                    &mut first_error,
                    &mut mask_seed,
                    args.conns,
                );
                if c.st == St::Closed {
                    if let Some(mut s) = c.stream.take() {
                        let _ = poll.registry().deregister(&mut s);
                        if c.est {
                            k.established -= 1;
                        } else {
                            active -= 1;
                        }
                    }
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = Instant::now();
            let failed = k.connect_failures + k.handshake_failures;
            println!("progress {} {} {}", k.established, failed, k.closed_by_server);
            let _ = std::io::stdout().flush();
        }
    }
    let full = k.full_at.map_or(0, |t| t.duration_since(start).as_nanos() as u64);
    let first = k.first_connect.map_or(0, |t| t.duration_since(start).as_nanos() as u64);
    println!(
        "result established={} opened={} connect_failures={} handshake_failures={} closed_by_server={} msgs={} \
         measured_msgs={} gaps={} conflations={} errors={} first_connect_ns={first} full_ns={full} error={:?}",
        k.established,
        k.opened,
        k.connect_failures,
        k.handshake_failures,
        k.closed_by_server,
        k.msgs,
        k.measured_msgs,
        k.gaps,
        k.conflations,
        k.errors,
        first_error.unwrap_or_default().replace(' ', "_"),
    );
    let pairs: Vec<String> = hist
        .iter_recorded()
        .map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value()))
        .collect();
    println!("hist {}", pairs.join(","));
    let _ = std::io::stdout().flush();
    // Sockets close as the process exits.
}
