//! Shard resynchronisation from the book image: a shard reading the engine's shared-memory ring
//! that is lapped (tiny ring) or starts late ends with the engine's books, its subscribers never
//! see an unannounced gap, and the engine never waits (no gating consumer; the image publisher is
//! fed through an unbounded channel, the image writer never waits for readers).

mod common;

use common::{engine, random_command, FakeClient, Rng, RunningShard};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickwire_core::engine::Level;
use tickwire_core::ring::book_image::ImageBook;
use tickwire_core::ring::{RingBuffer, SingleProducer, WaitStrategyKind};
use tickwire_core::{Command, Engine, Event, Side};
use tickwire_feed::source::{image_path_for, ImageFollower, ImagePublisher, ImagePublisherConfig};
use tickwire_feed::{seed_from_engine, EventSource, Hub, HubConfig, ShmSource};
use tickwire_protocol::md::sync::InstrumentSync;
use tickwire_protocol::md::{ClientMsg, ErrorCode, ServerMsg};

/// Removes the ring and image files on drop.
struct Files(PathBuf);
impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(image_path_for(&self.0));
    }
}

fn ring_path(tag: &str) -> Files {
    let dir = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    Files(dir.join(format!("tickwire-resync-{tag}-{}", std::process::id())))
}

/// The engine side of the tests: an engine writing into a ring nobody gates (`try_push` must
/// never fail: the engine never waits) and an image follower fed losslessly.
struct EngineSide {
    eng: Engine,
    producer: SingleProducer<Event>,
    follower: ImageFollower,
    rng: Rng,
    seq: u64,
    evs: Vec<Event>,
}

impl EngineSide {
    fn new(path: &Path, capacity: usize) -> EngineSide {
        let eng = engine();
        let ring: RingBuffer<Event> = RingBuffer::create_shm(path, capacity, eng.next_event_seq()).unwrap();
        let (producer, _) = ring.into_single_producer(0, WaitStrategyKind::BusySpin);
        let follower = ImageFollower::create(&image_path_for(path), &seed_from_engine(&eng), 1000).unwrap();
        EngineSide { eng, producer, follower, rng: Rng(0x5EED), seq: 0, evs: Vec::new() }
    }

    fn run(&mut self, cmd: Command) {
        self.seq += 1;
        self.evs.clear();
        self.eng.handle(&cmd.with_seq(self.seq, self.seq), &mut self.evs);
        for e in &self.evs {
            self.producer.try_push(e).expect("the engine never waits for a reader");
        }
        self.producer.publish();
        self.follower.apply(&self.evs);
        self.follower.publish();
    }

    fn random(&mut self) {
        let c = random_command(&mut self.rng);
        self.run(c);
    }

    fn depth(&self, inst: u32, side: Side) -> Vec<Level> {
        let mut v = Vec::new();
        self.eng.depth(inst, side, usize::MAX, &mut v);
        v
    }
}

/// The shard side without sockets: source → hub → one subscriber checking every message.
struct ShardSide {
    src: ShmSource,
    hub: Hub,
    client: FakeClient,
    syncs: [InstrumentSync; 3],
    resets_seen: u64,
    buf: Vec<Event>,
}

impl ShardSide {
    fn open(path: &Path) -> ShardSide {
        let src = ShmSource::open(path, Duration::from_micros(200)).unwrap();
        assert!(src.has_image(), "the image next to the ring is attached");
        let mut hub = Hub::new(HubConfig::new(vec![1, 2]));
        let mut client = FakeClient::connect(&mut hub);
        for i in [1, 2] {
            client.send_msg(&mut hub, ClientMsg::Subscribe { instrument: i });
        }
        let mut s = ShardSide { src, hub, client, syncs: Default::default(), resets_seen: 0, buf: Vec::new() };
        s.read_client();
        s
    }

    fn poll(&mut self) {
        self.buf.clear();
        self.src.poll(&mut self.buf, 65_536);
        self.hub.on_events(&self.buf);
        self.hub.publish();
        self.read_client();
    }

    fn read_client(&mut self) {
        for f in self.client.frames(&mut self.hub) {
            let m = ServerMsg::decode(&f.payload).unwrap();
            if let ServerMsg::Error(e) = m {
                assert_eq!(e.code, ErrorCode::FeedReset as u16, "{e:?}");
                self.resets_seen += 1;
                continue;
            }
            let i = m.instrument() as usize;
            if i == 0 {
                continue;
            }
            // Every message continues the instrument's sequence, or is a Snapshot (a reset).
            self.syncs[i].apply(&m).unwrap_or_else(|e| panic!("instrument {i}: {e:?}"));
        }
    }

