//! The journal writer: segment files, preallocation, rotation, group commit.

use crate::format::{
    encode_records, records_per_segment, segment_file_name, slot_offset, SegmentHeader, HEADER_LEN,
};
use crate::lock::DirLock;
use crate::reader::{recover, Recovered, RecoverOptions};
use crate::{log, now_ns, JournalError, Result};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tickwire_core::{Command, Seq};

/// When a journaled command counts as durable (and so may have its effects released).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Released only after `fdatasync` returned for it (default). Survives power loss.
    #[default]
    Sync,
    /// Released once written to the OS (survives a process crash); `fdatasync` runs at least every
    /// `interval_ms`. A machine crash or power loss may lose up to that window of released
    /// commands.
    Async {
        /// Longest time between two `fdatasync` calls while there is unsynced data.
        interval_ms: u32,
    },
    /// Released once written to the OS, never synced (except by `close`). Benchmarks only.
    None,
}

impl Durability {
    /// Default `fdatasync` interval of `async`.
    pub const DEFAULT_ASYNC_MS: u32 = 5;
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Sync => write!(f, "sync"),
            Durability::Async { interval_ms } => write!(f, "async:{interval_ms}"),
            Durability::None => write!(f, "none"),
        }
    }
}

impl FromStr for Durability {
    type Err = JournalError;
    /// `sync`, `async` (5 ms), `async:<ms>`, `none`.
    fn from_str(s: &str) -> Result<Durability> {
        match s.trim() {
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            "async" => Ok(Durability::Async { interval_ms: Durability::DEFAULT_ASYNC_MS }),
            other => {
                let ms = other
                    .strip_prefix("async:")
                    .and_then(|m| m.trim_end_matches("ms").parse::<u32>().ok())
                    .filter(|&m| m > 0)
                    .ok_or_else(|| {
                        JournalError::Config(format!(
                            "durability {other:?}: expected sync, async, async:<ms> (ms > 0) or none"
                        ))
                    })?;
                Ok(Durability::Async { interval_ms: ms })
            }
        }
    }
}

/// Journal settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// Size each segment file is preallocated to; a segment holds
    /// `(segment_bytes - 64) / 88` records (at least one).
    pub segment_bytes: u64,
    /// When commands count as durable.
    pub durability: Durability,
    /// Most commands the [`crate::Journaler`] takes into one group commit.
    pub max_batch: usize,
}

impl JournalConfig {
    /// Default segment size: 64 MiB (about 760 000 commands).
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    /// Default group-commit batch limit.
    pub const DEFAULT_MAX_BATCH: usize = 4096;

    /// Defaults (`sync`, 64 MiB segments) for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            durability: Durability::Sync,
            max_batch: Self::DEFAULT_MAX_BATCH,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes < (HEADER_LEN + crate::format::RECORD_LEN) as u64 {
            return Err(JournalError::Config(format!("segment_bytes {} below one record", self.segment_bytes)));
        }
        if self.max_batch == 0 {
            return Err(JournalError::Config("max_batch must be > 0".into()));
        }
        Ok(())
    }
}

/// Counters of a writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records written.
    pub records: u64,
    /// Bytes written (records only).
    pub bytes: u64,
    /// `write` calls (group commits that had data).
    pub writes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Segments created.
    pub segments: u64,
}

struct Segment {
    file: File,
    path: PathBuf,
    /// Offset where the next buffered bytes go.
    write_off: u64,
    /// Records the segment holds (written and buffered).
    records: u64,
    /// Records it can hold.
    capacity: u64,
}

/// Appends commands to a journal directory. Single-threaded; one per directory (locked).
///
/// Usage: [`JournalWriter::append`] any number of commands (buffered, encoded), then
/// [`JournalWriter::commit`] writes them in one `write` and, per [`Durability`], `fdatasync`s,
/// returning the sequence up to which commands may be released.
pub struct JournalWriter {
    cfg: JournalConfig,
    _lock: DirLock,
    seg: Option<Segment>,
    buf: Vec<u8>,
    next_seq: Seq,
    written_seq: Seq,
    synced_seq: Seq,
    last_sync: Instant,
    poisoned: Option<String>,
    stats: WriterStats,
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, "create directory", e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, "fsync directory", e))
}

fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: fallocate on a file descriptor we own and keep open for the call; no memory is
        // passed to the kernel.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
            return Err(JournalError::io(path, "preallocate", err));
        }
    }
    // No fallocate here: extend the file (sparse, but the size is set once).
    file.set_len(len).map_err(|e| JournalError::io(path, "preallocate (set_len)", e))
}

impl JournalWriter {
    /// Recovers `cfg.dir` with `opts` (torn tail cut, damage refused) and opens a writer after its
    /// last command. The returned [`Recovered`] streams the surviving commands for replay.
    pub fn open_dir(cfg: JournalConfig, opts: RecoverOptions) -> Result<(JournalWriter, Recovered)> {
        cfg.validate()?;
        create_dir(&cfg.dir)?;
        let mut rec = recover(&cfg.dir, RecoverOptions { read_only: false, ..opts })?;
        let w = JournalWriter::open(cfg, &mut rec)?;
        Ok((w, rec))
    }

