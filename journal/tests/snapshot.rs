//! Snapshots, the shadow snapshotter, retention and `recover_engine`:
//! - snapshot + journal recovery equals a pure journal replay (and the state before the stop),
//!   across restarts, with sequences continuing without a gap;
//! - a corrupt newest snapshot is skipped (reason reported) and an older one used; with none
//!   usable, a full replay;
//! - a crash between writing the temp file and renaming it leaves a recoverable directory;
//! - retention never deletes a segment a kept snapshot needs, never counts a snapshot that does
//!   not verify, and archives when asked.

mod common;

use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;
use tickwire_core::{Engine, Seq};
use tickwire_journal::snapshot::{encode_snapshot, list_snapshots, snapshot_file_name, write_snapshot, TEMP_SUFFIX};
use tickwire_journal::{
    apply_retention, copy_engine, list_segments, recover, recover_engine, ChannelSource, Durability, JournalConfig,
    JournalError, JournalWriter, Journaler, RecoverOptions, SegmentRetention, SnapshotConfig, Snapshotter,
    SnapshotterStats,
};

const WAIT: Duration = Duration::from_secs(60);

fn jcfg(dir: &Path) -> JournalConfig {
    // ~744 records per segment: rotation happens often.
    JournalConfig { durability: Durability::Sync, segment_bytes: 64 << 10, ..JournalConfig::new(dir) }
}

fn scfg(dir: &Path) -> SnapshotConfig {
    SnapshotConfig {
        every_commands: 0,
        every: None,
        keep: 2,
        segments: SegmentRetention::Keep,
        on_stop: false,
        ..SnapshotConfig::new(dir, engine_config())
    }
}

/// A running server, minus the network: the test thread is the matcher (it applies every command
/// to `engine`), a journaler journals them from a channel, a snapshotter follows the journal.
struct Server {
    engine: Engine,
    tx: Option<Sender<tickwire_core::Command>>,
    journaler: Journaler,
    snap: Snapshotter,
    next: Seq,
}

impl Server {
    fn start(dir: &Path, cfg: SnapshotConfig) -> Server {
        let (engine, mut rep) = recover_engine(dir, &engine_config(), RecoverOptions::default()).unwrap();
        assert_eq!(rep.next_seq(), engine.last_cmd_seq() + 1);
        let writer = JournalWriter::open(jcfg(dir), &mut rep.journal).unwrap();
        let shadow = copy_engine(&engine, &engine_config()).unwrap();
        let (tx, rx) = channel();
        let journaler = Journaler::spawn(writer, ChannelSource::new(rx)).unwrap();
        let snap = Snapshotter::spawn(cfg, shadow, journaler.durable()).unwrap();
        let next = rep.next_seq();
        Server { engine, tx: Some(tx), journaler, snap, next }
    }

    fn send(&mut self, n: u64) {
        let mut sink = Vec::new();
        for _ in 0..n {
            let c = command_for(self.next);
            sink.clear();
            self.engine.handle(&c, &mut sink);
            self.tx.as_ref().unwrap().send(c).unwrap();
            self.next += 1;
        }
    }

    /// Admin snapshot once everything sent is durable; returns its sequence.
    fn snapshot_now(&self) -> Seq {
        let last = self.next - 1;
        assert!(self.journaler.durable().wait_for(last, WAIT).unwrap() >= last);
        let info = self.snap.request().wait(WAIT).unwrap();
        assert!(info.last_cmd_seq >= last, "snapshot {} does not cover {last}", info.last_cmd_seq);
        assert!(info.path.exists());
        info.last_cmd_seq
    }

    /// Clean stop; returns the engine's state hash and the snapshotter's counters.
    fn stop(mut self) -> (u64, Seq, SnapshotterStats) {
        drop(self.tx.take());
        self.journaler.stop();
        self.journaler.join().unwrap();
        self.snap.stop();
        let st = self.snap.join().unwrap();
        (self.engine.state_hash(), self.engine.last_cmd_seq(), st)
    }
}

fn pure_replay_hash(dir: &Path) -> u64 {
    let rec = recover(dir, RecoverOptions { read_only: true, ..Default::default() }).unwrap();
    assert_eq!(rec.first_seq, 1, "pure replay needs the whole journal");
    let mut e = Engine::new(&engine_config()).unwrap();
    rec.replay_into(&mut e, &mut Vec::new()).unwrap();
    e.state_hash()
}

