//! Sans-IO tests of the hub: book reconstruction against the engine, resume, slow consumers,
//! hostile client bytes.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{client_frame, engine, random_command, FakeClient, Frame, HANDSHAKE, Rng};
use proptest::prelude::*;
use tickwire_core::engine::Level;
use tickwire_core::{Engine, Event, Side};
use tickwire_feed::hub::{Hub, HubConfig, SlowPolicy};
use tickwire_protocol::md::sync::{Applied, InstrumentSync};
use tickwire_protocol::md::{ClientMsg, ErrorCode, ServerMsg};

fn hub() -> Hub {
    Hub::new(HubConfig::new(vec![1, 2]))
}

/// Applies every binary frame to per-instrument syncs; panics on any gap or checksum failure.
fn apply(frames: &[Frame], syncs: &mut [InstrumentSync; 3]) -> Vec<ServerMsg<'static>> {
    let mut kinds = Vec::new();
    for f in frames {
        assert_eq!(f.opcode, 2, "binary frames only");
        let p: &'static [u8] = Box::leak(f.payload.clone().into_boxed_slice());
        let m = ServerMsg::decode(p).expect("server message decodes");
        let i = m.instrument() as usize;
        if (1..=2).contains(&i) {
            syncs[i].apply(&m).unwrap_or_else(|e| panic!("instrument {i}: {e:?}"));
        }
        kinds.push(m);
    }
    kinds
}

fn assert_same_book(engine: &Engine, sync: &InstrumentSync, inst: u32) {
    for side in [Side::Buy, Side::Sell] {
        let mut want: Vec<Level> = Vec::new();
        engine.depth(inst, side, usize::MAX, &mut want);
        let mut got = Vec::new();
        sync.book.depth(side, usize::MAX, &mut got);
        assert_eq!(got, want, "instrument {inst} {side:?}");
    }
    assert_eq!(sync.book.halted, engine.book(inst).unwrap().halted);
}

