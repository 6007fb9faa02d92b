//! Client role: holds `count` WebSocket subscribers (mio, one thread), each bound to a source
//! address `NET.x` (x cycling 1..=250) so the 4-tuple space never runs out; checks per-instrument
//! sequence continuity and records latency (engine timestamp → receive) in an HDR histogram.
//! Control on stdin: `RESET` (zero the counters), `REPORT` (prints `STATS …`, `HIST v:c …`,
//! `END`), `QUIT`. Prints `CONNECTED n` once every subscriber is upgraded.

use super::server::{client_frame, now_ns, raise_nofile, HANDSHAKE};
use super::stats::Counts;
use tickwire_protocol::md::ClientMsg;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tickwire_protocol::md::ServerMsg;

/// Handshakes in progress at once.
const CONNECTING_MAX: usize = 256;

#[derive(PartialEq)]
enum St {
    Connecting,
    Handshake,
    Open,
    Dead,
}

struct Conn {
    s: TcpStream,
    st: St,
    partial: Vec<u8>,
    /// Next expected sequence per instrument (0: not known yet).
    next: Vec<u64>,
}

fn connect(net: &str, i: usize, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(IP_BIND_ADDRESS_NO_PORT) with a live int: the port is chosen at connect
    // time per 4-tuple, not per source address.
    unsafe {
        libc::setsockopt(std::os::fd::AsRawFd::as_raw_fd(&s), libc::IPPROTO_IP, 24, (&one as *const libc::c_int).cast(), 4);
    }
    let src: SocketAddr = format!("{net}.{}:0", 1 + i % 250).parse().map_err(|_| std::io::Error::other("bad --src-net"))?;
    s.bind(&src.into())?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Parses complete frames off `data` (server frames: unmasked); returns bytes consumed.
fn frames(data: &[u8], c: &mut Conn, st: &mut Counts, hist: &mut Histogram<u64>, now: u64) -> usize {
    let mut pos = 0;
    loop {
        let b = &data[pos..];
        if b.len() < 2 {
            return pos;
        }
        let (len, h) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) as usize, 10),
            126 | 127 => return pos,
            l => (l as usize, 2),
        };
        if b.len() < h + len {
            return pos;
        }
        let op = b[0] & 0x0F;
        if op == 8 {
            c.st = St::Dead;
            return pos + h + len;
        }
        if op == 2 {
            on_msg(&b[h..h + len], c, st, hist, now);
        }
        pos += h + len;
    }
}

fn on_msg(p: &[u8], c: &mut Conn, st: &mut Counts, hist: &mut Histogram<u64>, now: u64) {
    let Ok(m) = ServerMsg::decode(p) else {
        st.errors += 1;
        return;
    };
    let i = m.instrument() as usize;
    if i == 0 || i >= c.next.len() {
        return;
    }
    let (first, last, ts) = match m {
        ServerMsg::Snapshot(s) => {
            c.next[i] = s.seq + 1;
            st.snapshots += 1;
            return;
        }
        ServerMsg::DeltaBatch(d) => (d.first_seq, d.last_seq, d.ts_ns),
        ServerMsg::Trade(t) => (t.seq, t.seq, t.ts_ns),
        ServerMsg::Status(s) => (s.seq, s.seq, 0),
        ServerMsg::Error(_) => {
            st.errors += 1;
            return;
        }
        _ => return,
    };
    if c.next[i] != 0 && first != c.next[i] {
        st.gaps += 1;
        st.missing += first.saturating_sub(c.next[i]);
    }
    c.next[i] = last + 1;
    st.msgs += 1;
    st.updates += last + 1 - first;
    if ts > 0 {
        hist.saturating_record((now.saturating_sub(ts) / 1000).max(1));
    }
}