fn flip_byte(path: &Path, at_from_end: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - 1 - at_from_end;
    b[i] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn snapshot_and_journal_recovery_equals_pure_replay_across_restarts() {
    let dir = TempDir::new("snap-equal");
    let mut s = Server::start(dir.path(), SnapshotConfig { every_commands: 700, ..scfg(dir.path()) });
    s.send(1500);
    let mid = s.snapshot_now();
    s.send(1600);
    let (hash1, last1, st) = s.stop();
    assert_eq!(last1, 3100);
    // Periodic at exactly 700, 1400, 2100, 2800 (counted from the last snapshot), plus the
    // requested one (which may coincide with none of them).
    assert!(st.snapshots >= 4, "periodic + requested snapshots: {st:?}");
    assert_eq!(st.applied_seq, 3100);
    assert!(mid >= 1500);

    // Recovery uses the newest snapshot and replays only what follows; equals the pure replay.
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    let (_, snap_seq) = rep.snapshot.clone().expect("a snapshot was used");
    assert!(snap_seq > 1500 && snap_seq <= 3100, "newest snapshot {snap_seq}");
    assert_eq!(rep.replayed, 3100 - snap_seq);
    assert_eq!(e.state_hash(), hash1);
    assert_eq!(e.last_cmd_seq(), 3100);
    assert_eq!(rep.next_seq(), 3101);
    drop((e, rep));
    assert_eq!(pure_replay_hash(dir.path()), hash1);
    assert_eq!(hash1, state_hash_of(&commands(1, 3100)));

    // Restart: sequences continue at 3101 without a gap; a snapshot on stop this time.
    let mut s = Server::start(dir.path(), SnapshotConfig { every_commands: 500, on_stop: true, ..scfg(dir.path()) });
    assert_eq!(s.next, 3101);
    s.send(1234);
    let (hash2, last2, st) = s.stop();
    assert_eq!(last2, 4334);
    assert_eq!(st.last.as_ref().unwrap().last_cmd_seq, 4334, "snapshot on stop");
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.snapshot.as_ref().unwrap().1, 4334);
    assert_eq!(rep.replayed, 0);
    assert_eq!(e.state_hash(), hash2);
    drop((e, rep));
    let rec = recover(dir.path(), RecoverOptions { read_only: true, ..Default::default() }).unwrap();
    assert_eq!(rec.read_all().unwrap(), commands(1, 4334), "journal is the gapless command stream");
    assert_eq!(pure_replay_hash(dir.path()), hash2);
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_an_older_one_then_to_full_replay() {
    let dir = TempDir::new("snap-corrupt");
    let mut s = Server::start(dir.path(), scfg(dir.path()));
    s.send(1000);
    let a = s.snapshot_now();
    s.send(1000);
    let b = s.snapshot_now();
    s.send(300);
    let (hash, _, _) = s.stop();
    let snaps = list_snapshots(dir.path()).unwrap();
    assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![a, b]);

    // Newest damaged in its payload: skipped with a reason, the older one used.
    flip_byte(&snaps[1].1, 100);
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.snapshot.as_ref().unwrap().1, a);
    assert_eq!(rep.skipped.len(), 1);
    assert_eq!(rep.skipped[0].0, snaps[1].1);
    assert!(rep.skipped[0].1.contains("CRC"), "reason: {}", rep.skipped[0].1);
    assert_eq!(rep.replayed, 2300 - a);
    assert_eq!(e.state_hash(), hash);
    drop((e, rep));

    // Both damaged (the older one truncated): full replay from the journal.
    let bytes = std::fs::read(&snaps[0].1).unwrap();
    std::fs::write(&snaps[0].1, &bytes[..bytes.len() / 2]).unwrap();
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert!(rep.snapshot.is_none());
    assert_eq!(rep.skipped.len(), 2);
    assert_eq!(rep.replayed, 2300);
    assert_eq!(e.state_hash(), hash);
}

