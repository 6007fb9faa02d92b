//! The snapshotter: a shadow engine on its own thread follows the journal files up to the durable
//! sequence and snapshots *itself*, periodically or on request. The matcher is never involved:
//! it does not pause, copy or lock anything for a snapshot.
//!
//! ```text
//! inbound ring ─► journaler ─► segments (page cache) ─► snapshotter thread: shadow Engine
//!                     │                                   ├─ every N commands / T seconds / request()
//!                     └─► DurableSeq ──(read up to)──────►└─ snapshot → .tmp, fsync, rename, fsync dir
//!                                                            → read back + verify → retention
//! ```
//!
//! Retention (after each verified snapshot): the newest `keep` snapshots that verify are kept,
//! older snapshot files are removed; journal segments whose every record is at or before the
//! *oldest kept* snapshot (so every kept snapshot stays usable, and with `keep = 1` that is the
//! newest verified one) are deleted or archived per [`SegmentRetention`]. The segment being
//! written is never touched.

use crate::format::{decode_record, records_per_segment, segment_file_name, slot_offset, SegmentHeader, HEADER_LEN, RECORD_LEN};
use crate::journaler::DurableSeq;
use crate::reader::list_segments;
use crate::snapshot::{list_snapshots, read_snapshot, verify_written, write_snapshot, SnapshotInfo};
use crate::writer::sync_dir;
use crate::{log, JournalError, Result};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tickwire_core::event::CountingSink;
use tickwire_core::{Command, Engine, EngineConfig, Seq};

/// What happens to journal segments that a verified snapshot made unnecessary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SegmentRetention {
    /// Keep every segment (default: the journal stays a complete history, e.g. for audit or a
    /// replay from the start).
    #[default]
    Keep,
    /// Delete them.
    Delete,
    /// Move them into this directory (created if missing).
    Archive(PathBuf),
}

/// Snapshotter settings.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// The journal directory (segments are read from it, snapshots written into it).
    pub dir: PathBuf,
    /// The engine configuration (the shadow engine and restores use it).
    pub engine: EngineConfig,
    /// Snapshot after this many commands since the last snapshot (0: never by count).
    pub every_commands: u64,
    /// Snapshot when this long has passed since the last one and there are new commands.
    pub every: Option<Duration>,
    /// Verified snapshots to keep (at least 1).
    pub keep: usize,
    /// What to do with segments older than the oldest kept snapshot.
    pub segments: SegmentRetention,
    /// Take a last snapshot when stopped (after catching up with the durable sequence).
    pub on_stop: bool,
    /// Pin the snapshotter thread to this CPU (keep it off the matcher's core).
    pub cpu: Option<usize>,
    /// Nice value of the snapshotter thread (Linux; 0 leaves it): > 0 lets the matcher and the
    /// journaler win when they share a CPU with it.
    pub nice: i32,
}

impl SnapshotConfig {
    /// Defaults: every 10 M commands or 10 minutes, keep 2, segments kept, snapshot on stop,
    /// not pinned, nice 10.
    pub fn new(dir: impl Into<PathBuf>, engine: EngineConfig) -> SnapshotConfig {
        SnapshotConfig {
            dir: dir.into(),
            engine,
            every_commands: 10_000_000,
            every: Some(Duration::from_secs(600)),
            keep: 2,
            segments: SegmentRetention::Keep,
            on_stop: true,
            cpu: None,
            nice: 10,
        }
    }
}

/// Counters and the last result of a snapshotter.
#[derive(Clone, Debug, Default)]
pub struct SnapshotterStats {
    /// Last command applied to the shadow engine.
    pub applied_seq: Seq,
    /// Snapshots written and verified.
    pub snapshots: u64,
    /// Snapshot attempts that failed (each logged).
    pub failures: u64,
    /// The last verified snapshot.
    pub last: Option<SnapshotInfo>,
    /// Snapshot files removed by retention.
    pub snapshots_removed: u64,
    /// Segment files deleted or archived by retention.
    pub segments_retired: u64,
}

type Reply = Sender<std::result::Result<SnapshotInfo, String>>;

/// The answer to a [`Snapshotter::request`].
#[derive(Debug)]
pub struct SnapshotTicket {
    rx: Receiver<std::result::Result<SnapshotInfo, String>>,
}

