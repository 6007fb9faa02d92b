//! Crash at every point: write a journal, then for many cut points (every byte of the last
//! records, and random ones anywhere, headers included) truncate, zero (a torn write into
//! preallocated space) or corrupt it; recover and compare with the oracle: the surviving commands
//! are the longest prefix whose records are intact, a damaged record before the tail is refused
//! (naming file and offset) unless truncation is asked for, and an engine fed the recovered
//! commands has the state hash of one fed the surviving prefix.
//!
//! More random cases: `TICKWIRE_JOURNAL_CRASH_CASES=20000 cargo test -p tickwire-journal --test
//! crash_points` (seed printed; `TICKWIRE_JOURNAL_SEED` replays one).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use tickwire_core::Seq;
use tickwire_journal::format::{segment_file_name, slot_offset, HEADER_LEN, RECORD_LEN};
use tickwire_journal::{recover, Durability, JournalConfig, JournalError, JournalWriter, RecoverOptions};

const PER_SEG: u64 = 40;
const SEG_BYTES: u64 = HEADER_LEN as u64 + PER_SEG * RECORD_LEN as u64;
const N: Seq = 150; // 4 segments: 1..=40, 41..=80, 81..=120, 121..=150 (+ preallocated zeros)

#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// The file ends at `at` (crash before the rest reached the disk, file not preallocated).
    Truncate { seg: usize, at: usize },
    /// Bytes from `at` are zero (a torn write into preallocated space).
    ZeroFrom { seg: usize, at: usize },
    /// One byte damaged.
    Flip { seg: usize, at: usize, mask: u8 },
}

impl Mutation {
    fn seg(&self) -> usize {
        match *self {
            Mutation::Truncate { seg, .. } | Mutation::ZeroFrom { seg, .. } | Mutation::Flip { seg, .. } => seg,
        }
    }
    fn apply(&self, orig: &[u8]) -> Vec<u8> {
        let mut b = orig.to_vec();
        match *self {
            Mutation::Truncate { at, .. } => b.truncate(at),
            Mutation::ZeroFrom { at, .. } => b[at.min(orig.len())..].fill(0),
            Mutation::Flip { at, mask, .. } => b[at] ^= mask,
        }
        b
    }
}

struct Original {
    files: Vec<(String, Vec<u8>)>,
}

fn seg_of(seq: Seq) -> usize {
    ((seq - 1) / PER_SEG) as usize
}
fn off_of(seq: Seq) -> usize {
    slot_offset((seq - 1) % PER_SEG) as usize
}
fn first_of(seg: usize) -> Seq {
    seg as Seq * PER_SEG + 1
}
fn written_len(b: &[u8]) -> u64 {
    b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1) as u64
}

fn cfg(dir: &Path) -> JournalConfig {
    JournalConfig { segment_bytes: SEG_BYTES, durability: Durability::None, ..JournalConfig::new(dir) }
}

fn write_original(seed: u64) -> Original {
    let dir = TempDir::new("crash-orig");
    let mut w = JournalWriter::create(cfg(dir.path()), 1).unwrap();
    let all = commands(1, N);
    let mut r = Rng(seed);
    let mut i = 0usize;
    while i < all.len() {
        let n = (1 + r.below(7) as usize).min(all.len() - i);
        w.append(&all[i..i + n]).unwrap();
        w.commit().unwrap();
        i += n;
    }
    drop(w); // a crash: no close, the last segment keeps its preallocated zeros
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().unwrap().ends_with(".twj"))
        .map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4);
    for (k, (name, bytes)) in files.iter().enumerate() {
        assert_eq!(name, &segment_file_name(first_of(k)));
        assert_eq!(bytes.len() as u64, SEG_BYTES);
    }
    Original { files }
}

/// What recovery must do.
#[derive(Debug)]
enum Expect {
    /// Surviving prefix `1..=last`, and exactly this many written bytes dropped.
    Ok { last: Seq, dropped: u64 },
    /// Refused. `file` is the segment named in the error; `offset` the bad record's (if known).
    /// With `truncate_at_corruption` the outcome is `with_option` (None: still refused — a
    /// foreign header).
    Refused { file: usize, offset: Option<u64>, with_option: Option<(Seq, u64)> },
}

