//! End-to-end pipeline: commands in from several threads → pinned engine agent → events out,
//! compared byte for byte with the same commands applied directly to an engine. Waits are bounded
//! by a hang guard; nothing asserts on timing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::pipeline::{EventConsumer, Pipeline, PipelineConfig};
use tickwire_core::ring::{LossyReader, Sequence, WaitStrategyKind};
use tickwire_core::*;

const GUARD: Duration = Duration::from_secs(180);

/// Deterministic commands for producer `t`: crossing gtc/ioc orders of its own accounts, cancels
/// and replaces of earlier ones, an occasional mass cancel.
fn commands(t: u32, n: usize) -> Vec<Command> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(t);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let account = t * 10 + 1 + (rnd() % 3) as u32;
        let id = i + 1;
        let r = rnd() % 100;
        let cmd = if r < 70 || i < 5 {
            let side = if rnd() % 2 == 0 { Side::Buy } else { Side::Sell };
            let ot = if rnd() % 4 == 0 { OrderType::LimitIoc } else { OrderType::LimitGtc };
            Command::new_order(account, 1, id, side, ot, Some(95 + (rnd() % 11) as i64), 1 + rnd() % 9, None)
        } else if r < 85 {
            Command::cancel(account, 1, 1 + rnd() % id)
        } else if r < 97 {
            Command::replace(account, 1, 1 + rnd() % id, Some(95 + (rnd() % 11) as i64), 1 + rnd() % 9)
        } else {
            Command::mass_cancel(account, Some(1), CancelReason::MassCancel)
        };
        out.push(Command { ts_ns: 1_000 + i, ..cmd });
    }
    out
}

fn engine_cfg() -> EngineConfig {
    EngineConfig { orders_max: 1 << 14, levels_max: 256, accounts_max: 64, ..EngineConfig::single_default() }
}

fn drain(c: &mut EventConsumer, out: &mut Vec<Event>, until_cmds: u64) {
    let start = Instant::now();
    let mut last_done = out.iter().filter(|e| e.is_last_in_command()).count() as u64;
    while last_done < until_cmds {
        let n = c.poll(100, |e, _| {
            out.push(*e);
            last_done += e.is_last_in_command() as u64;
        });
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
            assert!(start.elapsed() < GUARD, "hang guard: {} of {until_cmds} commands seen", last_done);
        }
    }
}

/// Checks the event stream's framing: gapless seq from 1, cmd_seq in order, exactly one
/// last_in_command per command and it is the command's last event.
fn check_framing(events: &[Event], commands: u64) {
    let mut cmd = 0;
    let mut open = false;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless event sequence");
        if !open {
            assert_eq!(e.cmd_seq, cmd + 1, "events of command {} follow command {cmd}", cmd + 1);
            cmd += 1;
            open = true;
        } else {
            assert_eq!(e.cmd_seq, cmd, "events of one command are contiguous");
        }
        if e.is_last_in_command() {
            open = false;
        }
    }
    assert!(!open, "last command closed");
    assert_eq!(cmd, commands);
}

fn run_two_producers(cfg: PipelineConfig, per_producer: usize) {
    let total = 2 * per_producer as u64;
    let (pipeline, consumers) = Pipeline::start(cfg, 2).unwrap();
    let producers: Vec<_> = (0..2u32)
        .map(|t| {
            let mut p = pipeline.producer();
            std::thread::spawn(move || commands(t, per_producer).into_iter().map(|c| (p.send(c), c)).collect::<Vec<_>>())
        })
        .collect();
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                drain(&mut c, &mut v, total);
                v
            })
        })
        .collect();
    let mut sent: Vec<(u64, Command)> = producers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let streams: Vec<Vec<Event>> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let (engine, counters) = pipeline.shutdown_with_counters();

    // The inbound ring's order is the sequence order: replay it directly.
    sent.sort_by_key(|(s, _)| *s);
    assert_eq!(sent.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let mut direct = Engine::new(&engine_cfg()).unwrap();
    let mut expected = Vec::new();
    for (s, c) in &sent {
        direct.handle(&Command { seq: *s, ..*c }, &mut expected);
    }
    for events in &streams {
        check_framing(events, total);
        assert_eq!(events.len(), expected.len());
        assert!(events == &expected, "pipeline events equal the direct engine's");
    }
    assert_eq!(engine.state_hash(), direct.state_hash());
    assert_eq!(engine.last_cmd_seq(), total);
    assert_eq!(counters.commands, total);
    assert_eq!(counters.events, expected.len() as u64);
    assert_eq!(counters.events_dropped, 0);
}

#[test]
fn end_to_end_two_producers_two_consumers() {
    let mut cfg = PipelineConfig::new(engine_cfg());
    cfg.inbound_capacity = 64;
    cfg.outbound_capacity = 128;
    cfg.engine_cpu = Some(0);
    run_two_producers(cfg, 5_000);
}

#[test]
fn tiny_outbound_ring_mid_batch_does_not_deadlock() {
    // Batches of up to 256 commands, each emitting several events, into a 2-slot ring: the sink
    // must publish before it waits, every time.
    let mut cfg = PipelineConfig::new(engine_cfg());
    cfg.inbound_capacity = 1024;
    cfg.outbound_capacity = 2;
    cfg.wait = WaitStrategyKind::yielding();
    run_two_producers(cfg, 1_500);
}