impl SnapshotTicket {
    /// Waits up to `timeout` for the snapshot. Errors: it failed (reason), the snapshotter
    /// stopped, or the time ran out ([`JournalError::Failed`] in every case).
    pub fn wait(&self, timeout: Duration) -> Result<SnapshotInfo> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(JournalError::Failed),
            Err(RecvTimeoutError::Timeout) => Err(JournalError::Failed(format!("snapshot not done within {timeout:?}"))),
            Err(RecvTimeoutError::Disconnected) => Err(JournalError::Failed("snapshotter stopped".into())),
        }
    }

    /// The result if it is there (for an event loop): `None` while the snapshot is in progress.
    pub fn try_get(&self) -> Option<Result<SnapshotInfo>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r.map_err(JournalError::Failed)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(JournalError::Failed("snapshotter stopped".into()))),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    stats: Mutex<SnapshotterStats>,
}

/// The snapshotter thread and its handle. See the module documentation.
pub struct Snapshotter {
    shared: Arc<Shared>,
    requests: Sender<Reply>,
    handle: JoinHandle<Result<SnapshotterStats>>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter").field("stats", &self.stats()).finish()
    }
}

impl Snapshotter {
    /// Starts the snapshotter around `shadow`, a copy of the state the journal continues from
    /// (make it with [`copy_engine`] from the recovered engine before that goes into the
    /// pipeline). `durable` is the journaler's barrier: the shadow never reads past it, so it
    /// only sees records that are written (and, in `sync` mode, synced).
    pub fn spawn(cfg: SnapshotConfig, shadow: Engine, durable: Arc<DurableSeq>) -> Result<Snapshotter> {
        if cfg.keep == 0 {
            return Err(JournalError::Config("snapshot keep must be >= 1".into()));
        }
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), stats: Mutex::new(SnapshotterStats::default()) });
        shared.stats.lock().expect("stats").applied_seq = shadow.last_cmd_seq();
        let (tx, rx) = channel::<Reply>();
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("tw-snapshotter".into())
            .spawn(move || {
                lower_priority(cfg.cpu, cfg.nice);
                let mut w = Worker {
                    tail: JournalTail::new(cfg.dir.clone(), shadow.last_cmd_seq() + 1),
                    last_snap_seq: shadow.last_cmd_seq(),
                    last_snap_at: Instant::now(),
                    shadow,
                    cfg,
                    durable,
                    shared: sh,
                    requests: rx,
                    pending: Vec::new(),
                    verified: HashSet::new(),
                    retry_at: None,
                };
                let r = w.run();
                let err = match &r {
                    Err(e) => e.to_string(),
                    Ok(_) => "snapshotter stopped".into(),
                };
                for (_, reply) in w.pending.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
                r
            })
            .map_err(|e| JournalError::Failed(format!("cannot start the snapshotter thread: {e}")))?;
        Ok(Snapshotter { shared, requests: tx, handle })
    }

    /// Asks for a snapshot that includes at least every command durable now (the admin
    /// command). Non-blocking; the ticket gives the result.
    pub fn request(&self) -> SnapshotTicket {
        let (tx, rx) = channel();
        if self.requests.send(tx).is_ok() {
            self.handle.thread().unpark();
        }
        SnapshotTicket { rx }
    }

    /// Counters so far.
    pub fn stats(&self) -> SnapshotterStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks the thread to finish (with `on_stop`: after catching up with the durable sequence
    /// and taking a last snapshot). Stop the journaler first so that sequence is final.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
    }

    /// Waits for the thread's end. An error means the shadow could not follow the journal.
    pub fn join(self) -> Result<SnapshotterStats> {
        self.handle.join().map_err(|_| JournalError::Failed("snapshotter thread panicked".into()))?
    }
}

/// A copy of `engine` (through `Engine::snapshot` and `Engine::restore` under `cfg`): the shadow
/// a [`Snapshotter`] starts from. Allocates a whole engine; call it at start-up.
pub fn copy_engine(engine: &Engine, cfg: &EngineConfig) -> Result<Engine> {
    Engine::restore(cfg, &engine.snapshot()).map_err(|e| JournalError::Config(format!("shadow engine: {e}")))
}

