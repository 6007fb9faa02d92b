//! Engine recovery: the newest snapshot that verifies, then the journal after it.

use crate::reader::{recover, Recovered, RecoverOptions};
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
    /// Time to replay the journal.
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
/// 2. [`recover`]s the journal (`opts.read_only` and `opts.truncate_at_corruption` as given;
///    `opts.from_seq` is ignored: it is set from the snapshot).
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
    let mut journal = recover(dir, RecoverOptions { from_seq: 0, ..opts })?;
    let has_records = !journal.segments.is_empty();
    let (j_first, j_last) = (journal.first_seq, journal.last_seq);

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

    let (mut engine, snapshot) = match restored {
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
    let start = engine.last_cmd_seq() + 1;
    if has_records {
        journal.from_seq = start.max(j_first);
    } else {
        // No segment at all (a first start, or everything retired behind the snapshot and the
        // last, empty, segment removed): the journal continues the engine.
        journal.first_seq = start;
        journal.last_seq = start - 1;
        journal.from_seq = start;
    }
    let t = Instant::now();
    let replayed = journal.replay_into(&mut engine, &mut CountingSink::default())?;
    let replay_time = t.elapsed();
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
