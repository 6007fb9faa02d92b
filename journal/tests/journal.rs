//! Writer, journaler and recovery behaviour: round trips in every durability mode, rotation,
//! group commit, the barrier, errors on missing, foreign and locked journals, `from_seq`.

mod common;

use common::*;
use std::sync::mpsc;
use std::time::Duration;
use tickwire_core::Engine;
use tickwire_journal::format::{segment_file_name, HEADER_LEN, RECORD_LEN};
use tickwire_journal::{
    recover, ChannelSource, Durability, JournalConfig, JournalError, JournalWriter, Journaler, RecoverOptions,
};

fn small(dir: &std::path::Path, durability: Durability, per_seg: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes: HEADER_LEN as u64 + per_seg * RECORD_LEN as u64,
        durability,
        max_batch: 64,
        ..JournalConfig::new(dir)
    }
}

#[test]
fn journaler_round_trip_in_every_mode() {
    for durability in [Durability::Sync, Durability::Async { interval_ms: 2 }, Durability::None] {
        let dir = TempDir::new("modes");
        let n = 3000;
        let (w, rec) = JournalWriter::open_dir(small(dir.path(), durability, 500), RecoverOptions::default()).unwrap();
        assert!(rec.is_empty());
        assert_eq!(rec.next_seq(), 1);
        let (tx, rx) = mpsc::sync_channel(256);
        let j = Journaler::spawn(w, ChannelSource::new(rx)).unwrap();
        let durable = j.durable();
        assert_eq!(durable.get(), 0);
        for c in commands(1, n) {
            tx.send(c).unwrap();
        }
        // The barrier reaches the last command without the source closing.
        assert_eq!(durable.wait_for(n, Duration::from_secs(60)).unwrap(), n, "{durability}");
        drop(tx);
        let st = j.join().unwrap();
        assert_eq!(st.commands, n);
        assert_eq!(st.durable_seq, n);
        assert!(st.batches <= n && st.max_batch <= 64, "{st:?}");
        assert_eq!(st.writer.segments, 6, "{st:?}"); // 500 records a segment
        if durability == Durability::Sync {
            assert!(st.writer.syncs >= st.batches - 6, "{st:?}");
        }
        let rec = recover(dir.path(), RecoverOptions::default()).unwrap();
        assert_eq!((rec.first_seq, rec.last_seq, rec.truncated_bytes), (1, n, 0));
        assert_eq!(rec.segments.len(), 6);
        assert_eq!(rec.read_all().unwrap(), commands(1, n));
        let mut e = Engine::new(&engine_config()).unwrap();
        assert_eq!(rec.replay_into(&mut e, &mut Vec::new()).unwrap(), n);
        assert_eq!(e.state_hash(), state_hash_of(&commands(1, n)));
        assert_eq!(e.last_cmd_seq(), n);
    }
}

#[test]
fn group_commit_and_rotation_in_one_append() {
    let dir = TempDir::new("rotate");
    let mut w = JournalWriter::create(small(dir.path(), Durability::Sync, 10), 1).unwrap();
    w.append(&commands(1, 35)).unwrap(); // spans 4 segments
    assert_eq!(w.durable_seq(), 30, "full segments are synced at rotation");
    assert_eq!(w.commit().unwrap(), 35);
    assert_eq!(w.stats().segments, 4);
    assert_eq!(w.synced_seq(), 35);
    // Out of sequence: refused, nothing written.
    let err = w.append(&commands(37, 37)).unwrap_err();
    assert!(matches!(err, JournalError::SequenceGap { expected: 36, found: 37, .. }), "{err}");
    w.append(&commands(36, 36)).unwrap();
    assert_eq!(w.close().unwrap(), 36);
    let names: Vec<String> = tickwire_journal::list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names, [1, 11, 21, 31].map(segment_file_name));
    let rec = recover(dir.path(), RecoverOptions::default()).unwrap();
    assert_eq!(rec.read_all().unwrap(), commands(1, 36));
    // close trimmed the last segment to its data
    let last = &rec.segments[3];
    assert_eq!(last.file_len, last.data_end);
    assert_eq!(rec.records_range(12, 23).map(|r| r.unwrap().seq).collect::<Vec<_>>(), (12..=23).collect::<Vec<_>>());
}

#[test]
fn restart_continues_in_a_new_segment() {
    let dir = TempDir::new("restart");
    let cfg = small(dir.path(), Durability::Sync, 100);
    for round in 0..4u64 {
        let (mut w, rec) = JournalWriter::open_dir(cfg.clone(), RecoverOptions::default()).unwrap();
        assert_eq!(rec.last_seq, round * 10);
        assert_eq!(rec.read_all().unwrap(), commands(1, round * 10));
        w.append(&commands(round * 10 + 1, round * 10 + 10)).unwrap();
        w.commit().unwrap();
        if round % 2 == 0 {
            w.close().unwrap();
        } // else: "crash" — the preallocated tail stays and recovery trims it
    }
    let rec = recover(dir.path(), RecoverOptions::default()).unwrap();
    assert_eq!(rec.segments.len(), 4);
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
}

