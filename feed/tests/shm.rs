//! A shard reading the engine's outbound ring from shared memory (the `--shm` mode of
//! `tickwire-feed`), with a WebSocket client checking the resulting book.

mod common;

use common::{engine, random_command, Rng, RunningShard};
use std::time::{Duration, Instant};
use tickwire_core::engine::Level;
use tickwire_core::ring::{RingBuffer, WaitStrategyKind};
use tickwire_core::{Command, CommandKind, Event, Side};
use tickwire_feed::ShmSource;
use tickwire_protocol::md::sync::InstrumentSync;
use tickwire_protocol::md::ServerMsg;
use tungstenite::Message;

#[test]
fn shard_reads_the_shm_ring() {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let path = dir.join(format!("tickwire-feed-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ring: RingBuffer<Event> = RingBuffer::create_shm(&path, 1 << 16, 1).unwrap();
    let (mut producer, _) = ring.into_single_producer(0, WaitStrategyKind::Yielding { spins: 100 });

    let src = ShmSource::open(&path, Duration::from_micros(200)).unwrap();
    let shard = RunningShard::spawn(src);
    let mut ws = shard.subscriber();

    let mut eng = engine();
    let mut r = Rng(77);
    let mut evs: Vec<Event> = Vec::new();
    let mut seq = 0;
    while seq < 3000 {
        let c = random_command(&mut r);
        if matches!(CommandKind::from_u8(c.kind), Some(CommandKind::Halt | CommandKind::Resume)) {
            continue;
        }
        seq += 1;
        evs.clear();
        eng.handle(&c.with_seq(seq, seq), &mut evs);
        for e in &evs {
            producer.push(e);
        }
        producer.publish();
    }
    evs.clear();
    for i in [1, 2] {
        seq += 1;
        eng.handle(&Command::set_halted(i, true).with_seq(seq, seq), &mut evs);
    }
    for e in &evs {
        producer.push(e);
    }
    producer.publish();

    let mut syncs: [InstrumentSync; 3] = Default::default();
    let mut halted = [false; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(halted[1] && halted[2]) {
        assert!(Instant::now() < deadline, "timed out");
        let Message::Binary(b) = ws.read().unwrap() else { continue };
        let m = ServerMsg::decode(&b).unwrap();
        let i = m.instrument() as usize;
        if i == 0 {
            continue;
        }
        syncs[i].apply(&m).unwrap_or_else(|e| panic!("{i}: {e:?}"));
        match m {
            ServerMsg::Status(s) => halted[i] = s.halted,
            ServerMsg::Snapshot(s) => halted[i] = s.halted,
            _ => {}
        }
    }
    for inst in [1u32, 2] {
        for side in [Side::Buy, Side::Sell] {
            let mut want: Vec<Level> = Vec::new();
            eng.depth(inst, side, usize::MAX, &mut want);
            let mut got = Vec::new();
            syncs[inst as usize].book.depth(side, usize::MAX, &mut got);
            assert_eq!(got, want);
        }
    }
    shard.stop();
    drop(producer);
    let _ = std::fs::remove_file(&path);
}
