//! `recover_engine` validates the journal while it replays it (one pass). These tests check that
//! it reaches exactly the verdict of the validating pre-pass (`recover`, then a replay) on the
//! same bytes: same error (file, offset, reason), same torn-tail cut, same notes, same files left
//! on disk, same engine state; and that a refusal changes nothing on disk.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use tickwire_core::Engine;
use tickwire_journal::format::{slot_offset, RECORD_LEN};
use tickwire_journal::snapshot::write_snapshot;
use tickwire_journal::{
    list_segments, recover, recover_engine, Durability, JournalConfig, JournalError, JournalWriter, RecoverOptions,
};

/// ~45 records per segment.
const SEGMENT_BYTES: u64 = 4 << 10;

fn write_journal(dir: &Path, n: u64) {
    let cfg = JournalConfig { durability: Durability::None, segment_bytes: SEGMENT_BYTES, ..JournalConfig::new(dir) };
    let mut w = JournalWriter::create(cfg, 1).unwrap();
    let cmds = commands(1, n);
    for chunk in cmds.chunks(7) {
        w.append(chunk).unwrap();
        w.commit().unwrap();
    }
    w.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Segment and snapshot files with their lengths and contents (the lock file aside).
fn dir_state(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// A surviving segment: file name, records, data end, file length, journal time range.
type Seg = (String, u64, u64, u64, Option<(u64, u64)>);

/// What a recovery ended with, with the directory's name taken out of paths.
#[derive(Debug, PartialEq)]
enum Outcome {
    Refused(String),
    Recovered {
        state_hash: u64,
        first_seq: u64,
        last_seq: u64,
        truncated_bytes: u64,
        notes: Vec<String>,
        removed: Vec<String>,
        segments: Vec<Seg>,
    },
}

fn strip(s: String, dir: &Path) -> String {
    s.replace(&format!("{}/", dir.display()), "")
}

fn outcome(dir: &Path, rec: std::result::Result<(u64, tickwire_journal::Recovered), JournalError>) -> Outcome {
    match rec {
        Err(e) => Outcome::Refused(strip(e.to_string(), dir)),
        Ok((state_hash, r)) => Outcome::Recovered {
            state_hash,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            truncated_bytes: r.truncated_bytes,
            notes: r.notes.iter().map(|n| strip(n.clone(), dir)).collect(),
            removed: names(&r.removed),
            segments: r
                .segments
                .iter()
                .map(|s| (names(std::slice::from_ref(&s.path))[0].clone(), s.records, s.data_end, s.file_len, s.ts_range))
                .collect(),
        },
    }
}

/// The validating pre-pass, then a replay (the reference).
fn two_pass(dir: &Path, opts: RecoverOptions) -> Outcome {
    let r = recover(dir, opts).and_then(|r| {
        let mut e = Engine::new(&engine_config()).unwrap();
        r.replay_into(&mut e, &mut Vec::new())?;
        Ok((e.state_hash(), r))
    });
    outcome(dir, r)
}

fn single_pass(dir: &Path, opts: RecoverOptions) -> Outcome {
    let r = recover_engine(dir, &engine_config(), opts).map(|(e, rep)| {
        assert_eq!(e.state_hash(), rep.state_hash);
        assert_eq!(e.last_cmd_seq(), rep.journal.last_seq);
        (e.state_hash(), rep.journal)
    });
    outcome(dir, r)
}

/// Same bytes in two directories, recovered each way: same outcome, same files afterwards.
fn check_same(ctx: &str, damaged: &Path, opts: RecoverOptions) -> Outcome {
    let a = TempDir::new("sp-ref");
    let b = TempDir::new("sp-one");
    copy_dir(damaged, a.path());
    copy_dir(damaged, b.path());
    let want = two_pass(a.path(), opts);
    let got = single_pass(b.path(), opts);
    assert_eq!(got, want, "{ctx}: outcome");
    assert_eq!(dir_state(b.path()), dir_state(a.path()), "{ctx}: files on disk afterwards");
    if matches!(want, Outcome::Refused(_)) {
        assert_eq!(dir_state(b.path()), dir_state(damaged), "{ctx}: a refusal changes nothing on disk");
    }
    got
}

fn segs(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

fn modify(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

const OPTS: [RecoverOptions; 3] = [
    RecoverOptions { read_only: false, truncate_at_corruption: false, from_seq: 0 },
    RecoverOptions { read_only: true, truncate_at_corruption: false, from_seq: 0 },
    RecoverOptions { read_only: false, truncate_at_corruption: true, from_seq: 0 },
];

#[test]
fn clean_journal_replays_in_one_pass() {
    let d = TempDir::new("sp-clean");
    write_journal(d.path(), 200);
    assert!(segs(d.path()).len() >= 4);
    for opts in OPTS {
        let o = check_same("clean", d.path(), opts);
        match o {
            Outcome::Recovered { last_seq, ref notes, state_hash, .. } => {
                assert_eq!(last_seq, 200);
                assert!(notes.is_empty(), "{notes:?}");
                assert_eq!(state_hash, state_hash_of(&commands(1, 200)));
            }
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn torn_tail_is_cut_after_the_replay_validated_it() {
    let d = TempDir::new("sp-torn");
    write_journal(d.path(), 200);
    let last = segs(d.path()).pop().unwrap();
    let seg_first = tickwire_journal::format::parse_segment_file_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
    let records_in_last = 200 - seg_first + 1;
    assert!(records_in_last >= 3);
    // Zero the last record from its sequence on: a torn write.
    let end = slot_offset(records_in_last) as usize;
    modify(&last, |b| b[end - RECORD_LEN + 8..end].fill(0));
    for opts in OPTS {
        match check_same("torn", d.path(), opts) {
            Outcome::Recovered { last_seq, notes, truncated_bytes, .. } => {
                assert_eq!(last_seq, 199);
                assert!(truncated_bytes > 0);
                assert_eq!(notes.len(), 1, "{notes:?}");
                assert!(notes[0].contains("torn tail"), "{notes:?}");
            }
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn damage_before_the_tail_is_refused_with_the_same_error_and_nothing_changes() {
    let d = TempDir::new("sp-mid");
    write_journal(d.path(), 200);
    let s = segs(d.path());
    // A flipped byte in a middle record of the second segment, and a torn tail in the last one
    // (which must not be cut when recovery refuses).
    modify(&s[1], |b| b[slot_offset(10) as usize + 30] ^= 0x10);
    let last = s.last().unwrap();
    modify(last, |b| {
        let n = b.iter().rposition(|&x| x != 0).unwrap();
        b[n - 20..=n].fill(0);
    });
    let o = check_same("mid", d.path(), OPTS[0]);
    match o {
        Outcome::Refused(e) => {
            assert!(e.contains(&format!("corrupt record at offset {}", slot_offset(10))), "{e}");
        }
        o => panic!("{o:?}"),
    }
    for opts in &OPTS[1..] {
        check_same("mid", d.path(), *opts);
    }
}

#[test]
fn damage_in_a_segment_behind_the_snapshot_is_still_refused() {
    let d = TempDir::new("sp-snap");
    write_journal(d.path(), 200);
    let mut e = Engine::new(&engine_config()).unwrap();
    for c in commands(1, 150) {
        e.handle(&c, &mut Vec::new());
    }
    write_snapshot(d.path(), &e.snapshot()).unwrap();
    let ok = TempDir::new("sp-snap-ok");
    copy_dir(d.path(), ok.path());
    let (e2, rep) = recover_engine(ok.path(), &engine_config(), RecoverOptions::default()).unwrap();
    assert_eq!(rep.replayed, 50);
    assert_eq!(e2.state_hash(), state_hash_of(&commands(1, 200)));

    let s = segs(d.path());
    modify(&s[0], |b| b[slot_offset(3) as usize + 50] ^= 1);
    let before = dir_state(d.path());
    let err = recover_engine(d.path(), &engine_config(), RecoverOptions::default()).map(|_| ()).unwrap_err();
    match err {
        JournalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, s[0]);
            assert_eq!(offset, slot_offset(3));
        }
        e => panic!("{e}"),
    }
    assert_eq!(dir_state(d.path()), before);
}

/// Random damage (flipped bytes, zeroed or cut ranges, a record copied to another slot) in random
/// segments: the single pass always agrees with the validating pre-pass.
#[test]
fn random_damage_same_verdict_as_the_validating_pass() {
    let seed = seed("random_damage_same_verdict_as_the_validating_pass");
    let mut rng = Rng(seed);
    let base = TempDir::new("sp-rand-base");
    write_journal(base.path(), 230);
    for case in 0..60 {
        let d = TempDir::new("sp-rand");
        copy_dir(base.path(), d.path());
        let s = segs(d.path());
        let kinds = 1 + rng.below(2);
        let mut what = Vec::new();
        for _ in 0..kinds {
            // Mostly the last segment, where the torn-tail decision is made.
            let i = if rng.below(3) == 0 { rng.below(s.len() as u64) as usize } else { s.len() - 1 };
            let len = std::fs::metadata(&s[i]).unwrap().len() as usize;
            let written = std::fs::read(&s[i]).unwrap().iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
            let at = rng.below(written.max(1) as u64) as usize;
            match rng.below(5) {
                0 => {
                    what.push(format!("flip seg {i} at {at}"));
                    modify(&s[i], |b| b[at] ^= 1 << rng.below(8));
                }
                1 => {
                    what.push(format!("zero seg {i} from {at} to written end {written}"));
                    modify(&s[i], |b| b[at..written].fill(0));
                }
                2 => {
                    let n = 1 + rng.below(200) as usize;
                    what.push(format!("zero seg {i} {at}..+{n}"));
                    modify(&s[i], |b| {
                        let e = (at + n).min(b.len());
                        b[at..e].fill(0)
                    });
                }
                3 => {
                    what.push(format!("cut seg {i} at {at} (len {len})"));
                    modify(&s[i], |b| b.truncate(at));
                }
                _ => {
                    let slots = (written.saturating_sub(64) / RECORD_LEN) as u64;
                    if slots >= 2 {
                        let from = rng.below(slots);
                        let to = rng.below(slots + 2);
                        what.push(format!("copy seg {i} record {from} to slot {to}"));
                        modify(&s[i], |b| {
                            let f = slot_offset(from) as usize;
                            let t = slot_offset(to) as usize;
                            let rec = b[f..f + RECORD_LEN].to_vec();
                            if b.len() < t + RECORD_LEN {
                                b.resize(t + RECORD_LEN, 0);
                            }
                            b[t..t + RECORD_LEN].copy_from_slice(&rec);
                        });
                    }
                }
            }
        }
        let opts = OPTS[rng.below(3) as usize];
        check_same(&format!("seed {seed} case {case}: {what:?} {opts:?}"), d.path(), opts);
    }
}