fn oracle(orig: &Original, m: &Mutation) -> Expect {
    let k = m.seg();
    let last_seg = orig.files.len() - 1;
    let before = &orig.files[k].1;
    let after = m.apply(before);
    let intact = |seq: Seq| {
        let (o, s) = (off_of(seq), seg_of(seq));
        if s != k {
            return true;
        }
        after.len() >= o + RECORD_LEN && after[o..o + RECORD_LEN] == before[o..o + RECORD_LEN]
    };
    let later_bytes: u64 = orig.files[k + 1..].iter().map(|f| written_len(&f.1)).sum();
    let seg_seqs = first_of(k)..=(first_of(k) + PER_SEG - 1).min(N);
    let header_intact = after.len() >= HEADER_LEN && after[..HEADER_LEN] == before[..HEADER_LEN];
    if !header_intact {
        let any_record = seg_seqs.clone().any(intact);
        if k == last_seg && !any_record {
            // torn creation: the segment goes, with every byte written in it
            return Expect::Ok { last: first_of(k) - 1, dropped: written_len(&after) };
        }
        // Magic, version and layout bytes make it a foreign file (no truncation option for that).
        let at = match *m {
            Mutation::Flip { at, .. } => at,
            Mutation::Truncate { at, .. } | Mutation::ZeroFrom { at, .. } => at,
        };
        // (a version flipped to 0 looks like zeroed bytes: damage, not another format)
        let foreign = matches!(*m, Mutation::Flip { mask, .. } if at < 8 || (at == 9 || (at == 8 && mask != 1)));
        let with_option = (!foreign).then(|| (first_of(k) - 1, written_len(&after) + later_bytes));
        return Expect::Refused { file: k, offset: Some(0).filter(|_| !foreign), with_option };
    }
    let Some(s) = seg_seqs.clone().find(|&q| !intact(q)) else {
        // Every record intact: garbage (if any) after the data of the last segment is a torn tail.
        let data_end = if k == last_seg { off_of(N) + RECORD_LEN } else { SEG_BYTES as usize };
        return Expect::Ok { last: N, dropped: written_len(&after).saturating_sub(data_end as u64) };
    };
    let kept_end = off_of(s) as u64;
    let dropped_here = written_len(&after).saturating_sub(kept_end);
    let valid_after = (s + 1..=*seg_seqs.end()).any(intact);
    if k == last_seg && !valid_after {
        return Expect::Ok { last: s - 1, dropped: dropped_here };
    }
    // A non-last segment cut or zeroed at a record boundary ends cleanly: the error is then the
    // sequence gap at the next segment (which names this one as the one ending early).
    // (nothing written after the last intact record)
    if dropped_here == 0 {
        return Expect::Refused { file: k, offset: None, with_option: Some((s - 1, later_bytes)) };
    }
    Expect::Refused { file: k, offset: Some(kept_end), with_option: Some((s - 1, dropped_here + later_bytes)) }
}

fn materialise(orig: &Original, m: &Mutation) -> TempDir {
    let dir = TempDir::new("crash-case");
    for (j, (name, bytes)) in orig.files.iter().enumerate() {
        let b = if j == m.seg() { m.apply(bytes) } else { bytes.clone() };
        std::fs::write(dir.path().join(name), b).unwrap();
    }
    dir
}

fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "twj"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn check_ok(dir: &Path, opts: RecoverOptions, last: Seq, dropped: u64, m: &Mutation, continue_after: bool) {
    let ctx = format!("{m:?}");
    // Read-only first: same answer, nothing changed on disk.
    let before = snapshot_files(dir);
    let ro = recover(dir, RecoverOptions { read_only: true, ..opts }).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(ro.last_seq, last, "{ctx}: read-only last_seq");
    assert_eq!(ro.truncated_bytes, dropped, "{ctx}: read-only truncated_bytes");
    let ro_cmds = ro.read_all().unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(ro_cmds, commands(1, last), "{ctx}: read-only commands");
    assert_eq!(snapshot_files(dir), before, "{ctx}: read-only recovery changed files");

    let mut rec = recover(dir, opts).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(rec.last_seq, last, "{ctx}: last_seq");
    assert_eq!(rec.next_seq(), last + 1);
    assert_eq!(rec.truncated_bytes, dropped, "{ctx}: truncated_bytes");
    let cmds = rec.read_all().unwrap();
    let reference = commands(1, last);
    assert_eq!(cmds, reference, "{ctx}: recovered commands");
    assert_eq!(state_hash_of(&cmds), state_hash_of(&reference), "{ctx}: state hash");

    // After a repairing recovery the journal is clean: recovering again changes nothing.
    if continue_after {
        let mut w = JournalWriter::open(cfg(dir), &mut rec).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        w.append(&commands(last + 1, last + 25)).unwrap();
        w.commit().unwrap();
        w.close().unwrap();
        drop(rec);
        let again = recover(dir, RecoverOptions::default()).unwrap_or_else(|e| panic!("{ctx}: after continue: {e}"));
        assert_eq!(again.truncated_bytes, 0, "{ctx}: second recovery dropped bytes");
        assert!(again.notes.is_empty(), "{ctx}: {:?}", again.notes);
        assert_eq!(again.read_all().unwrap(), commands(1, last + 25), "{ctx}: continued journal");
    } else {
        drop(rec);
        let again = recover(dir, RecoverOptions { read_only: true, ..Default::default() }).unwrap();
        assert_eq!((again.truncated_bytes, again.last_seq), (0, last), "{ctx}: second recovery");
    }
}