    fn assert_books(&self, eng: &EngineSide) {
        for inst in [1u32, 2] {
            let (book, _) = self.hub.book(inst).unwrap();
            assert_eq!(book.halted, eng.eng.book(inst).unwrap().halted, "instrument {inst} halted");
            for side in [Side::Buy, Side::Sell] {
                let want = eng.depth(inst, side);
                let mut got = Vec::new();
                book.depth(side, usize::MAX, &mut got);
                assert_eq!(got, want, "hub book {inst} {side:?}");
                self.syncs[inst as usize].book.depth(side, usize::MAX, &mut got);
                assert_eq!(got, want, "client book {inst} {side:?}");
            }
        }
    }
}

#[test]
fn lapped_shard_resyncs_to_the_engine_books() {
    let files = ring_path("lapped");
    let mut eng = EngineSide::new(&files.0, 64);
    let mut shard = ShardSide::open(&files.0);
    let mut r = Rng(99);
    for k in 0..4000 {
        eng.random();
        // Phases of 200 commands: the shard keeps up (polls every few commands), or falls far
        // more than a ring (64 events) behind.
        let every = if (k / 200) % 2 == 0 { 3 } else { 150 };
        if r.below(every) == 0 {
            shard.poll();
        }
    }
    shard.poll();
    assert!(shard.src.lapped > 0, "the tiny ring lapped the shard");
    assert!(shard.src.resyncs > 1, "start + every lap: {}", shard.src.resyncs);
    assert_eq!(shard.hub.stats.engine_resyncs, shard.src.resyncs);
    assert_eq!(shard.hub.stats.engine_gaps, 0, "every lap was repaired from the image");
    // Each reset reached the subscriber of each instrument (Error feed_reset + Snapshot).
    assert_eq!(shard.resets_seen, 2 * shard.src.resyncs);
    shard.assert_books(&eng);
    let _ = &files;
}

#[test]
fn late_shard_starts_from_the_image() {
    let files = ring_path("late");
    let mut eng = EngineSide::new(&files.0, 64);
    for _ in 0..3000 {
        eng.random();
    }
    // The ring holds only the last 64 events: without the image the books would be wrong.
    let mut shard = ShardSide::open(&files.0);
    shard.poll();
    assert_eq!(shard.src.resyncs, 1);
    shard.assert_books(&eng);
    for _ in 0..500 {
        eng.random();
        shard.poll();
    }
    assert_eq!(shard.src.lapped, 0, "polled after every command: never lapped");
    assert_eq!(shard.src.resyncs, 1);
    assert_eq!(shard.hub.stats.engine_gaps, 0);
    shard.assert_books(&eng);
}

/// `Hub::reset_from_image` directly: subscribers get Error feed_reset then a Snapshot whose
/// sequence is above everything sent before; the replay window cannot bridge the reset.
#[test]
fn reset_takes_a_sequence_number_and_empties_the_replay_window() {
    let mut hub = Hub::new(HubConfig::new(vec![7]));
    let mut c = FakeClient::connect(&mut hub);
    c.send_msg(&mut hub, ClientMsg::Subscribe { instrument: 7 });
    let delta = |seq: u64, price: i64, qty: u64| Event {
        seq,
        kind: tickwire_core::EventKind::LevelDelta as u8,
        side: Side::Buy as u8,
        instrument: 7,
        aux32: 1,
        price,
        qty,
        ..Event::default()
    };
    hub.on_events(&[delta(1, 100, 5), delta(2, 99, 3)]);
    hub.publish();
    let mut sync = InstrumentSync::new();
    for f in c.frames(&mut hub) {
        sync.apply(&ServerMsg::decode(&f.payload).unwrap()).unwrap();
    }
    let before = sync.seq.unwrap();
    let image = [ImageBook {
        instrument: 7,
        halted: false,
        truncated: false,
        bids: vec![Level { price: 101, qty: 1, orders: 1 }],
        asks: vec![Level { price: 105, qty: 2, orders: 2 }],
    }];
    assert_eq!(hub.reset_from_image(&image, 10), 1);
    let msgs: Vec<_> = c.frames(&mut hub);
    let m0 = ServerMsg::decode(&msgs[0].payload).unwrap();
    assert!(matches!(m0, ServerMsg::Error(e) if e.code == ErrorCode::FeedReset as u16 && e.detail == 10), "{m0:?}");
    let m1 = ServerMsg::decode(&msgs[1].payload).unwrap();
    let ServerMsg::Snapshot(s) = m1 else { panic!("{m1:?}") };
    assert_eq!(s.seq, before + 1);
    sync.apply(&m1).unwrap();
    // Events up to the image's sequence are duplicates now; the next one continues.
    hub.on_events(&[delta(9, 50, 1), delta(11, 101, 0)]);
    hub.publish();
    for f in c.frames(&mut hub) {
        sync.apply(&ServerMsg::decode(&f.payload).unwrap()).unwrap();
    }
    let mut bids = Vec::new();
    sync.book.depth(Side::Buy, usize::MAX, &mut bids);
    assert!(bids.is_empty());
    assert_eq!(hub.stats.engine_gaps, 0);
    // A Resume from before the reset cannot be replayed.
    let mut c2 = FakeClient::connect(&mut hub);
    c2.send_msg(&mut hub, ClientMsg::Resume { instrument: 7, last_seq: before });
    let msgs = c2.frames(&mut hub);
    let m = ServerMsg::decode(&msgs[0].payload).unwrap();
    assert!(matches!(m, ServerMsg::Error(e) if e.code == ErrorCode::ResumeUnavailable as u16), "{m:?}");
    assert!(matches!(ServerMsg::decode(&msgs[1].payload).unwrap(), ServerMsg::Snapshot(_)));
}