fn run_flow(seed: u64, commands: usize, max_batch: u64, late_join: usize) {
    let mut r = Rng(seed | 1);
    let mut eng = engine();
    let mut h = hub();
    let mut a = FakeClient::connect(&mut h);
    a.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    a.send_msg(&mut h, ClientMsg::Subscribe { instrument: 2 });
    let mut sa: [InstrumentSync; 3] = Default::default();
    let mut late: Option<(FakeClient, [InstrumentSync; 3])> = None;
    let mut seq = 0;
    let mut done = 0;
    while done < commands {
        let n = 1 + r.below(max_batch) as usize;
        let mut evs: Vec<Event> = Vec::new();
        for _ in 0..n {
            seq += 1;
            eng.handle(&random_command(&mut r).with_seq(seq, seq * 1000), &mut evs);
        }
        done += n;
        h.on_events(&evs);
        h.publish();
        let fa = a.frames(&mut h);
        apply(&fa, &mut sa);
        for i in 1..=2 {
            assert_same_book(&eng, &sa[i], i as u32);
        }
        if late.is_none() && done >= late_join {
            let mut c = FakeClient::connect(&mut h);
            c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 2 });
            c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
            late = Some((c, Default::default()));
        }
        if let Some((c, s)) = late.as_mut() {
            let f = c.frames(&mut h);
            apply(&f, s);
            for i in 1..=2 {
                assert_same_book(&eng, &s[i], i as u32);
                assert_eq!(s[i].seq, sa[i].seq);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// A subscriber rebuilding the book from snapshot + deltas has the engine's book (levels,
    /// quantities, order counts, halted) after every published batch, with no gap and every
    /// checksum right; a subscriber joining mid-stream agrees too.
    #[test]
    fn subscriber_book_equals_engine_book(seed in any::<u64>(), max_batch in 1u64..6, late in 0usize..150) {
        run_flow(seed, 300, max_batch, late);
    }
}

#[test]
fn long_flow_single_seed() {
    run_flow(42, 3000, 8, 1000);
}

fn feed_some(eng: &mut Engine, h: &mut Hub, r: &mut Rng, seq: &mut u64, n: usize) {
    for _ in 0..n {
        *seq += 1;
        let mut evs = Vec::new();
        eng.handle(&random_command(r).with_seq(*seq, 0), &mut evs);
        h.on_events(&evs);
        h.publish();
    }
}

#[test]
fn resume_within_and_beyond_the_window() {
    let mut cfg = HubConfig::new(vec![1, 2]);
    cfg.replay_msgs = 50;
    let mut h = Hub::new(cfg);
    let mut eng = engine();
    let mut r = Rng(7);
    let mut seq = 0;
    let mut a = FakeClient::connect(&mut h);
    a.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 60);
    let mut sa: [InstrumentSync; 3] = Default::default();
    apply(&a.frames(&mut h), &mut sa);
    let seen = sa[1].seq.unwrap();
    assert!(seen > 5);
    a.send_raw(&mut h, &client_frame(8, &1000u16.to_be_bytes()));
    a.drain(&mut h);

    // Within the window: no snapshot, exactly the messages after `seen`.
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 10);
    let mut b = FakeClient::connect(&mut h);
    b.send_msg(&mut h, ClientMsg::Resume { instrument: 1, last_seq: seen });
    let fb = b.frames(&mut h);
    let msgs = apply(&fb, &mut sa);
    assert!(msgs.iter().all(|m| !matches!(m, ServerMsg::Snapshot(_))), "replayed, no snapshot");
    assert_eq!(sa[1].seq, Some(h.book(1).unwrap().1));
    assert_same_book(&eng, &sa[1], 1);
    // and live after it.
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 10);
    apply(&b.frames(&mut h), &mut sa);
    assert_same_book(&eng, &sa[1], 1);
    assert_eq!(h.stats.resumes_replayed, 1);

    // Beyond the window: Error resume_unavailable then a Snapshot.
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 200);
    let mut c = FakeClient::connect(&mut h);
    c.send_msg(&mut h, ClientMsg::Resume { instrument: 1, last_seq: 1 });
    let fc = c.frames(&mut h);
    let mut sc: [InstrumentSync; 3] = Default::default();
    let msgs = apply(&fc, &mut sc);
    assert!(matches!(msgs[0], ServerMsg::Error(e) if e.code == ErrorCode::ResumeUnavailable as u16 && e.detail == 1));
    assert!(matches!(msgs[1], ServerMsg::Snapshot(_)));
    assert_same_book(&eng, &sc[1], 1);
    // Resume at the current sequence: nothing to send, live afterwards.
    let cur = h.book(1).unwrap().1;
    let mut d = FakeClient::connect(&mut h);
    d.send_msg(&mut h, ClientMsg::Resume { instrument: 1, last_seq: cur });
    assert!(d.frames(&mut h).is_empty());
    // Resume ahead of the server: snapshot.
    d.send_msg(&mut h, ClientMsg::Resume { instrument: 2, last_seq: u64::MAX });
    let msgs = apply(&d.frames(&mut h), &mut Default::default());
    assert!(matches!(msgs[1], ServerMsg::Snapshot(s) if s.instrument == 2));
}

fn stalled_then_drained(policy: SlowPolicy) {
    let mut cfg = HubConfig::new(vec![1, 2]);
    cfg.budget_bytes = 2048;
    cfg.slow_policy = policy;
    let mut h = Hub::new(cfg);
    let mut eng = engine();
    let mut r = Rng(99);
    let mut seq = 0;
    let mut fast = FakeClient::connect(&mut h);
    let mut slow = FakeClient::connect(&mut h);
    for c in [&mut fast, &mut slow] {
        c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
        c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 2 });
    }
    let mut sf: [InstrumentSync; 3] = Default::default();
    apply(&fast.frames(&mut h), &mut sf);
    // `slow` never reads (its socket is "full"): its queue grows past the budget.
    for _ in 0..300 {
        feed_some(&mut eng, &mut h, &mut r, &mut seq, 1);
        apply(&fast.frames(&mut h), &mut sf);
        assert!(h.queued(slow.id) <= 2048 + 1024, "queue bounded: {}", h.queued(slow.id));
    }
    for i in 1..=2 {
        assert_same_book(&eng, &sf[i], i as u32);
    }
    match policy {
        SlowPolicy::Conflate => {
            assert!(h.stats.conflations >= 1);
            // Once writable again it gets fresh snapshots and is in sync.
            let mut ss: [InstrumentSync; 3] = Default::default();
            let frames = slow.frames(&mut h);
            let msgs = apply(&frames, &mut ss);
            assert!(msgs.iter().any(|m| matches!(m, ServerMsg::Snapshot(_))));
            feed_some(&mut eng, &mut h, &mut r, &mut seq, 20);
            apply(&slow.frames(&mut h), &mut ss);
            for i in 1..=2 {
                assert_same_book(&eng, &ss[i], i as u32);
            }
        }
        SlowPolicy::Disconnect => {
            assert_eq!(h.stats.slow_disconnects, 1);
            let frames = slow.frames(&mut h);
            let last = frames.last().unwrap();
            assert_eq!(last.opcode, 8);
            assert_eq!(last.payload, 1008u16.to_be_bytes());
            assert!(slow.closed);
        }
    }
    // Every queued frame is given back once written or dropped.
    apply(&fast.frames(&mut h), &mut sf);
    h.close(slow.id);
    assert_eq!(h.frames_held(), 1, "only the heartbeat is held");
}