/// Pins the calling thread to `cpu` and sets its nice value (each best effort, logged on failure).
fn lower_priority(cpu: Option<usize>, nice: i32) {
    #[cfg(target_os = "linux")]
    {
        if let Some(cpu) = cpu {
            // SAFETY: cpu_set_t is plain data (zero is the empty set); CPU_SET writes inside it
            // (cpu is bounds-checked against its size first); sched_setaffinity(0, ..) reads the
            // set for the calling thread only.
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
                    libc::CPU_SET(cpu, &mut set);
                }
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            if rc != 0 {
                log(&format!("snapshotter: cannot pin to cpu {cpu}: {}", std::io::Error::last_os_error()));
            }
        }
        if nice != 0 {
            // SAFETY: gettid has no arguments; setpriority on our own thread id passes no memory.
            let rc = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, nice)
            };
            if rc != 0 {
                log(&format!("snapshotter: cannot set nice {nice}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cpu, nice);
}

struct Worker {
    cfg: SnapshotConfig,
    shadow: Engine,
    tail: JournalTail,
    durable: Arc<DurableSeq>,
    shared: Arc<Shared>,
    requests: Receiver<Reply>,
    /// (durable sequence when asked, reply).
    pending: Vec<(Seq, Reply)>,
    last_snap_seq: Seq,
    last_snap_at: Instant,
    /// Snapshot files verified by this process.
    verified: HashSet<PathBuf>,
    /// After a failed snapshot, periodic ones wait until then (requests do not).
    retry_at: Option<Instant>,
}

const CHUNK: usize = 4096;
/// Wait before a periodic snapshot is tried again after a failure (full disk...).
const RETRY_AFTER: Duration = Duration::from_secs(5);

impl Worker {
    fn run(&mut self) -> Result<SnapshotterStats> {
        let mut buf: Vec<Command> = Vec::with_capacity(CHUNK);
        let mut sink = CountingSink::default();
        loop {
            while let Ok(reply) = self.requests.try_recv() {
                self.pending.push((self.durable.get(), reply));
            }
            let stopping = self.shared.stop.load(Ordering::Acquire);
            let target = self.durable.get();
            let applied = self.shadow.last_cmd_seq();
            if applied < target {
                // Periodic snapshots land exactly every `every_commands` commands.
                let upto = match self.cfg.every_commands {
                    0 => target,
                    n => target.min(self.last_snap_seq + n).max(applied + 1),
                };
                buf.clear();
                self.tail.read(upto, CHUNK, &mut buf)?;
                for c in &buf {
                    self.shadow.handle(c, &mut sink);
                }
                self.shared.stats.lock().expect("stats").applied_seq = self.shadow.last_cmd_seq();
            }
            let applied = self.shadow.last_cmd_seq();
            let since = applied - self.last_snap_seq;
            let asked = self.pending.iter().any(|(s, _)| *s <= applied);
            let due = (self.cfg.every_commands > 0 && since >= self.cfg.every_commands)
                || (since > 0 && self.cfg.every.is_some_and(|t| self.last_snap_at.elapsed() >= t));
            let due = due && self.retry_at.is_none_or(|t| Instant::now() >= t);
            if asked || due {
                self.snapshot();
                continue;
            }
            if stopping {
                if applied < self.durable.get() {
                    continue;
                }
                if self.cfg.on_stop && since > 0 {
                    self.snapshot();
                }
                return Ok(self.stats());
            }
            if applied >= target {
                std::thread::park_timeout(Duration::from_micros(500));
            }
        }
    }

    fn stats(&self) -> SnapshotterStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Snapshots the shadow, verifies, applies retention, answers requests. Failures are
    /// logged and reported to the requesters; the shadow carries on.
    fn snapshot(&mut self) {
        let seq = self.shadow.last_cmd_seq();
        let r = self.snapshot_inner();
        self.last_snap_at = Instant::now();
        let mut st = self.shared.stats.lock().expect("stats");
        let reply = match r {
            Ok((info, retired)) => {
                self.last_snap_seq = seq;
                st.snapshots += 1;
                st.snapshots_removed += retired.0;
                st.segments_retired += retired.1;
                st.last = Some(info.clone());
                self.retry_at = None;
                Ok(info)
            }
            Err(e) => {
                st.failures += 1;
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                let msg = format!("snapshot at sequence {seq} failed: {e}");
                log(&msg);
                Err(msg)
            }
        };
        drop(st);
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= seq || reply.is_err() {
                let (_, tx) = self.pending.swap_remove(i);
                let _ = tx.send(reply.clone());
            } else {
                i += 1;
            }
        }
    }

    fn snapshot_inner(&mut self) -> Result<(SnapshotInfo, (u64, u64))> {
        let t = Instant::now();
        let snap = self.shadow.snapshot();
        let export = t.elapsed();
        let mut info = write_snapshot(&self.cfg.dir, &snap)?;
        info.encode_time += export;
        verify_written(&mut info, &snap)?;
        drop(snap);
        self.verified.insert(info.path.clone());
        log(&format!(
            "snapshot {}: sequence {}, {} orders, {} bytes, encode {:?}, write {:?}, verify {:?}",
            info.path.display(),
            info.last_cmd_seq,
            info.orders,
            info.bytes,
            info.encode_time,
            info.write_time,
            info.verify_time
        ));
        let retired = apply_retention(&self.cfg, &mut self.verified)?;
        Ok((info, retired))
    }
}

/// Retention after a verified snapshot (see the module documentation). `verified`: snapshot
/// files already verified (others are read and checked now; those that verify are added).
/// Returns (snapshot files removed, segments deleted or archived).
pub fn apply_retention(cfg: &SnapshotConfig, verified: &mut HashSet<PathBuf>) -> Result<(u64, u64)> {
    let dir = &cfg.dir;
    let snaps = list_snapshots(dir)?;
    // Newest first: collect `keep` snapshots that verify.
    let mut kept: Vec<(Seq, PathBuf)> = Vec::new();
    let mut idx_oldest_kept = None;
    for (i, (seq, path)) in snaps.iter().enumerate().rev() {
        if kept.len() == cfg.keep.max(1) {
            break;
        }
        if !verified.contains(path) {
            match read_snapshot(path) {
                Ok(_) => {
                    verified.insert(path.clone());
                }
                Err(e) => {
                    log(&format!("{}: snapshot does not verify ({e}); not counted as kept", path.display()));
                    continue;
                }
            }
        }
        kept.push((*seq, path.clone()));
        idx_oldest_kept = Some(i);
    }
    let (Some(oldest_idx), Some((cutoff, _))) = (idx_oldest_kept, kept.last().cloned()) else {
        return Ok((0, 0));
    };
    let mut removed_snaps = 0;
    for (_, path) in &snaps[..oldest_idx] {
        std::fs::remove_file(path).map_err(|e| JournalError::io(path, "remove snapshot", e))?;
        verified.remove(path);
        log(&format!("{}: older than the {} kept snapshot(s): removed", path.display(), kept.len()));
        removed_snaps += 1;
    }
    let mut retired = 0;
    if cfg.segments != SegmentRetention::Keep {
        let segs = list_segments(dir)?;
        // A segment holds only sequences before its successor's first: it is not needed when
        // that is <= cutoff + 1. The last segment (being written) has no successor.
        for w in segs.windows(2) {
            let (first, path) = &w[0];
            let next_first = w[1].0;
            if next_first > cutoff + 1 {
                break;
            }
            match &cfg.segments {
                SegmentRetention::Delete => {
                    std::fs::remove_file(path).map_err(|e| JournalError::io(path, "remove segment", e))?;
                    log(&format!(
                        "{}: sequences {first}..{} all before snapshot {cutoff}: deleted",
                        path.display(),
                        next_first - 1
                    ));
                }
                SegmentRetention::Archive(to) => {
                    archive(path, to)?;
                    log(&format!(
                        "{}: sequences {first}..{} all before snapshot {cutoff}: archived to {}",
                        path.display(),
                        next_first - 1,
                        to.display()
                    ));
                }
                SegmentRetention::Keep => unreachable!(),
            }
            retired += 1;
        }
    }
    if removed_snaps + retired > 0 {
        sync_dir(dir)?;
    }
    Ok((removed_snaps, retired))
}

fn archive(path: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| JournalError::io(to, "create archive directory", e))?;
    let dest = to.join(path.file_name().expect("segment file name"));
    if std::fs::rename(path, &dest).is_err() {
        // Another file system: copy, make the copy durable, then remove the original.
        std::fs::copy(path, &dest).map_err(|e| JournalError::io(&dest, "copy segment to archive", e))?;
        File::open(&dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| JournalError::io(&dest, "fsync archived segment", e))?;
        sync_dir(to)?;
        std::fs::remove_file(path).map_err(|e| JournalError::io(path, "remove archived segment", e))?;
    } else {
        sync_dir(to)?;
    }
    Ok(())
}