    /// Opens a writer that continues the journal `recovered` describes (from a non-read-only
    /// [`recover`] of `cfg.dir`, whose directory lock it takes over). It starts a new segment at
    /// `recovered.next_seq()`.
    pub fn open(cfg: JournalConfig, recovered: &mut Recovered) -> Result<JournalWriter> {
        cfg.validate()?;
        if recovered.dir != cfg.dir {
            return Err(JournalError::Config(format!(
                "recovered {} but configured {}",
                recovered.dir.display(),
                cfg.dir.display()
            )));
        }
        let lock = recovered.lock.take().ok_or_else(|| {
            JournalError::Config("open a writer after a non-read-only recover (which holds the lock)".into())
        })?;
        Self::start(cfg, lock, recovered.next_seq())
    }

    /// Opens a writer on a directory that holds no segment at or after `next_seq` (a new journal,
    /// or one continued after a snapshot). Does not verify older segments: use
    /// [`JournalWriter::open_dir`] unless the caller has.
    pub fn create(cfg: JournalConfig, next_seq: Seq) -> Result<JournalWriter> {
        cfg.validate()?;
        if next_seq == 0 {
            return Err(JournalError::Config("sequences start at 1".into()));
        }
        create_dir(&cfg.dir)?;
        let lock = DirLock::acquire(&cfg.dir)?;
        for (first, path) in crate::reader::list_segments(&cfg.dir)? {
            if first >= next_seq {
                return Err(JournalError::Config(format!(
                    "{} already holds sequences from {first} (>= {next_seq}): recover first",
                    path.display()
                )));
            }
        }
        Self::start(cfg, lock, next_seq)
    }

    fn start(cfg: JournalConfig, lock: DirLock, next_seq: Seq) -> Result<JournalWriter> {
        match cfg.durability {
            Durability::Sync => log(&format!("durability sync: commands released after fdatasync ({})", cfg.dir.display())),
            Durability::Async { interval_ms } => log(&format!(
                "durability async: fdatasync at least every {interval_ms} ms; a machine crash or power loss can lose \
                 up to {interval_ms} ms of released commands ({})",
                cfg.dir.display()
            )),
            Durability::None => log(&format!(
                "WARNING: durability none: the journal is never synced; a machine crash loses an unbounded amount of \
                 released commands. For benchmarks only! ({})",
                cfg.dir.display()
            )),
        }
        let mut w = JournalWriter {
            cfg,
            _lock: lock,
            seg: None,
            buf: Vec::new(),
            next_seq,
            written_seq: next_seq - 1,
            synced_seq: next_seq - 1,
            last_sync: Instant::now(),
            poisoned: None,
            stats: WriterStats::default(),
        };
        w.new_segment(next_seq)?;
        Ok(w)
    }