#[test]
fn slow_consumer_conflated() {
    stalled_then_drained(SlowPolicy::Conflate);
}

#[test]
fn slow_consumer_disconnected() {
    stalled_then_drained(SlowPolicy::Disconnect);
}

fn close_code(frames: &[Frame]) -> Option<u16> {
    frames.iter().find(|f| f.opcode == 8).map(|f| u16::from_be_bytes([f.payload[0], f.payload[1]]))
}

#[test]
fn hostile_clients_are_closed_cleanly() {
    let mut h = hub();
    // Handshake garbage: 400 and closed.
    let id = h.open();
    h.on_read(id, &mut b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec());
    let mut c = FakeClient { id, inbox: Vec::new(), closed: false };
    c.drain(&mut h);
    assert!(c.inbox.starts_with(b"HTTP/1.1 400"));
    assert!(c.closed);
    // Endless headers: 431 once over the limit.
    let id = h.open();
    let mut c = FakeClient { id, inbox: Vec::new(), closed: false };
    for _ in 0..200 {
        h.on_read(id, &mut b"GET / HTTP/1.1\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec());
    }
    c.drain(&mut h);
    assert!(c.inbox.starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&c.inbox));
    assert!(c.closed);

    let cases: Vec<(Vec<u8>, u16)> = vec![
        (client_frame(2, &vec![0u8; 5000]), 1009),
        (client_frame(1, b"{\"subscribe\":1}"), 1003),
        (vec![0x82, 0x08, 0x81, 1, 0, 0, 1, 0, 0, 0], 1002), // unmasked
        ({
            let mut f = client_frame(2, &[0x81, 1, 0, 0, 1, 0, 0, 0]);
            f[0] &= 0x7F; // not final: fragmentation
            f
        }, 1003),
        (client_frame(8, &[0x03]), 1002),
        (client_frame(8, &1001u16.to_be_bytes()), 1001),
        (client_frame(8, &[]), 1000),
    ];
    for (bytes, code) in cases {
        let mut c = FakeClient::connect(&mut h);
        c.send_raw(&mut h, &bytes);
        let f = c.frames(&mut h);
        assert_eq!(close_code(&f), Some(code), "{bytes:02x?}");
        assert!(c.closed);
    }

    // Bad protocol messages are answered with Error and the connection stays open.
    let mut c = FakeClient::connect(&mut h);
    c.send_raw(&mut h, &client_frame(2, &[0x81, 1]));
    c.send_raw(&mut h, &client_frame(2, &[0x81, 9, 0, 0, 1, 0, 0, 0]));
    c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 77 });
    c.send_msg(&mut h, ClientMsg::Unsubscribe { instrument: 1 });
    c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    c.send_msg(&mut h, ClientMsg::Ping { nonce: 5 });
    c.send_raw(&mut h, &client_frame(9, b"hi"));
    let f = c.frames(&mut h);
    let codes: Vec<u16> = f
        .iter()
        .filter_map(|f| match ServerMsg::decode(&f.payload) {
            Ok(ServerMsg::Error(e)) => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![2, 3, 1, 6, 5]);
    assert!(f.iter().any(|f| matches!(ServerMsg::decode(&f.payload), Ok(ServerMsg::Heartbeat(hb)) if hb.nonce == 5)));
    assert!(f.iter().any(|f| f.opcode == 10 && f.payload == b"hi"));
    assert!(!c.closed);
    // A frame split across reads byte by byte still works.
    let bytes = client_frame(2, &ClientMsg::Ping { nonce: 6 }.to_vec());
    for b in &bytes {
        c.send_raw(&mut h, &[*b]);
    }
    let f = c.frames(&mut h);
    assert!(matches!(ServerMsg::decode(&f[0].payload), Ok(ServerMsg::Heartbeat(hb)) if hb.nonce == 6));
    // Closing a connection removes its subscriptions.
    h.close(c.id);
    assert!(!h.is_open(c.id));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]
    /// Any bytes after (or instead of) the handshake: no panic, and the hub stays usable.
    #[test]
    fn random_client_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8), upgrade in any::<bool>()) {
        let mut h = hub();
        let id = h.open();
        if upgrade {
            h.on_read(id, &mut HANDSHAKE.to_vec());
        }
        for mut c in chunks {
            h.on_read(id, &mut c);
        }
        let mut c = FakeClient { id, inbox: Vec::new(), closed: false };
        c.drain(&mut h);
        h.on_tick(true);
        h.on_tick(true);
        h.on_tick(true);
        let mut ids = Vec::new();
        h.take_to_close(&mut ids);
        for i in ids { h.close(i); }
        let mut ok = FakeClient::connect(&mut h);
        ok.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
        let f = ok.frames(&mut h);
        prop_assert!(matches!(ServerMsg::decode(&f[0].payload), Ok(ServerMsg::Snapshot(_))));
    }
}