fn shm_path(tag: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("tickwire-pipeline-{tag}-{}", std::process::id()))
}

#[test]
fn shm_outbound_ring_readable_from_another_mapping() {
    let path = shm_path("events");
    let mut cfg = PipelineConfig::new(engine_cfg());
    cfg.shm_path = Some(path.clone());
    cfg.outbound_capacity = 1 << 12;
    let (pipeline, mut consumers) = Pipeline::start(cfg, 1).unwrap();
    assert_eq!(pipeline.shm_path(), Some(path.as_path()));
    let mut feed = LossyReader::<Event>::open(&path).unwrap();
    let cmds = commands(0, 300);
    let mut p = pipeline.producer();
    for c in &cmds {
        p.send(*c);
    }
    let mut gated = Vec::new();
    drain(&mut consumers[0], &mut gated, cmds.len() as u64);
    let mut lossy = Vec::new();
    let start = Instant::now();
    while lossy.len() < gated.len() {
        feed.poll(64, |e, s, _| {
            assert_eq!(e.seq, s);
            lossy.push(*e);
        })
        .expect("the ring is larger than the run: no lap");
        assert!(start.elapsed() < GUARD, "hang guard");
    }
    assert!(lossy == gated, "the read-only mapping sees the same events");
    let mut heap_view = pipeline.event_reader();
    assert_eq!(heap_view.try_read().unwrap().unwrap().1, gated[0]);
    drop(consumers);
    pipeline.shutdown();
    assert!(feed.is_writer_closed());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn journal_hook_side_consumer_and_durable_barrier() {
    let mut cfg = PipelineConfig::new(engine_cfg());
    cfg.inbound_side_consumers = 1;
    let (mut pipeline, mut consumers) = Pipeline::start(cfg, 1).unwrap();
    let mut journal = pipeline.take_inbound_side_consumers().pop().unwrap();
    let durable = Arc::new(Sequence::new(0));
    let mut gateway = consumers.pop().unwrap();
    gateway.set_durable(durable.clone());
    let mut p = pipeline.producer();
    let cmds = commands(1, 40);
    for c in &cmds {
        p.send(*c);
    }
    // The journal sees the same commands, in parallel with the matcher.
    let mut journaled = Vec::new();
    let start = Instant::now();
    while journaled.len() < 10 {
        journal.poll(10 - journaled.len(), |c, s, _| {
            assert_eq!(c.seq, s);
            journaled.push(*c);
        });
        assert!(start.elapsed() < GUARD);
    }
    // Wait until the engine has applied every command (its events exist), still nothing durable.
    while pipeline.counters().commands < cmds.len() as u64 {
        std::thread::sleep(Duration::from_millis(1));
        assert!(start.elapsed() < GUARD);
    }
    assert_eq!(gateway.poll(1000, |_, _| panic!("event released before its command is durable")), 0);
    durable.set(10);
    let mut seen = Vec::new();
    gateway.poll(1000, |e, _| seen.push(*e));
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e.cmd_seq <= 10));
    assert!(seen.last().unwrap().is_last_in_command() && seen.last().unwrap().cmd_seq == 10, "stops at a durable command's end");
    journal.poll(1000, |_, _, _| {});
    durable.set(cmds.len() as u64);
    let mut rest = Vec::new();
    gateway.poll(10_000, |e, _| rest.push(*e));
    assert_eq!(rest.first().map(|e| e.cmd_seq), Some(11));
    let engine = pipeline.shutdown();
    assert_eq!(engine.last_cmd_seq(), cmds.len() as u64);
}

#[test]
fn shutdown_with_a_stuck_consumer_drops_and_counts() {
    let mut cfg = PipelineConfig::new(engine_cfg());
    cfg.outbound_capacity = 4;
    cfg.stop_grace = Duration::from_millis(20);
    let (pipeline, consumers) = Pipeline::start(cfg, 1).unwrap();
    let mut p = pipeline.producer();
    let cmds = commands(2, 50);
    for c in &cmds {
        p.send(*c);
    }
    // The consumer never polls: the engine fills the ring and waits; shutdown must still return.
    let (engine, counters) = pipeline.shutdown_with_counters();
    assert_eq!(counters.commands, cmds.len() as u64, "every published command applied");
    assert_eq!(counters.events, 4, "the ring holds what the stuck consumer blocks");
    assert_eq!(counters.events + counters.events_dropped, engine.next_event_seq() - 1);
    drop(consumers);
}

#[test]
fn shutdown_applies_published_commands_and_returns_state() {
    let cfg = PipelineConfig::new(engine_cfg());
    let (pipeline, consumers) = Pipeline::start(cfg, 0).unwrap();
    assert!(consumers.is_empty());
    let mut p = pipeline.producer();
    let cmds = commands(3, 500);
    let mut direct = Engine::new(&engine_cfg()).unwrap();
    let mut sink = Vec::new();
    for c in &cmds {
        let s = p.send(*c);
        direct.handle(&Command { seq: s, ..*c }, &mut sink);
    }
    let engine = pipeline.shutdown();
    assert_eq!(engine.state_hash(), direct.state_hash());
    let mut by_kind: HashMap<u8, usize> = HashMap::new();
    for e in &sink {
        *by_kind.entry(e.kind).or_default() += 1;
    }
    assert!(by_kind.contains_key(&(EventKind::Fill as u8)), "the workload trades");
}
