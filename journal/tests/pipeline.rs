//! The journaler wired into the real pipeline: it consumes the inbound ring in parallel with the
//! matcher, and a gateway consumer gated on its durable sequence never sees an event whose
//! command is not yet durable. Afterwards the journal replays to the engine's state.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tickwire_core::pipeline::{Pipeline, PipelineConfig};
use tickwire_core::Engine;
use tickwire_journal::{recover, Durability, JournalConfig, JournalWriter, Journaler, RecoverOptions};

#[test]
fn journaler_on_the_inbound_ring_gates_the_outbound_events() {
    let dir = TempDir::new("pipeline");
    let jcfg = JournalConfig { durability: Durability::Sync, segment_bytes: 64 << 10, ..JournalConfig::new(dir.path()) };
    let (writer, rec) = JournalWriter::open_dir(jcfg, RecoverOptions::default()).unwrap();
    assert_eq!(rec.next_seq(), 1);

    let mut pcfg = PipelineConfig::new(engine_config());
    pcfg.inbound_side_consumers = 1;
    pcfg.inbound_capacity = 1 << 10;
    pcfg.outbound_capacity = 1 << 14;
    let (mut pipeline, mut consumers) = Pipeline::start(pcfg, 1).unwrap();
    let side = pipeline.take_inbound_side_consumers().pop().unwrap();
    let journaler = Journaler::spawn(writer, side).unwrap(); // the one call
    let durable = journaler.durable();
    let mut gateway = consumers.pop().unwrap();
    assert!(durable.gate(&mut gateway));

    let n = 5000u64;
    let cmds = commands(1, n);
    let mut producer = pipeline.producer();
    let sender = std::thread::spawn(move || {
        for c in cmds {
            producer.send(c);
        }
    });
    let start = Instant::now();
    let mut events = 0u64;
    let mut last_cmd = 0;
    while last_cmd < n {
        gateway.poll(4096, |e, _| {
            // Released only once its command is durable (the barrier only grows, so reading it
            // after the event is conservative).
            assert!(e.cmd_seq <= durable.get(), "event of command {} released before durable", e.cmd_seq);
            events += 1;
            if e.is_last_in_command() {
                last_cmd = e.cmd_seq;
            }
        });
        assert!(start.elapsed() < Duration::from_secs(120), "stuck at command {last_cmd}");
        std::thread::sleep(Duration::from_micros(200));
    }
    sender.join().unwrap();
    assert!(events >= n);
    journaler.stop();
    let st = journaler.join().unwrap();
    assert_eq!(st.commands, n);
    let engine = pipeline.shutdown();

    let rec = recover(dir.path(), RecoverOptions::default()).unwrap();
    assert_eq!(rec.last_seq, n);
    assert_eq!(rec.read_all().unwrap(), commands(1, n));
    let mut replayed = Engine::new(&engine_config()).unwrap();
    rec.replay_into(&mut replayed, &mut Vec::new()).unwrap();
    assert_eq!(replayed.state_hash(), engine.state_hash());
    assert_eq!(replayed.last_cmd_seq(), engine.last_cmd_seq());
}