/// The fan-out encodes each message once: every subscriber receives the same frames.
/// A client that keeps asking (Resume, Ping, bad messages, WebSocket pings) and never reads:
/// replies are not conflated, so without a bound they would queue forever. Under either policy
/// it is closed as a slow consumer once more than its budget waits, and the queue stays within
/// the budget plus one reply; a reading subscriber is not affected.
fn asks_without_reading(policy: SlowPolicy) {
    let budget = 64 * 1024;
    let mut cfg = HubConfig::new(vec![1, 2]);
    cfg.budget_bytes = budget;
    cfg.slow_policy = policy;
    let mut h = Hub::new(cfg);
    let mut eng = engine();
    let mut r = Rng(5);
    let mut seq = 0;
    let mut good = FakeClient::connect(&mut h);
    good.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    let mut sg: [InstrumentSync; 3] = Default::default();
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 3000);
    apply(&good.frames(&mut h), &mut sg);
    // The most one request can queue: the whole replay window (and an Error and a Snapshot).
    let window_bytes: usize = {
        let mut probe = FakeClient::connect(&mut h);
        probe.send_msg(&mut h, ClientMsg::Resume { instrument: 1, last_seq: 0 });
        let q = h.queued(probe.id);
        h.close(probe.id);
        q
    };
    let mut bad = FakeClient::connect(&mut h);
    bad.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
    let mut burst = Vec::new();
    for _ in 0..200 {
        burst.extend(client_frame(2, &ClientMsg::Resume { instrument: 1, last_seq: 0 }.to_vec()));
        burst.extend(client_frame(2, &ClientMsg::Ping { nonce: 1 }.to_vec()));
        burst.extend(client_frame(2, &[0xEE; 16]));
        burst.extend(client_frame(9, b"ping"));
    }
    for _ in 0..10 {
        bad.send_raw(&mut h, &burst);
        assert!(
            h.queued(bad.id) <= budget + window_bytes + 1024,
            "queue {} over budget {budget} + one reply {window_bytes}",
            h.queued(bad.id)
        );
        h.on_tick_at(true, 0);
        feed_some(&mut eng, &mut h, &mut r, &mut seq, 1);
        apply(&good.frames(&mut h), &mut sg);
    }
    assert_same_book(&eng, &sg[1], 1);
    assert!(h.stats.slow_disconnects >= 1);
    let f = bad.frames(&mut h);
    let last = f.last().unwrap();
    assert_eq!((last.opcode, last.payload.as_slice()), (8, &1008u16.to_be_bytes()[..]));
    assert!(f.iter().any(|f| matches!(ServerMsg::decode(&f.payload), Ok(ServerMsg::Error(e)) if e.code == ErrorCode::SlowConsumer as u16)));
    assert!(bad.closed);
    apply(&good.frames(&mut h), &mut sg);
    assert_eq!(h.frames_held(), 1, "only the heartbeat is held");
}