    fn new_segment(&mut self, first_seq: Seq) -> Result<()> {
        let dir = self.cfg.dir.clone();
        let path = dir.join(segment_file_name(first_seq));
        let capacity = records_per_segment(self.cfg.segment_bytes);
        let len = self.cfg.segment_bytes.max(slot_offset(capacity));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "create segment", e))?;
        preallocate(&file, &path, len)?;
        let mut hb = [0u8; HEADER_LEN];
        SegmentHeader { first_seq, created_ns: now_ns(), segment_bytes: len }.encode(&mut hb);
        file.write_all_at(&hb, 0).map_err(|e| JournalError::io(&path, "write segment header", e))?;
        // The header and the file's size are durable, and so is its directory entry, before any
        // record goes in: a torn header can only belong to a segment that holds no released
        // command.
        file.sync_all().map_err(|e| JournalError::io(&path, "fsync segment", e))?;
        sync_dir(&dir)?;
        self.stats.segments += 1;
        self.seg = Some(Segment { file, path, write_off: HEADER_LEN as u64, records: 0, capacity });
        Ok(())
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(JournalError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn poison<T>(&mut self, e: JournalError) -> Result<T> {
        self.poisoned = Some(e.to_string());
        Err(e)
    }

    /// Buffers `cmds` (which must continue the sequence: `cmds[0].seq == next_seq()`, +1 each).
    /// Nothing is written until [`JournalWriter::commit`], except when a segment fills: then its
    /// part is written and synced and a new segment starts.
    pub fn append(&mut self, cmds: &[Command]) -> Result<()> {
        self.check()?;
        for (i, c) in cmds.iter().enumerate() {
            let want = self.next_seq + i as u64;
            if c.seq != want {
                return Err(JournalError::SequenceGap { path: PathBuf::new(), after: PathBuf::new(), expected: want, found: c.seq });
            }
        }
        let ts = now_ns();
        let mut rest = cmds;
        while !rest.is_empty() {
            let seg = self.seg.as_mut().expect("open segment");
            let room = (seg.capacity - seg.records) as usize;
            if room == 0 {
                self.rotate(rest[0].seq)?;
                continue;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            encode_records(now, ts, &mut self.buf);
            seg.records += now.len() as u64;
            self.next_seq += now.len() as u64;
            rest = later;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self.seg.as_mut().expect("open segment");
        if let Err(e) = seg.file.write_all_at(&self.buf, seg.write_off) {
            let e = JournalError::io(seg.path.clone(), "write", e);
            return self.poison(e);
        }
        seg.write_off += self.buf.len() as u64;
        self.stats.writes += 1;
        self.stats.bytes += self.buf.len() as u64;
        self.stats.records += (self.buf.len() / crate::format::RECORD_LEN) as u64;
        self.buf.clear();
        self.written_seq = self.next_seq - 1;
        Ok(())
    }

    fn sync_now(&mut self) -> Result<()> {
        if self.synced_seq == self.written_seq {
            self.last_sync = Instant::now();
            return Ok(());
        }
        let seg = self.seg.as_ref().expect("open segment");
        if let Err(e) = seg.file.sync_data() {
            // After a failed fdatasync the page cache state is unknown: never retry, fail.
            let e = JournalError::io(seg.path.clone(), "fdatasync", e);
            return self.poison(e);
        }
        self.stats.syncs += 1;
        self.synced_seq = self.written_seq;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn rotate(&mut self, first_seq: Seq) -> Result<()> {
        self.write_buffer()?;
        // A full segment is made durable before the next one exists (except in `none`), so a
        // damaged record in any but the last segment is never a torn write.
        if self.cfg.durability != Durability::None {
            self.sync_now()?;
        }
        match self.new_segment(first_seq) {
            Ok(()) => Ok(()),
            Err(e) => self.poison(e),
        }
    }

    /// Writes everything appended since the last commit in one `write`, then `fdatasync`s
    /// (`sync`; `async` when the interval is due). Returns [`JournalWriter::durable_seq`].
    pub fn commit(&mut self) -> Result<Seq> {
        self.check()?;
        self.write_buffer()?;
        match self.cfg.durability {
            Durability::Sync => self.sync_now()?,
            Durability::Async { .. } => {
                if self.sync_due() {
                    self.sync_now()?
                }
            }
            Durability::None => {}
        }
        Ok(self.durable_seq())
    }

    /// `async`: whether unsynced data is older than the interval. Always false otherwise.
    pub fn sync_due(&self) -> bool {
        match self.cfg.durability {
            Durability::Async { interval_ms } => {
                self.synced_seq < self.written_seq
                    && self.last_sync.elapsed() >= Duration::from_millis(interval_ms as u64)
            }
            _ => false,
        }
    }

    /// How long until [`JournalWriter::sync_due`] becomes true (`None`: nothing pending).
    pub fn sync_due_in(&self) -> Option<Duration> {
        match self.cfg.durability {
            Durability::Async { interval_ms } if self.synced_seq < self.written_seq => {
                Some(Duration::from_millis(interval_ms as u64).saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Writes buffered commands and `fdatasync`s now, whatever the mode.
    pub fn sync(&mut self) -> Result<Seq> {
        self.check()?;
        self.write_buffer()?;
        self.sync_now()?;
        Ok(self.durable_seq())
    }

    /// The sequence up to which commands may be released: synced (`sync`) or written (`async`,
    /// `none`).
    pub fn durable_seq(&self) -> Seq {
        match self.cfg.durability {
            Durability::Sync => self.synced_seq,
            _ => self.written_seq,
        }
    }

    /// Sequence the next appended command must have.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Last sequence written to the OS.
    pub fn written_seq(&self) -> Seq {
        self.written_seq
    }

    /// Last sequence `fdatasync`ed.
    pub fn synced_seq(&self) -> Seq {
        self.synced_seq
    }

    /// The configuration.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Path of the segment being written.
    pub fn current_segment(&self) -> &Path {
        &self.seg.as_ref().expect("open segment").path
    }

    /// Clean shutdown: writes and syncs everything, trims the current segment's unused
    /// preallocated space. Returns the last durable sequence.
    pub fn close(mut self) -> Result<Seq> {
        let seq = self.sync()?;
        let seg = self.seg.as_ref().expect("open segment");
        seg.file.set_len(seg.write_off).map_err(|e| JournalError::io(seg.path.clone(), "trim segment", e))?;
        seg.file.sync_all().map_err(|e| JournalError::io(seg.path.clone(), "fsync segment", e))?;
        Ok(seq)
    }
}

impl fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalWriter")
            .field("dir", &self.cfg.dir)
            .field("durability", &self.cfg.durability)
            .field("next_seq", &self.next_seq)
            .field("written_seq", &self.written_seq)
            .field("synced_seq", &self.synced_seq)
            .finish()
    }
}