#[test]
fn snapshot_that_does_not_fit_the_configuration_is_skipped() {
    let dir = TempDir::new("snap-config");
    let mut s = Server::start(dir.path(), scfg(dir.path()));
    s.send(800);
    s.snapshot_now();
    let (hash, _, _) = s.stop();
    // An engine configured with fewer instruments cannot take the snapshot: skipped (and the
    // replay then rejects the other instrument's commands, so only check the skip).
    let mut small = engine_config();
    small.instruments.truncate(1);
    let (_, rep) = recover_engine(dir.path(), &small, RecoverOptions::default()).unwrap();
    assert!(rep.snapshot.is_none());
    assert!(rep.skipped[0].1.contains("cannot be restored"), "{}", rep.skipped[0].1);
    drop(rep); // releases the directory lock
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert!(rep.snapshot.is_some());
    assert_eq!(e.state_hash(), hash);
}

#[test]
fn crash_between_temp_write_and_rename_is_recoverable() {
    let dir = TempDir::new("snap-crash");
    let mut s = Server::start(dir.path(), scfg(dir.path()));
    s.send(900);
    let a = s.snapshot_now();
    s.send(600);
    let (hash, last, _) = s.stop();

    // What a crash at each point of write_snapshot leaves for the next (newer) snapshot: a temp
    // file partly written, or whole but not renamed. The rename itself is atomic.
    let mut e = Engine::new(&engine_config()).unwrap();
    let rec = recover(dir.path(), RecoverOptions { read_only: true, ..Default::default() }).unwrap();
    rec.replay_into(&mut e, &mut Vec::new()).unwrap();
    drop(rec);
    let bytes = encode_snapshot(&e.snapshot()).unwrap();
    let tmp = dir.path().join(format!("{}{TEMP_SUFFIX}", snapshot_file_name(last)));
    for cut in [0, 17, 64, bytes.len() / 3, bytes.len()] {
        std::fs::write(&tmp, &bytes[..cut]).unwrap();
        let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
        assert_eq!(rep.snapshot.as_ref().unwrap().1, a, "cut {cut}");
        assert_eq!(rep.removed_temp, vec![tmp.clone()]);
        assert!(!tmp.exists());
        assert_eq!(e.state_hash(), hash);
        assert_eq!(rep.next_seq(), last + 1);
    }
    // After the rename (directory not yet synced, the file whole): it is simply the newest.
    std::fs::write(dir.path().join(snapshot_file_name(last)), &bytes).unwrap();
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.snapshot.as_ref().unwrap().1, last);
    assert_eq!(rep.replayed, 0);
    assert_eq!(e.state_hash(), hash);
}

fn segment_firsts(dir: &Path) -> Vec<Seq> {
    list_segments(dir).unwrap().into_iter().map(|s| s.0).collect()
}

/// Every kept snapshot can still be used: the journal holds the command after it.
fn assert_snapshots_usable(dir: &Path) {
    let first = segment_firsts(dir)[0];
    for (s, p) in list_snapshots(dir).unwrap() {
        assert!(first <= s + 1, "{} at {s} needs {} but the journal starts at {first}", p.display(), s + 1);
    }
}

#[test]
fn retention_never_deletes_what_recovery_needs() {
    let dir = TempDir::new("snap-retention");
    let cfg = SnapshotConfig { keep: 2, segments: SegmentRetention::Delete, ..scfg(dir.path()) };
    let mut s = Server::start(dir.path(), cfg.clone());
    let mut taken = Vec::new();
    for round in 0..6 {
        s.send(1100 + round * 37);
        taken.push(s.snapshot_now());
        assert_snapshots_usable(dir.path());
        assert!(list_snapshots(dir.path()).unwrap().len() <= 2);
    }
    s.send(250);
    let (hash, last, st) = s.stop();
    assert!(st.segments_retired > 0, "{st:?}");
    assert!(st.snapshots_removed >= 4, "{st:?}");
    let firsts = segment_firsts(dir.path());
    assert!(firsts[0] > 1, "old segments deleted: {firsts:?}");
    let kept: Vec<Seq> = list_snapshots(dir.path()).unwrap().into_iter().map(|s| s.0).collect();
    assert_eq!(kept, taken[taken.len() - 2..].to_vec());
    // Retired up to the OLDEST kept snapshot, not further.
    assert!(firsts[0] <= kept[0] + 1);

    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(e.state_hash(), hash);
    assert_eq!(rep.next_seq(), last + 1);
    drop((e, rep));
    // The newest kept snapshot damaged: the older kept one still recovers (its journal is there).
    flip_byte(&list_snapshots(dir.path()).unwrap()[1].1, 3);
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.snapshot.as_ref().unwrap().1, kept[0]);
    assert_eq!(e.state_hash(), hash);
    drop((e, rep));
    // Both damaged and the early journal gone: refused (Missing), never a silently wrong state.
    flip_byte(&list_snapshots(dir.path()).unwrap()[0].1, 3);
    match recover_engine(dir.path(), &engine_config(), RecoverOptions::default()) {
        Err(JournalError::Missing { from_seq: 1, .. }) => {}
        other => panic!("expected Missing, got {:?}", other.map(|(_, r)| r.snapshot)),
    }
}