#[test]
fn a_client_asking_without_reading_is_closed_conflate() {
    asks_without_reading(SlowPolicy::Conflate);
}

#[test]
fn a_client_asking_without_reading_is_closed_disconnect() {
    asks_without_reading(SlowPolicy::Disconnect);
}

#[test]
fn an_oversize_upgrade_in_one_read_gets_431() {
    let mut h = hub();
    let id = h.open();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        .to_vec();
    for _ in 0..25 {
        req.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    h.on_read(id, &mut req);
    let mut c = FakeClient { id, inbox: Vec::new(), closed: false };
    c.drain(&mut h);
    assert!(c.inbox.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&c.inbox[..40.min(c.inbox.len())]));
    assert!(c.closed);
}

#[test]
fn frames_are_encoded_once() {
    let mut h = hub();
    let mut eng = engine();
    let mut r = Rng(3);
    let mut seq = 0;
    let mut cs: Vec<FakeClient> = (0..20).map(|_| FakeClient::connect(&mut h)).collect();
    for c in cs.iter_mut() {
        c.send_msg(&mut h, ClientMsg::Subscribe { instrument: 1 });
        c.frames(&mut h);
    }
    let before = h.stats.frames_encoded;
    feed_some(&mut eng, &mut h, &mut r, &mut seq, 50);
    let encoded = h.stats.frames_encoded - before;
    let first = cs[0].frames(&mut h);
    for c in cs.iter_mut().skip(1) {
        assert_eq!(c.frames(&mut h), first);
    }
    let inst1 = first.len() as u64;
    assert!(encoded >= inst1 && encoded <= inst1 + 60, "encoded {encoded}, per subscriber {inst1}");
    // Queued frames are held once whatever the subscribers, and given back once written.
    let mut n = 0;
    while h.frames_held() == 1 && n < 100 {
        feed_some(&mut eng, &mut h, &mut r, &mut seq, 1);
        n += 1;
    }
    let held = h.frames_held();
    assert!(held > 1 && held <= 1 + 4, "{held} frames held for 20 subscribers after one command");
    for c in cs.iter_mut() {
        c.frames(&mut h);
    }
    assert_eq!(h.frames_held(), 1);
    let _ = Applied::Update;
}

#[test]
fn a_pending_close_does_not_hit_a_reused_id() {
    let mut cfg = HubConfig::new(vec![1]);
    cfg.linger_ticks = 2;
    let mut h = Hub::new(cfg);
    // A connection that never finishes its handshake is scheduled to close after lingering...
    let a = h.open();
    for t in 0..3 {
        h.on_tick_at(false, t);
    }
    // ...but goes away first (the peer closed), and a new connection gets its id.
    h.close(a);
    let b = h.open();
    assert_eq!(a, b, "ids are reused");
    let mut ids = Vec::new();
    h.take_to_close(&mut ids);
    assert!(!ids.contains(&b), "the new connection is not closed for the old one");
    assert!(h.is_open(b));
}

#[test]
fn stats_merge_sums_counters_and_keeps_the_longest_pass() {
    use tickwire_feed::hub::HubStats;
    let a = HubStats { accepted: 2, open: 1, write_passes: 3, write_pass_ns_sum: 30, write_pass_ns_max: 20, ..HubStats::default() };
    let b = HubStats { accepted: 5, open: 4, write_passes: 1, write_pass_ns_sum: 7, write_pass_ns_max: 7, ..HubStats::default() };
    let mut t = HubStats::default();
    t.merge(&a);
    t.merge(&b);
    assert_eq!((t.accepted, t.open, t.write_passes, t.write_pass_ns_sum, t.write_pass_ns_max), (7, 5, 4, 37, 20));
    // `fields` names every counter once, in declaration order.
    let f = t.fields();
    assert_eq!(f[0], ("accepted", 7));
    assert_eq!(f[f.len() - 1], ("write_pass_ns_max", 20));
    let mut names: Vec<&str> = f.iter().map(|x| x.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), f.len());
}