fn run_case(orig: &Original, m: &Mutation, continue_after: bool) -> &'static str {
    let exp = oracle(orig, m);
    let dir = materialise(orig, m);
    match exp {
        Expect::Ok { last, dropped } => {
            check_ok(dir.path(), RecoverOptions::default(), last, dropped, m, continue_after);
            "ok"
        }
        Expect::Refused { file, offset, with_option } => {
            let name = &orig.files[file].0;
            for read_only in [true, false] {
                let err = recover(dir.path(), RecoverOptions { read_only, ..Default::default() })
                    .map(|r| r.last_seq)
                    .expect_err(&format!("{m:?}: expected a refusal naming {name}"));
                let text = err.to_string();
                assert!(text.contains(name.as_str()), "{m:?}: error does not name {name}: {text}");
                if let Some(off) = offset {
                    match err {
                        JournalError::Corrupt { offset: o, .. } => assert_eq!(o, off, "{m:?}: {text}"),
                        other => panic!("{m:?}: expected Corrupt at {off}, got {other}"),
                    }
                }
            }
            let opts = RecoverOptions { truncate_at_corruption: true, ..Default::default() };
            match with_option {
                Some((last, dropped)) => check_ok(dir.path(), opts, last, dropped, m, continue_after),
                None => {
                    let err = recover(dir.path(), opts).map(|r| r.last_seq).expect_err("foreign header");
                    assert!(matches!(err, JournalError::Foreign { .. }), "{m:?}: {err}");
                }
            }
            "refused"
        }
    }
}

#[test]
fn every_byte_of_the_last_records() {
    let orig = write_original(7);
    let last_seg = orig.files.len() - 1;
    let data_end = off_of(N) + RECORD_LEN;
    let mut counts = std::collections::BTreeMap::new();
    let mut i = 0;
    for at in data_end - 3 * RECORD_LEN..=data_end + RECORD_LEN {
        for m in [
            Mutation::Truncate { seg: last_seg, at },
            Mutation::ZeroFrom { seg: last_seg, at },
            Mutation::Flip { seg: last_seg, at, mask: 0x01 },
        ] {
            if let Mutation::Flip { at, .. } = m {
                if at >= SEG_BYTES as usize {
                    continue;
                }
            }
            i += 1;
            *counts.entry(run_case(&orig, &m, i % 5 == 0)).or_insert(0) += 1;
        }
    }
    eprintln!("last records: {counts:?}");
    assert!(counts.get("ok").copied().unwrap_or(0) > 500);
    assert!(counts.get("refused").copied().unwrap_or(0) > 100); // flips before the last record
}

#[test]
fn headers_and_segment_boundaries() {
    let orig = write_original(11);
    let mut n = 0;
    for seg in 0..orig.files.len() {
        for at in (0..HEADER_LEN).chain([SEG_BYTES as usize - 1]) {
            for m in [
                Mutation::Flip { seg, at, mask: 0x80 },
                Mutation::Truncate { seg, at },
                Mutation::ZeroFrom { seg, at },
            ] {
                run_case(&orig, &m, n % 3 == 0);
                n += 1;
            }
        }
        // a segment cut exactly at a record boundary
        run_case(&orig, &Mutation::Truncate { seg, at: slot_offset(10) as usize }, false);
    }
}

#[test]
fn random_cut_points() {
    let seed = seed("random_cut_points");
    let cases: usize =
        std::env::var("TICKWIRE_JOURNAL_CRASH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let orig = write_original(seed);
    let mut r = Rng(seed);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..cases {
        let seg = r.below(orig.files.len() as u64) as usize;
        let len = orig.files[seg].1.len();
        let at = r.below(len as u64) as usize;
        let m = match r.below(3) {
            0 => Mutation::Truncate { seg, at },
            1 => Mutation::ZeroFrom { seg, at },
            _ => Mutation::Flip { seg, at, mask: 1 << r.below(8) },
        };
        *counts.entry(run_case(&orig, &m, i % 10 == 0)).or_insert(0) += 1;
    }
    eprintln!("random: {counts:?}");
}