/// The whole path with threads and sockets: an engine thread writing a small ring as fast as it
/// can (no gating consumer: it never waits) and feeding the image publisher through its channel;
/// a shard thread on the ring, maybe lapped; a WebSocket subscriber ends with the engine's books.
#[test]
fn shard_process_path_with_publisher_thread() {
    use tungstenite::Message;
    let files = ring_path("threads");
    let path = files.0.clone();
    let mut eng = engine();
    let ring: RingBuffer<Event> = RingBuffer::create_shm(&path, 64, eng.next_event_seq()).unwrap();
    let (mut producer, _) = ring.into_single_producer(0, WaitStrategyKind::BusySpin);
    let cfg = ImagePublisherConfig { min_interval: Duration::ZERO, ..ImagePublisherConfig::default() };
    let (img_tx, publisher) = ImagePublisher::spawn_channel(&image_path_for(&path), &seed_from_engine(&eng), cfg).unwrap();

    let src = ShmSource::open(&path, Duration::from_micros(200)).unwrap();
    assert!(src.has_image());
    let shard = RunningShard::spawn(src);
    let mut ws = shard.subscriber();

    let engine_thread = std::thread::spawn(move || {
        let mut r = Rng(4242);
        let mut evs = Vec::new();
        let mut seq = 0;
        let mut run = |c: Command, evs: &mut Vec<Event>| {
            seq += 1;
            evs.clear();
            eng.handle(&c.with_seq(seq, seq), evs);
            for e in evs.iter() {
                producer.try_push(e).expect("the engine never waits for a reader");
            }
            producer.publish();
            img_tx.send(evs);
        };
        for _ in 0..20_000 {
            let c = random_command(&mut r);
            if matches!(tickwire_core::CommandKind::from_u8(c.kind), Some(tickwire_core::CommandKind::Halt | tickwire_core::CommandKind::Resume)) {
                continue;
            }
            run(c, &mut evs);
        }
        for i in [1, 2] {
            run(Command::set_halted(i, true), &mut evs);
        }
        (eng, producer)
    });
    let (eng, producer) = engine_thread.join().unwrap();
    let want = |inst: u32, side: Side| {
        let mut v = Vec::new();
        eng.depth(inst, side, usize::MAX, &mut v);
        v
    };

    // Read until both books are halted and equal to the engine's (the end of the flow).
    let mut syncs: [InstrumentSync; 3] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |syncs: &[InstrumentSync; 3]| {
        [1u32, 2].iter().all(|&i| {
            let s = &syncs[i as usize];
            s.seq.is_some()
                && s.book.halted
                && [Side::Buy, Side::Sell].iter().all(|&side| {
                    let mut got = Vec::new();
                    s.book.depth(side, usize::MAX, &mut got);
                    got == want(i, side)
                })
        })
    };
    while !done(&syncs) {
        assert!(Instant::now() < deadline, "timed out");
        let Message::Binary(b) = ws.read().unwrap() else { continue };
        let m = ServerMsg::decode(&b).unwrap();
        let i = m.instrument() as usize;
        if i == 0 || matches!(m, ServerMsg::Error(_)) {
            continue;
        }
        syncs[i].apply(&m).unwrap_or_else(|e| panic!("{i}: {e:?}"));
    }
    shard.stop();
    let st = publisher.stop();
    assert!(!st.broken);
    assert_eq!(st.engine_seq, eng.next_event_seq() - 1);
    drop(producer);
}
