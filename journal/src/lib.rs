//! tickwire-journal: the command journal (event sourcing) and its recovery.
//!
//! Every command the engine accepts into its sequence is appended here before any of its effects
//! is released. The engine is deterministic, so replaying the journal rebuilds its state.
//!
//! - [`format`]: the on-disk format, sans-IO (header/record codecs, the scan of one segment).
//! - [`JournalWriter`]: segment files (preallocated, rotated), group commit
//!   ([`JournalWriter::append`] then [`JournalWriter::commit`]), the three [`Durability`] modes.
//! - [`Journaler`]: the agent thread that drains the inbound sequence from a [`CommandSource`]
//!   and publishes a [`DurableSeq`] barrier that the publishers of outbound events wait on.
//! - [`recover`]: validates a journal directory, cuts a torn tail, refuses a damaged middle, and
//!   returns a [`Recovered`] that streams the surviving commands.
//!
//! - [`recover_engine`]: the server's start: newest snapshot that verifies + the journal after it.
//! - [`Snapshotter`]: a shadow engine that follows the journal and writes verified snapshots
//!   (periodic, on request), then applies retention; [`snapshot`] is the file format.
//!
//! The format, the durability modes and the recovery procedure are documented in
//! `docs/journal.md`.
//!
//! # Server API (start, admin snapshot, stop)
//!
//! ```no_run
//! # use tickwire_core::{EngineConfig, pipeline::{Pipeline, PipelineConfig}};
//! # use tickwire_journal::*;
//! # use std::time::Duration;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (dir, ecfg) = (std::path::PathBuf::from("/var/lib/tickwire/journal"), EngineConfig::single_default());
//! // 1. Recover: newest verified snapshot + journal replay (torn tail cut, damage refused).
//! let (engine, mut report) = recover_engine(&dir, &ecfg, RecoverOptions::default())?;
//! let writer = JournalWriter::open(JournalConfig::new(&dir), &mut report.journal)?; // at report.next_seq()
//! // 2. The snapshotter's shadow engine: a copy of the recovered state, made before the engine
//! //    moves into the pipeline. It follows the journal files up to the durable sequence.
//! let shadow = copy_engine(&engine, &ecfg)?;
//! let mut pcfg = PipelineConfig::new(ecfg.clone());
//! pcfg.inbound_side_consumers = 1;
//! let (mut pipeline, consumers) = Pipeline::start_with_engine(engine, pcfg, 1)?;
//! let journaler = Journaler::spawn(writer, pipeline.take_inbound_side_consumers().pop().unwrap())?;
//! let snap_cfg = SnapshotConfig { every_commands: 5_000_000, keep: 2, ..SnapshotConfig::new(&dir, ecfg.clone()) };
//! let snapshotter = Snapshotter::spawn(snap_cfg, shadow, journaler.durable())?;
//! // 3. Admin command "snapshot": non-blocking request; poll or wait for the result.
//! let ticket = snapshotter.request();
//! let info = ticket.wait(Duration::from_secs(60))?; // or ticket.try_get() from an event loop
//! println!("{} at sequence {}", info.path.display(), info.last_cmd_seq);
//! // 4. Stop: pipeline, then journaler, then snapshotter (takes a last snapshot if `on_stop`).
//! pipeline.shutdown();
//! journaler.stop();
//! journaler.join()?;
//! snapshotter.stop();
//! snapshotter.join()?;
//! # drop(consumers); Ok(()) }
//! ```
//!
//! Snapshot files live in the journal directory (`snapshot-<seq>.tws`). Retention (keep N
//! snapshots; delete or archive segments they made unnecessary) is in [`SnapshotConfig`];
//! segments are kept by default.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub mod format;
mod journaler;
mod lock;
mod reader;
mod recovery;
pub mod snapshot;
mod snapshotter;
mod writer;