struct TailSegment {
    file: File,
    path: PathBuf,
    first: Seq,
    capacity: u64,
}

/// Reads the records of a journal that is being written, in sequence order, up to a bound the
/// caller knows is written (the durable sequence). Follows segment rotation: when the record
/// `next` is not in the current segment, it is the first of a segment named after it.
pub struct JournalTail {
    dir: PathBuf,
    seg: Option<TailSegment>,
    next: Seq,
    buf: Vec<u8>,
}

impl JournalTail {
    /// A tail that will read from sequence `next`.
    pub fn new(dir: PathBuf, next: Seq) -> JournalTail {
        JournalTail { dir, seg: None, next, buf: Vec::new() }
    }

    /// Next sequence to read.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    fn open(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| JournalError::io(&path, "open segment", e))?;
        let mut hb = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hb, 0).map_err(|e| JournalError::io(&path, "read segment header", e))?;
        let h = SegmentHeader::decode(&hb)
            .map_err(|e| JournalError::Corrupt { path: path.clone(), offset: 0, error: e, valid_after: None })?;
        self.seg = Some(TailSegment { file, path, first: h.first_seq, capacity: records_per_segment(h.segment_bytes) });
        Ok(())
    }

    /// Finds the segment holding `next` when none is open: the last one starting at or before it.
    fn locate(&mut self) -> Result<()> {
        let segs = list_segments(&self.dir)?;
        match segs.iter().rev().find(|(first, _)| *first <= self.next) {
            Some((_, p)) => self.open(p.clone()),
            None => Err(JournalError::Missing {
                from_seq: self.next,
                first_seq: segs.first().map_or(0, |s| s.0),
                last_seq: 0,
            }),
        }
    }

    /// Appends the commands `next ..= min(to, next + max - 1)` to `out`. Every one of them must
    /// be in the journal (`to` at most the durable sequence): a missing or bad record is an error.
    pub fn read(&mut self, to: Seq, max: usize, out: &mut Vec<Command>) -> Result<usize> {
        let mut n = 0;
        while self.next <= to && n < max {
            if self.seg.is_none() {
                self.locate()?;
            }
            let seg = self.seg.as_ref().expect("segment");
            let in_seg = self.next >= seg.first && self.next < seg.first + seg.capacity;
            let got = if in_seg { self.read_some(to, max - n, out)? } else { 0 };
            if got == 0 {
                // Not in this segment (full, or closed early by a restart): a new one starts here.
                let path = self.dir.join(segment_file_name(self.next));
                if path.exists() && self.seg.as_ref().is_some_and(|s| s.path != path) {
                    self.open(path)?;
                    continue;
                }
                let seg = self.seg.as_ref().expect("segment");
                return Err(JournalError::Failed(format!(
                    "{}: command {} is durable but not readable in the journal (segment from {})",
                    seg.path.display(),
                    self.next,
                    seg.first
                )));
            }
            n += got;
        }
        Ok(n)
    }

    fn read_some(&mut self, to: Seq, max: usize, out: &mut Vec<Command>) -> Result<usize> {
        let seg = self.seg.as_ref().expect("segment");
        let slot = self.next - seg.first;
        let want = (to - self.next + 1).min(max as u64).min(seg.capacity - slot) as usize;
        self.buf.resize(want * RECORD_LEN, 0);
        let off = slot_offset(slot);
        // A short read (the file was trimmed) leaves zeros: the record is elsewhere.
        let mut have = 0;
        while have < self.buf.len() {
            match seg.file.read_at(&mut self.buf[have..], off + have as u64) {
                Ok(0) => break,
                Ok(k) => have += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(JournalError::io(seg.path.clone(), "read", e)),
            }
        }
        let mut n = 0;
        for rec in self.buf[..have - have % RECORD_LEN].chunks_exact(RECORD_LEN) {
            match decode_record(rec) {
                Ok(r) if r.seq == self.next => {
                    out.push(r.cmd);
                    self.next += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        Ok(n)
    }
}