/// Client role entry point.
pub fn run(addr: SocketAddr, net: &str, count: usize, instruments: u32) {
    raise_nofile();
    let (ctl_tx, ctl) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(l) = line else { break };
            if ctl_tx.send(l).is_err() {
                break;
            }
        }
        let _ = ctl_tx.send("QUIT".into());
    });
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(4096);
    let hello = HANDSHAKE;
    // Sent once upgraded (tungstenite refuses bytes after the request in the same read).
    let subs: Vec<u8> = (1..=instruments).flat_map(|i| client_frame(&ClientMsg::Subscribe { instrument: i }.to_vec())).collect();
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    let mut started = 0usize;
    let mut opened = 0usize;
    let mut pending = 0usize;
    let mut announced = false;
    let mut st = Counts::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut scratch = vec![0u8; 256 * 1024];
    let t_start = Instant::now();
    loop {
        while started < count && pending < CONNECTING_MAX {
            match connect(net, started, addr) {
                Ok(mut s) => {
                    poll.registry().register(&mut s, Token(started), Interest::READABLE | Interest::WRITABLE).expect("register");
                    conns.push(Conn { s, st: St::Connecting, partial: Vec::new(), next: vec![0; instruments as usize + 1] });
                }
                Err(e) => {
                    eprintln!("fanout client {net}: connect #{started}: {e}");
                    std::process::exit(2);
                }
            }
            started += 1;
            pending += 1;
        }
        if !announced && opened == count {
            announced = true;
            println!("CONNECTED {count} {:.2}", t_start.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        }
        loop {
            match ctl.try_recv() {
                Ok(l) if l == "RESET" => {
                    st = Counts::default();
                    hist.reset();
                }
                Ok(l) if l == "REPORT" => {
                    let dead = conns.iter().filter(|c| c.st == St::Dead).count();
                    println!("{}", Counts { dead: dead as u64, opened: opened as u64, ..st }.to_line());
                    let mut h = String::from("HIST");
                    for v in hist.iter_recorded() {
                        h.push_str(&format!(" {}:{}", v.value_iterated_to(), v.count_at_value()));
                    }
                    println!("{h}");
                    println!("END");
                    let _ = std::io::stdout().flush();
                }
                Ok(l) if l == "QUIT" => return,
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(5))) {
            if e.kind() != ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.st == St::Connecting && (ev.is_writable() || ev.is_error()) {
                match c.s.write(hello) {
                    Ok(n) if n == hello.len() => c.st = St::Handshake,
                    Ok(_) | Err(_) => {
                        if c.s.peer_addr().is_err() && !ev.is_error() {
                            continue; // not connected yet
                        }
                        eprintln!("fanout client {net}: connection #{i} failed during connect");
                        c.st = St::Dead;
                        pending -= 1;
                        continue;
                    }
                }
            }
            if !ev.is_readable() || c.st == St::Dead || c.st == St::Connecting {
                continue;
            }
            loop {
                let n = match c.s.read(&mut scratch) {
                    Ok(0) => {
                        c.st = St::Dead;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.st = St::Dead;
                        break;
                    }
                };
                let now = now_ns();
                if !c.partial.is_empty() {
                    let mut joined = std::mem::take(&mut c.partial);
                    joined.extend_from_slice(&scratch[..n]);
                    let used = consume(&joined, c, &mut st, &mut hist, now, &mut opened, &mut pending, &subs);
                    joined.drain(..used);
                    c.partial = joined;
                } else {
                    let data = &scratch[..n];
                    let used = consume(data, c, &mut st, &mut hist, now, &mut opened, &mut pending, &subs);
                    if used < data.len() {
                        c.partial = data[used..].to_vec();
                    }
                }
                if n < scratch.len() {
                    break;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn consume(data: &[u8], c: &mut Conn, st: &mut Counts, hist: &mut Histogram<u64>, now: u64, opened: &mut usize, pending: &mut usize, subs: &[u8]) -> usize {
    let mut used = 0;
    if c.st == St::Handshake {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { return 0 };
        if !data.starts_with(b"HTTP/1.1 101") {
            eprintln!("fanout client: upgrade refused: {:?}", String::from_utf8_lossy(&data[..end]));
            c.st = St::Dead;
            *pending -= 1;
            return data.len();
        }
        c.st = St::Open;
        if c.s.write(subs).ok() != Some(subs.len()) {
            eprintln!("fanout client: subscribe write failed");
            c.st = St::Dead;
            *pending -= 1;
            return data.len();
        }
        *opened += 1;
        *pending -= 1;
        used = end + 4;
    }
    if c.st == St::Open {
        used += frames(&data[used..], c, st, hist, now);
    }
    used
}