pub use format::DecodeError;
pub use journaler::{ChannelSource, CommandSource, DurableSeq, Journaler, JournalerStats, SourcePoll};
pub use reader::{list_segments, recover, Recovered, RecordIter, RecoverOptions, SegmentInfo};
pub use recovery::{recover_engine, RecoveryReport};
pub use snapshot::{SnapshotError, SnapshotInfo};
pub use snapshotter::{
    apply_retention, copy_engine, JournalTail, SegmentRetention, SnapshotConfig, SnapshotTicket, Snapshotter, SnapshotterStats,
};
pub use writer::{Durability, JournalConfig, JournalWriter, WriterStats};

use tickwire_core::Seq;

/// Everything that can go wrong opening, reading or writing a journal.
#[derive(Debug)]
pub enum JournalError {
    /// An I/O call failed.
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The journal directory (or file) does not exist.
    NotFound(PathBuf),
    /// A file that should be a segment is not one this build reads (bad magic, version, layout,
    /// or a name that does not match its header).
    Foreign {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A bad record (or header) that is not the torn tail of the journal: recovery refuses unless
    /// [`RecoverOptions::truncate_at_corruption`] is set.
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the bad record (or header) in the file.
        offset: u64,
        /// Why it does not decode.
        error: DecodeError,
        /// Offset of a later valid record that proves this is not a torn tail, if one was seen.
        valid_after: Option<u64>,
    },
    /// Sequences do not continue between segments (or a writer was handed an out-of-sequence
    /// command). `path` is empty for the writer case.
    SequenceGap {
        /// Segment file (or empty).
        path: PathBuf,
        /// The previous segment, which ends before `expected` (or empty).
        after: PathBuf,
        /// Sequence expected.
        expected: Seq,
        /// Sequence found.
        found: Seq,
    },
    /// The journal does not cover the sequence recovery was asked to start from.
    Missing {
        /// First sequence needed.
        from_seq: Seq,
        /// First sequence the journal has (0: none).
        first_seq: Seq,
        /// Last sequence the journal has (0: none).
        last_seq: Seq,
    },
    /// Another process holds the journal directory's lock.
    Locked(PathBuf),
    /// A bad configuration or argument.
    Config(String),
    /// The writer failed earlier (a failed write or fdatasync leaves the file state unknown,
    /// so it refuses further work) or the journaler stopped.
    Failed(String),
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> JournalError {
        JournalError::Io { path: path.into(), op, source }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
            JournalError::NotFound(p) => write!(f, "{}: no such file or directory", p.display()),
            JournalError::Foreign { path, detail } => {
                write!(f, "{}: not a tickwire journal segment: {detail}", path.display())
            }
            JournalError::Corrupt { path, offset, error, valid_after } => {
                write!(f, "{}: corrupt record at offset {offset}: {error}", path.display())?;
                if let Some(v) = valid_after {
                    write!(f, " (a valid record follows at offset {v}, so this is not a torn tail)")?;
                } else {
                    write!(f, " (later segments exist, so this is not a torn tail)")?;
                }
                write!(f, "; refusing to open: fix or restore the file, or truncate here explicitly")
            }
            JournalError::SequenceGap { path, expected, found, .. } if path.as_os_str().is_empty() => {
                write!(f, "command out of sequence: expected {expected}, got {found}")
            }
            JournalError::SequenceGap { path, after, expected, found } => write!(
                f,
                "{}: sequence gap: starts at {found}, but the previous segment {} ends before {expected}; refusing \
                 to open: restore the missing records, or truncate the journal there explicitly",
                path.display(),
                after.display()
            ),
            JournalError::Missing { from_seq, first_seq, last_seq } => write!(
                f,
                "journal does not cover sequence {from_seq} (it holds {first_seq}..={last_seq})"
            ),
            JournalError::Locked(p) => write!(f, "{}: journal is locked by another process", p.display()),
            JournalError::Config(s) => write!(f, "journal configuration: {s}"),
            JournalError::Failed(s) => write!(f, "journal failed: {s}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            JournalError::Corrupt { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Writes one line to stderr with the crate's prefix (the server has no logging crate yet).
pub(crate) fn log(msg: &str) {
    eprintln!("tickwire-journal: {msg}");
}
