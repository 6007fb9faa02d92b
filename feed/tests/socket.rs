//! End-to-end over loopback sockets: real shards, tungstenite clients. Every test runs on each
//! backend (epoll, io_uring); io_uring is skipped, with the reason, where the kernel refuses it.

mod common;

use common::{engine, random_command, HANDSHAKE, Rng};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tickwire_core::engine::Level;
use tickwire_core::{Command, CommandKind, Engine, Event, Side};
use tickwire_feed::{BackendKind, Feed, FeedConfig, SlowPolicy};
use tickwire_protocol::md::sync::InstrumentSync;
use tickwire_protocol::md::{ClientMsg, ServerMsg};
use tungstenite::{Message, WebSocket};

/// Runs `body` on every backend this machine can run (say which is skipped and why).
fn on_each_backend(name: &str, body: fn(BackendKind)) {
    for kind in BackendKind::ALL {
        match kind.available() {
            Ok(()) => body(kind),
            Err(why) => eprintln!("{name}: SKIPPED on backend {kind}: {why}"),
        }
    }
}

type Ws = WebSocket<TcpStream>;

fn connect(addr: SocketAddr) -> Ws {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/md"), s).unwrap();
    ws
}

fn send(ws: &mut Ws, m: ClientMsg) {
    ws.send(Message::Binary(m.to_vec().into())).unwrap();
}

/// Runs `commands` random commands (no halts) then halts both instruments as an end marker;
/// returns the final expected books.
fn publish_flow(feed: &Feed, seed: u64, commands: usize) -> Engine {
    publish_paced(feed, seed, commands, 0)
}

/// As [`publish_flow`], sleeping 1 ms every `pace` batches (0: never).
fn publish_paced(feed: &Feed, seed: u64, commands: usize, pace: usize) -> Engine {
    let mut batches = 0;
    let mut eng = engine();
    let mut r = Rng(seed);
    let mut seq = 0;
    let mut batch: Vec<Event> = Vec::new();
    let mut sent = 0;
    while sent < commands {
        let c = random_command(&mut r);
        if matches!(CommandKind::from_u8(c.kind), Some(CommandKind::Halt | CommandKind::Resume)) {
            continue;
        }
        seq += 1;
        sent += 1;
        eng.handle(&c.with_seq(seq, seq), &mut batch);
        if batch.len() > 64 || r.below(4) == 0 {
            feed.publish(&batch);
            batch.clear();
            batches += 1;
            if pace > 0 && batches % pace == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for i in [1, 2] {
        seq += 1;
        eng.handle(&Command::set_halted(i, true).with_seq(seq, seq), &mut batch);
    }
    feed.publish(&batch);
    eng
}

/// Reads until both instruments reported the final halt; every message must be in sequence with
/// a matching checksum.
fn read_to_end(ws: &mut Ws) -> [InstrumentSync; 3] {
    let mut s: [InstrumentSync; 3] = Default::default();
    read_more(ws, &mut s);
    s
}

/// As [`read_to_end`], continuing from `s`; returns the number of snapshots received.
fn read_more(ws: &mut Ws, s: &mut [InstrumentSync; 3]) -> usize {
    let mut snapshots = 0;
    let mut halted = [false; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(halted[1] && halted[2]) {
        assert!(Instant::now() < deadline, "timed out");
        let m = ws.read().expect("read");
        let Message::Binary(b) = m else { continue };
        let msg = ServerMsg::decode(&b).expect("decodes");
        let i = msg.instrument() as usize;
        if i == 0 {
            continue;
        }
        s[i].apply(&msg).unwrap_or_else(|e| panic!("instrument {i}: {e:?}"));
        if let ServerMsg::Status(st) = msg {
            halted[i] = st.halted;
        }
        if let ServerMsg::Snapshot(sn) = msg {
            halted[i] = sn.halted;
            snapshots += 1;
        }
    }
    snapshots
}

fn assert_book(eng: &Engine, s: &InstrumentSync, inst: u32) {
    for side in [Side::Buy, Side::Sell] {
        let mut want: Vec<Level> = Vec::new();
        eng.depth(inst, side, usize::MAX, &mut want);
        let mut got = Vec::new();
        s.book.depth(side, usize::MAX, &mut got);
        assert_eq!(got, want);
    }
}

#[test]
fn two_shards_many_clients_end_to_end() {
    on_each_backend("two_shards_many_clients_end_to_end", two_shards_many_clients_end_to_end_on);
}

fn two_shards_many_clients_end_to_end_on(backend: BackendKind) {
    let mut cfg = FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1, 2]).with_backend(backend);
    cfg.shards = 2;
    cfg.shard.tick = Duration::from_millis(50);
    let feed = Feed::spawn(cfg).unwrap();
    let addr = feed.local_addr();
    let mut clients: Vec<Ws> = (0..6).map(|_| connect(addr)).collect();
    let mut syncs: Vec<[InstrumentSync; 3]> = Vec::new();
    for ws in clients.iter_mut() {
        let mut s: [InstrumentSync; 3] = Default::default();
        send(ws, ClientMsg::Subscribe { instrument: 1 });
        send(ws, ClientMsg::Subscribe { instrument: 2 });
        send(ws, ClientMsg::Ping { nonce: 9 });
        // Wait for the answers so the subscription is in place before the flow.
        let mut snaps = 0;
        while snaps < 2 {
            if let Message::Binary(b) = ws.read().unwrap() {
                let m = ServerMsg::decode(&b).unwrap();
                if let ServerMsg::Snapshot(sn) = m {
                    s[sn.instrument as usize].apply(&m).unwrap();
                    snaps += 1;
                }
            }
        }
        syncs.push(s);
    }
    let eng = publish_flow(&feed, 11, 3000);
    for (ws, s) in clients.iter_mut().zip(syncs.iter_mut()) {
        let more = read_more(ws, s);
        assert_eq!(more, 0, "no snapshot after the first ones");
        assert_book(&eng, &s[1], 1);
        assert_book(&eng, &s[2], 2);
        ws.close(None).unwrap();
    }
    std::thread::sleep(Duration::from_millis(150));
    let st = feed.stats();
    assert_eq!(st.accepted, 6);
    assert_eq!(st.protocol_errors, 0);
    assert_eq!(st.engine_gaps, 0);
    feed.shutdown().unwrap();
}

/// A client that subscribes then never reads (tiny receive buffer) is conflated; a normal client
/// on the same shard still gets every message in order.
#[test]
fn stalled_subscriber_does_not_hold_back_others() {
    on_each_backend("stalled_subscriber_does_not_hold_back_others", stalled_subscriber_does_not_hold_back_others_on);
}

fn stalled_subscriber_does_not_hold_back_others_on(backend: BackendKind) {
    for policy in [SlowPolicy::Conflate, SlowPolicy::Disconnect] {
        let mut cfg = FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1, 2]).with_backend(backend);
        cfg.shard.tick = Duration::from_millis(50);
        cfg.shard.sndbuf = Some(4096);
        cfg.shard.hub.budget_bytes = 256 * 1024;
        cfg.shard.hub.slow_policy = policy;
        let feed = Feed::spawn(cfg).unwrap();
        let addr = feed.local_addr();

        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut stalled: TcpStream = sock.into();
        stalled.write_all(HANDSHAKE).unwrap();
        for i in [1u32, 2] {
            stalled.write_all(&common::client_frame(2, &ClientMsg::Subscribe { instrument: i }.to_vec())).unwrap();
        }

        let mut good = connect(addr);
        send(&mut good, ClientMsg::Subscribe { instrument: 1 });
        send(&mut good, ClientMsg::Subscribe { instrument: 2 });
        let reader = std::thread::spawn(move || {
            let mut s: [InstrumentSync; 3] = Default::default();
            let snaps = read_more(&mut good, &mut s);
            (s, snaps)
        });
        let eng = publish_paced(&feed, 5, 20_000, 20);
        let (s, snaps) = reader.join().unwrap();
        assert_eq!(snaps, 2, "the reading client was never conflated");
        assert_book(&eng, &s[1], 1);
        assert_book(&eng, &s[2], 2);
        std::thread::sleep(Duration::from_millis(200));
        let st = feed.stats();
        match policy {
            SlowPolicy::Conflate => assert!(st.conflations >= 1, "{st:?}"),
            SlowPolicy::Disconnect => assert!(st.slow_disconnects >= 1, "{st:?}"),
        }
        drop(stalled);
        feed.shutdown().unwrap();
    }
}