#[test]
fn retention_counts_only_snapshots_that_verify() {
    let dir = TempDir::new("snap-verify");
    // A journal of 3000 commands in ~744-record segments, no snapshotter.
    let mut w = JournalWriter::create(jcfg(dir.path()), 1).unwrap();
    w.append(&commands(1, 3000)).unwrap();
    w.close().unwrap();
    let engine_at = |n: Seq| {
        let mut e = Engine::new(&engine_config()).unwrap();
        let mut sink = Vec::new();
        for c in commands(1, n) {
            sink.clear();
            e.handle(&c, &mut sink);
        }
        e
    };
    write_snapshot(dir.path(), &engine_at(1000).snapshot()).unwrap();
    let newest = write_snapshot(dir.path(), &engine_at(2900).snapshot()).unwrap().path;
    flip_byte(&newest, 10);
    let before = segment_firsts(dir.path());
    let cfg = SnapshotConfig { keep: 1, segments: SegmentRetention::Delete, ..scfg(dir.path()) };
    let (snaps_removed, retired) = apply_retention(&cfg, &mut HashSet::new()).unwrap();
    // The damaged newer snapshot is not counted: the cut is at 1000, not 2900, and it stays.
    assert_eq!(snaps_removed, 0);
    assert!(newest.exists());
    let after = segment_firsts(dir.path());
    assert_eq!(retired as usize, before.len() - after.len());
    assert!(after[0] <= 1001 && after[0] > 1, "{before:?} -> {after:?}");
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.snapshot.as_ref().unwrap().1, 1000);
    assert_eq!(rep.skipped.len(), 1);
    assert_eq!(e.state_hash(), state_hash_of(&commands(1, 3000)));
}

#[test]
fn retention_archives_segments_and_empty_journal_after_snapshot_continues() {
    let dir = TempDir::new("snap-archive");
    let archive: PathBuf = dir.path().join("archive");
    let cfg =
        SnapshotConfig { keep: 1, segments: SegmentRetention::Archive(archive.clone()), on_stop: true, ..scfg(dir.path()) };
    let mut s = Server::start(dir.path(), cfg.clone());
    s.send(2000);
    s.snapshot_now();
    let (hash, last, st) = s.stop();
    assert!(st.segments_retired >= 2);
    let archived = list_segments(&archive).unwrap();
    assert_eq!(archived.len() as u64, st.segments_retired);
    // Archive + live segments are the whole journal.
    let live = segment_firsts(dir.path());
    assert!(archived.last().map(|a| a.0).unwrap() < live[0]);

    // A snapshot at the very end, then everything before it retired, and the (empty) segment
    // after it removed by recovery: the journal holds nothing, the snapshot carries the state.
    let s = Server::start(dir.path(), SnapshotConfig { segments: SegmentRetention::Delete, ..cfg });
    assert_eq!(s.next, last + 1);
    s.snapshot_now();
    let (h2, l2, _) = s.stop();
    assert_eq!((h2, l2), (hash, last));
    let (e, rep) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(e.state_hash(), hash);
    assert_eq!(rep.next_seq(), last + 1);
    drop((e, rep));
    let mut s = Server::start(dir.path(), scfg(dir.path()));
    assert_eq!(s.next, last + 1);
    s.send(100);
    let (h3, l3, _) = s.stop();
    assert_eq!(l3, last + 100);
    let (e, _) = recover_engine(dir.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(e.state_hash(), h3);
    assert_eq!(h3, state_hash_of(&commands(1, last + 100)));
}