#[test]
fn empty_writer_leaves_nothing_behind() {
    let dir = TempDir::new("empty");
    let cfg = small(dir.path(), Durability::Sync, 100);
    let (w, _) = JournalWriter::open_dir(cfg.clone(), RecoverOptions::default()).unwrap();
    drop(w);
    let (mut w, rec) = JournalWriter::open_dir(cfg, RecoverOptions::default()).unwrap();
    assert_eq!(rec.next_seq(), 1);
    w.append(&commands(1, 3)).unwrap();
    w.close().unwrap();
    assert_eq!(recover(dir.path(), RecoverOptions::default()).unwrap().last_seq, 3);
}

#[test]
fn lock_keeps_a_second_writer_out() {
    let dir = TempDir::new("lock");
    let cfg = small(dir.path(), Durability::None, 100);
    let (w, _) = JournalWriter::open_dir(cfg.clone(), RecoverOptions::default()).unwrap();
    let err = JournalWriter::open_dir(cfg.clone(), RecoverOptions::default()).unwrap_err();
    assert!(matches!(err, JournalError::Locked(_)), "{err}");
    // read-only inspection still works
    assert!(recover(dir.path(), RecoverOptions { read_only: true, ..Default::default() }).is_ok());
    drop(w);
    assert!(JournalWriter::open_dir(cfg, RecoverOptions::default()).is_ok());
}

#[test]
fn missing_and_foreign_files_are_clear_errors() {
    let dir = TempDir::new("foreign");
    let missing = dir.path().join("nope");
    let err = recover(&missing, RecoverOptions::default()).unwrap_err();
    assert!(matches!(err, JournalError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("nope"));

    std::fs::write(dir.path().join(segment_file_name(1)), b"PK\x03\x04 this is a zip file, not a journal").unwrap();
    let err = recover(dir.path(), RecoverOptions::default()).unwrap_err();
    assert!(matches!(err, JournalError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("bad magic"), "{err}");

    let dir = TempDir::new("foreign-name");
    std::fs::write(dir.path().join("notes.twj"), b"x").unwrap();
    let err = recover(dir.path(), RecoverOptions::default()).unwrap_err();
    assert!(matches!(err, JournalError::Foreign { .. }), "{err}");

    // A segment whose name and header disagree.
    let dir = TempDir::new("renamed");
    let mut w = JournalWriter::create(small(dir.path(), Durability::None, 100), 1).unwrap();
    w.append(&commands(1, 5)).unwrap();
    w.close().unwrap();
    std::fs::rename(dir.path().join(segment_file_name(1)), dir.path().join(segment_file_name(2))).unwrap();
    let err = recover(dir.path(), RecoverOptions::default()).unwrap_err();
    assert!(matches!(err, JournalError::Foreign { .. }), "{err}");

    // Other files in the directory are ignored.
    let dir = TempDir::new("others");
    std::fs::write(dir.path().join("README"), b"hello").unwrap();
    let rec = recover(dir.path(), RecoverOptions::default()).unwrap();
    assert!(rec.is_empty());
}

#[test]
fn from_seq_is_the_snapshot_extension_point() {
    let dir = TempDir::new("from");
    let mut w = JournalWriter::create(small(dir.path(), Durability::None, 7), 1).unwrap();
    w.append(&commands(1, 30)).unwrap();
    w.close().unwrap();
    let rec = recover(dir.path(), RecoverOptions { from_seq: 12, ..Default::default() }).unwrap();
    assert_eq!(rec.from_seq, 12);
    assert_eq!(rec.read_all().unwrap(), commands(12, 30));
    drop(rec); // (a non-read-only Recovered holds the directory lock)
    let rec = recover(dir.path(), RecoverOptions { from_seq: 31, ..Default::default() }).unwrap();
    assert!(rec.read_all().unwrap().is_empty());
    drop(rec);
    let err = recover(dir.path(), RecoverOptions { from_seq: 32, ..Default::default() }).unwrap_err();
    assert!(matches!(err, JournalError::Missing { from_seq: 32, first_seq: 1, last_seq: 30 }), "{err}");

    // A journal continued after a snapshot at 100 starts at 101.
    let dir = TempDir::new("from-snap");
    let mut w = JournalWriter::create(small(dir.path(), Durability::None, 7), 101).unwrap();
    w.append(&commands(101, 110)).unwrap();
    w.close().unwrap();
    let rec = recover(dir.path(), RecoverOptions { from_seq: 101, ..Default::default() }).unwrap();
    assert_eq!((rec.first_seq, rec.last_seq), (101, 110));
    assert_eq!(rec.read_all().unwrap(), commands(101, 110));
    drop(rec);
    let err = recover(dir.path(), RecoverOptions { from_seq: 50, ..Default::default() }).unwrap_err();
    assert!(matches!(err, JournalError::Missing { .. }), "{err}");
}

#[test]
fn durability_parses() {
    assert_eq!("sync".parse::<Durability>().unwrap(), Durability::Sync);
    assert_eq!("none".parse::<Durability>().unwrap(), Durability::None);
    assert_eq!("async".parse::<Durability>().unwrap(), Durability::Async { interval_ms: 5 });
    assert_eq!("async:20".parse::<Durability>().unwrap(), Durability::Async { interval_ms: 20 });
    assert_eq!("async:20ms".parse::<Durability>().unwrap(), Durability::Async { interval_ms: 20 });
    assert!("async:0".parse::<Durability>().is_err());
    assert!("fast".parse::<Durability>().is_err());
    for d in [Durability::Sync, Durability::None, Durability::Async { interval_ms: 7 }] {
        assert_eq!(d.to_string().parse::<Durability>().unwrap(), d);
    }
}
