//! Engine recovery: the newest snapshot that verifies, then the journal after it.

use crate::reader::{plan, recover_locked, Fallback, Recovered, RecoverOptions};
use crate::snapshot::{list_snapshots, read_snapshot, remove_temp_snapshots};
use crate::{log, JournalError, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tickwire_core::event::CountingSink;
use tickwire_core::{Engine, EngineConfig, Seq};

/// What [`recover_engine`] did.
#[derive(Debug)]
pub struct RecoveryReport {
    /// The validated journal (torn tail cut). Unless recovery was read-only it holds the
    /// directory lock: pass it to [`crate::JournalWriter::open`], which continues at
    /// `journal.next_seq()` (= the engine's `last_cmd_seq() + 1`).
    pub journal: Recovered,
    /// The snapshot the engine was restored from (`None`: replayed from the first command).
    pub snapshot: Option<(PathBuf, Seq)>,
    /// Snapshots that were newer than the one used (or all of them) and could not be used, with
    /// the reason (each also logged).
    pub skipped: Vec<(PathBuf, String)>,
    /// Unfinished snapshot files (`.tmp`, a crash before the rename) removed.
    pub removed_temp: Vec<PathBuf>,
    /// Commands replayed from the journal after the snapshot.
    pub replayed: u64,
    /// Time to find, read, verify and restore the snapshot.
    pub snapshot_time: Duration,
    /// Time to replay the journal (validating its records as they are read, unless the journal
    /// needed the validating pre-pass).
    pub replay_time: Duration,
    /// `state_hash()` of the recovered engine.
    pub state_hash: u64,
}

impl RecoveryReport {
    /// Sequence the next command gets (the pipeline's and the journal writer's start).
    pub fn next_seq(&self) -> Seq {
        self.journal.next_seq()
    }
}

/// Rebuilds the engine from the journal directory `dir` (see the crate documentation).
///
/// 1. Unless `opts.read_only`: creates `dir` if missing (a first start) and removes unfinished
///    snapshot files (`*.tws.tmp`).
/// 2. Recovers the journal as [`crate::recover`] does (`opts.read_only` and
///    `opts.truncate_at_corruption` as given; `opts.from_seq` is ignored: it is set from the
///    snapshot). In one pass: the outcome is predicted from the segment headers, file names and
///    the end of the last segment; every record is then validated (CRC, sequence) as it is
///    replayed (step 5), and nothing on disk changes (torn tail cut, trim) until all of them
///    have. If any record does not validate, or the journal is not in the regular case (a torn
///    header, a gap, ...), the partly replayed engine is discarded and the validating pre-pass of
///    `recover` runs, then the replay: the verdict (refusal with file and offset, torn tail, cut)
///    is the same as `recover`'s, always.
/// 3. Tries the snapshots newest first. One is used if it verifies (header and payload CRCs,
///    archive, name), the journal continues it (it holds the command after the snapshot, or
///    holds nothing), and `Engine::restore` accepts it under `cfg` (which re-checks the state
///    hash). Each one skipped is logged with its reason and listed in the report.
/// 4. Without a usable snapshot: a fresh engine, which needs the journal from sequence 1
///    ([`JournalError::Missing`] otherwise, e.g. segments retired behind snapshots that are all
///    damaged).
/// 5. Replays the journal after the snapshot. The engine's `last_cmd_seq()` then equals the
///    journal's last sequence: the pipeline and the writer continue without a gap.
pub fn recover_engine(dir: &Path, cfg: &EngineConfig, opts: RecoverOptions) -> Result<(Engine, RecoveryReport)> {
    let mut removed_temp = Vec::new();
    if !opts.read_only {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, "create directory", e))?;
        removed_temp = remove_temp_snapshots(dir)?;
    }
    let jopts = RecoverOptions { from_seq: 0, ..opts };
    // Single pass: predict the journal's outcome from its headers and the end of its last
    // segment, then validate every record while replaying it. Damage anywhere (or anything but
    // the regular case) voids the prediction: the partly replayed engine is discarded and the
    // validating pre-pass of `recover` decides, exactly as it always has.
    let lock = match plan(dir, jopts)? {
        Err(Fallback(lock)) => lock,
        Ok(mut p) => {
            let has_records = !p.rec.segments.is_empty();
            match restore(dir, cfg, has_records, p.rec.first_seq, p.rec.last_seq) {
                // An error here (no usable snapshot and a journal that does not start at 1) is
                // reported by the validating path, after `recover` (which may refuse first).
                Err(_) => p.into_fallback().0,
                Ok(start) => {
                    continue_engine(&mut p.rec, &start.engine, has_records);
                    let mut engine = start.engine;
                    let t = Instant::now();
                    match p.replay_into(&mut engine, &mut CountingSink::default()) {
                        Some(replayed) => {
                            let replay_time = t.elapsed();
                            let journal = p.commit()?;
                            return finish(engine, journal, start.snapshot, start.skipped, removed_temp, replayed, start.snapshot_time, replay_time);
                        }
                        None => {
                            drop(engine);
                            log("a journal record does not validate: the partly replayed engine is discarded; \
                                 validating the whole journal before replaying it");
                            p.into_fallback().0
                        }
                    }
                }
            }
        }
    };
    let journal = recover_locked(dir, jopts, lock)?;
    validated(dir, cfg, journal, removed_temp)
}