/// Abrupt closes, half handshakes, garbage: the shard carries on.
#[test]
fn abrupt_and_garbage_connections() {
    on_each_backend("abrupt_and_garbage_connections", abrupt_and_garbage_connections_on);
}

fn abrupt_and_garbage_connections_on(backend: BackendKind) {
    let mut cfg = FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1, 2]).with_backend(backend);
    cfg.shard.tick = Duration::from_millis(50);
    let feed = Feed::spawn(cfg).unwrap();
    let addr = feed.local_addr();
    // Half a handshake, then gone.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&HANDSHAKE[..20]).unwrap();
    drop(s);
    // Garbage instead of HTTP: answered 400 and closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00\x01\x02 not http at all\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert!(resp.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&resp));
    // Upgraded and subscribed, then the socket is dropped without a close frame (RST if unread).
    for _ in 0..5 {
        let mut ws = connect(addr);
        send(&mut ws, ClientMsg::Subscribe { instrument: 1 });
        drop(ws);
    }
    // Oversize frame: close 1009.
    let mut ws = connect(addr);
    ws.send(Message::Binary(vec![0u8; 4000].into())).unwrap();
    let mut code = None;
    for _ in 0..10 {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                code = Some(u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(1009));
    // Still serving.
    let eng = publish_flow(&feed, 3, 200);
    let mut ws = connect(addr);
    send(&mut ws, ClientMsg::Subscribe { instrument: 1 });
    send(&mut ws, ClientMsg::Subscribe { instrument: 2 });
    let s = read_to_end(&mut ws);
    assert_book(&eng, &s[1], 1);
    std::thread::sleep(Duration::from_millis(200));
    let st = feed.stats();
    assert!(st.handshake_failures >= 1);
    assert!(st.closed >= 7, "{st:?}");
    feed.shutdown().unwrap();
}