/// The two-pass path: `journal` validated by [`recover_locked`], then replayed.
fn validated(dir: &Path, cfg: &EngineConfig, mut journal: Recovered, removed_temp: Vec<PathBuf>) -> Result<(Engine, RecoveryReport)> {
    let has_records = !journal.segments.is_empty();
    let start = restore(dir, cfg, has_records, journal.first_seq, journal.last_seq)?;
    continue_engine(&mut journal, &start.engine, has_records);
    let mut engine = start.engine;
    let t = Instant::now();
    let replayed = journal.replay_into(&mut engine, &mut CountingSink::default())?;
    let replay_time = t.elapsed();
    finish(engine, journal, start.snapshot, start.skipped, removed_temp, replayed, start.snapshot_time, replay_time)
}

/// The engine recovery starts from: a snapshot, or empty.
struct Start {
    engine: Engine,
    snapshot: Option<(PathBuf, Seq)>,
    skipped: Vec<(PathBuf, String)>,
    snapshot_time: Duration,
}

/// Steps 3 and 4: the newest usable snapshot for a journal holding `j_first..=j_last`
/// (`has_records`), else an empty engine (which needs the journal from sequence 1).
fn restore(dir: &Path, cfg: &EngineConfig, has_records: bool, j_first: Seq, j_last: Seq) -> Result<Start> {
    let t = Instant::now();
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    let mut restored: Option<(Engine, PathBuf, Seq)> = None;
    for (seq, path) in list_snapshots(dir)?.into_iter().rev() {
        let reason = match read_snapshot(&path) {
            Err(e) => format!("does not verify: {e}"),
            Ok((h, snap)) => {
                let s = h.last_cmd_seq;
                if has_records && (s + 1 < j_first || s > j_last) {
                    format!(
                        "the journal holds sequences {j_first}..={j_last}, the snapshot needs it to continue from {}",
                        s + 1
                    )
                } else {
                    match Engine::restore(cfg, &snap) {
                        Ok(e) => {
                            restored = Some((e, path.clone(), seq));
                            break;
                        }
                        Err(e) => format!("cannot be restored: {e}"),
                    }
                }
            }
        };
        log(&format!("{}: snapshot skipped: {reason}", path.display()));
        skipped.push((path, reason));
    }
    let snapshot_time = t.elapsed();

    let (engine, snapshot) = match restored {
        Some((e, path, seq)) => {
            log(&format!("restored snapshot {} (sequence {seq}) in {snapshot_time:?}", path.display()));
            (e, Some((path, seq)))
        }
        None => {
            if has_records && j_first > 1 {
                log("no usable snapshot, and the journal does not start at sequence 1");
                return Err(JournalError::Missing { from_seq: 1, first_seq: j_first, last_seq: j_last });
            }
            (Engine::new(cfg).map_err(|e| JournalError::Config(e.to_string()))?, None)
        }
    };
    Ok(Start { engine, snapshot, skipped, snapshot_time })
}

/// Sets where the replay starts: after the engine's last command.
fn continue_engine(journal: &mut Recovered, engine: &Engine, has_records: bool) {
    let start = engine.last_cmd_seq() + 1;
    if has_records {
        journal.from_seq = start.max(journal.first_seq);
    } else {
        // No segment at all (a first start, or everything retired behind the snapshot and the
        // last, empty, segment removed): the journal continues the engine.
        journal.first_seq = start;
        journal.last_seq = start - 1;
        journal.from_seq = start;
    }
}

/// Step 5's check, the log line and the report.
#[allow(clippy::too_many_arguments)]
fn finish(
    engine: Engine,
    journal: Recovered,
    snapshot: Option<(PathBuf, Seq)>,
    skipped: Vec<(PathBuf, String)>,
    removed_temp: Vec<PathBuf>,
    replayed: u64,
    snapshot_time: Duration,
    replay_time: Duration,
) -> Result<(Engine, RecoveryReport)> {
    if engine.last_cmd_seq() != journal.last_seq {
        return Err(JournalError::Failed(format!(
            "after replay the engine is at sequence {} but the journal ends at {}",
            engine.last_cmd_seq(),
            journal.last_seq
        )));
    }
    let state_hash = engine.state_hash();
    log(&format!(
        "recovered: {} + {replayed} journaled commands replayed in {replay_time:?}; next sequence {}, state hash {state_hash:#018x}",
        match &snapshot {
            Some((p, s)) => format!("snapshot {} at {s}", p.display()),
            None => "no snapshot".into(),
        },
        journal.next_seq()
    ));
    Ok((
        engine,
        RecoveryReport { journal, snapshot, skipped, removed_temp, replayed, snapshot_time, replay_time, state_hash },
    ))
}
