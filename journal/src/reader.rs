//! Recovery: validate a journal directory, cut a torn tail, refuse damage before it, and stream
//! the surviving records.

use crate::format::{
    decode_record, parse_segment_file_name, scan_segment, slot_offset, DecodeError, Record, SegmentHeader,
    HEADER_LEN, RECORD_LEN, SEGMENT_EXT, SEGMENT_MAGIC,
};
use crate::lock::DirLock;
use crate::writer::sync_dir;
use crate::{log, JournalError, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tickwire_core::{Command, Engine, EventSink, Seq};

/// How [`recover`] treats the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoverOptions {
    /// Change nothing on disk (inspection tools): a torn tail is reported (and excluded from the
    /// records) but not cut, and the directory is not locked.
    pub read_only: bool,
    /// A bad record (or header, or sequence gap) before the tail is normally refused with
    /// [`JournalError::Corrupt`]. With this set, the journal is cut there instead: that record and
    /// everything after it, later segments included, are dropped (and logged). Operator's choice.
    pub truncate_at_corruption: bool,
    /// First sequence to replay (0 or 1: from the start). The extension point for snapshots: a
    /// state restored from a snapshot of sequences `..from_seq` replays the journal from
    /// `from_seq`; recovery checks that the journal covers it.
    pub from_seq: Seq,
}

/// One segment that survived recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// Valid records it holds (from `header.first_seq`).
    pub records: u64,
    /// Offset just past its last valid record.
    pub data_end: u64,
    /// File length as found (before any cut or trim).
    pub file_len: u64,
    /// Journal time of its first and last records.
    pub ts_range: Option<(u64, u64)>,
}

impl SegmentInfo {
    /// Sequence of its first record.
    pub fn first_seq(&self) -> Seq {
        self.header.first_seq
    }

    /// Sequence of its last record, if it has any.
    pub fn last_seq(&self) -> Option<Seq> {
        (self.records > 0).then(|| self.header.first_seq + self.records - 1)
    }
}

/// The outcome of [`recover`].
#[derive(Debug)]
pub struct Recovered {
    /// The journal directory.
    pub dir: PathBuf,
    /// Surviving segments, in sequence order.
    pub segments: Vec<SegmentInfo>,
    /// First sequence the journal holds (equals `last_seq + 1` when it holds none).
    pub first_seq: Seq,
    /// Sequence of the last surviving command (`first_seq - 1` when none).
    pub last_seq: Seq,
    /// First sequence [`Recovered::records`] and friends yield (from the options).
    pub from_seq: Seq,
    /// Written bytes dropped: torn tail, and with `truncate_at_corruption` everything cut.
    pub truncated_bytes: u64,
    /// Segment files removed (torn creation, empty last segment, cut by the option).
    pub removed: Vec<PathBuf>,
    /// What recovery did or, read-only, would do (each also logged to stderr).
    pub notes: Vec<String>,
    pub(crate) lock: Option<DirLock>,
}

impl Recovered {
    /// Sequence the next command will get.
    pub fn next_seq(&self) -> Seq {
        self.last_seq + 1
    }

    /// Number of surviving commands.
    pub fn len(&self) -> u64 {
        self.last_seq + 1 - self.first_seq
    }

    /// Whether the journal holds no command.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Streams the records from `from_seq` to the end.
    pub fn records(&self) -> RecordIter {
        self.records_range(self.from_seq, Seq::MAX)
    }

    /// Streams the records with `from <= seq <= to`.
    pub fn records_range(&self, from: Seq, to: Seq) -> RecordIter {
        RecordIter {
            segments: self.segments.clone(),
            idx: 0,
            file: None,
            off: 0,
            end: 0,
            buf: Vec::new(),
            pos: 0,
            expected: 0,
            from: from.max(1),
            to,
            done: false,
        }
    }

    /// Streams the commands from `from_seq`.
    pub fn commands(&self) -> impl Iterator<Item = Result<Command>> {
        self.records().map(|r| r.map(|r| r.cmd))
    }

    /// Every command from `from_seq`, in memory.
    pub fn read_all(&self) -> Result<Vec<Command>> {
        self.commands().collect()
    }

    /// Feeds every command from `from_seq` to `engine`, events to `sink`. Returns the number of
    /// commands replayed.
    ///
    /// Each record is read and CRC-checked again as it is fed. If that fails (an I/O error, or a
    /// file changed since [`recover`]), the error is returned **after the commands before it were
    /// applied**: `engine` then holds a prefix of the journal and must be discarded.
    /// [`crate::recover_engine`] (the server's start) does not use this: it validates and replays
    /// in one pass.
    pub fn replay_into<S: EventSink + ?Sized>(&self, engine: &mut Engine, sink: &mut S) -> Result<u64> {
        let mut n = 0;
        for c in self.commands() {
            engine.handle(&c?, sink);
            n += 1;
        }
        Ok(n)
    }
}

/// Segment files of `dir`, sorted by first sequence (from their names). Other files are
/// ignored; a `.twj` file whose name is not a segment name is an error.
pub fn list_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(JournalError::NotFound(dir.to_path_buf())),
        Err(e) => return Err(JournalError::io(dir, "read directory", e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io(dir, "read directory", e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(&format!(".{SEGMENT_EXT}")) {
            continue;
        }
        match parse_segment_file_name(name) {
            Some(seq) => out.push((seq, ent.path())),
            None => {
                return Err(JournalError::Foreign {
                    path: ent.path(),
                    detail: "file name is not <first sequence, 20 digits>.twj".into(),
                })
            }
        }
    }
    out.sort();
    Ok(out)
}

fn written_len(bytes: &[u8]) -> u64 {
    bytes.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1) as u64
}

/// Whether the first 8 bytes are a prefix of the magic followed by zeros (a torn or zeroed
/// header, not another format).
fn magic_then_zeros(bytes: &[u8]) -> bool {
    let m = &bytes[..bytes.len().min(8)];
    let same = m.iter().zip(SEGMENT_MAGIC.iter()).take_while(|(a, b)| a == b).count();
    m[same..].iter().all(|&b| b == 0)
}

/// First slot offset (after the header) holding a CRC-valid record.
fn any_valid_record(bytes: &[u8]) -> Option<u64> {
    let mut o = HEADER_LEN;
    while o + RECORD_LEN <= bytes.len() {
        if decode_record(&bytes[o..]).is_ok() {
            return Some(o as u64);
        }
        o += RECORD_LEN;
    }
    None
}

struct Ctx<'a> {
    opts: RecoverOptions,
    notes: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn note(&mut self, msg: String) {
        let msg = note_text(self.opts, msg);
        log(&msg);
        self.notes.push(msg);
    }
}

/// A note as recorded in [`Recovered::notes`] (and logged).
fn note_text(opts: RecoverOptions, msg: String) -> String {
    if opts.read_only {
        format!("(read-only, not applied) {msg}")
    } else {
        msg
    }
}

/// "what is left" part of the truncation notes.
fn last_left(last_seq: Option<Seq>) -> String {
    match last_seq {
        Some(s) => format!("last sequence {s}"),
        None => "no records left in it".to_string(),
    }
}

fn torn_tail_note(path: &Path, offset: u64, error: DecodeError, dropped: u64, last_seq: Option<Seq>) -> String {
    format!(
        "{}: torn tail at offset {offset} ({error}): truncated to the last whole record, {dropped} bytes dropped, {}",
        path.display(),
        last_left(last_seq)
    )
}

fn set_len(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new().write(true).open(path).map_err(|e| JournalError::io(path, "open", e))?;
    f.set_len(len).map_err(|e| JournalError::io(path, "truncate", e))?;
    f.sync_all().map_err(|e| JournalError::io(path, "fsync", e))
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| JournalError::io(path, "remove", e))
}

/// Validates the journal in `dir` and prepares its replay.
///
/// Procedure (details in docs/journal.md): segments are read in sequence order; each header must
/// decode, match its file name and continue the previous segment's sequence; records must be
/// valid and consecutive. At the first bad slot:
/// - in the last segment, with no valid record anywhere after it: a **torn tail** (a crash
///   mid-write). It is cut to the last whole record and the dropped bytes are logged;
/// - anywhere else: [`JournalError::Corrupt`] (or [`JournalError::SequenceGap`]) naming the file
///   and offset, unless [`RecoverOptions::truncate_at_corruption`] is set.
///
/// A last segment whose header is torn (crash while creating it) and that holds no valid record
/// is removed; so is an empty last segment. Unless `read_only`, the directory stays locked by
/// the returned [`Recovered`] until a [`crate::JournalWriter::open`] takes it over (or it drops).
pub fn recover(dir: &Path, opts: RecoverOptions) -> Result<Recovered> {
    let lock = check_and_lock(dir, opts)?;
    recover_locked(dir, opts, lock)
}

/// The checks [`recover`] starts with, then the directory lock (unless read-only).
fn check_and_lock(dir: &Path, opts: RecoverOptions) -> Result<Option<DirLock>> {
    if !dir.exists() {
        return Err(JournalError::NotFound(dir.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(JournalError::Config(format!("{} is not a directory", dir.display())));
    }
    Ok(if opts.read_only { None } else { Some(DirLock::acquire(dir)?) })
}

/// [`recover`] once the directory is locked (`lock`: `None` when read-only).
pub(crate) fn recover_locked(dir: &Path, opts: RecoverOptions, lock: Option<DirLock>) -> Result<Recovered> {
    let files = list_segments(dir)?;
    let mut notes = Vec::new();
    let mut ctx = Ctx { opts, notes: &mut notes };
    let mut segments: Vec<SegmentInfo> = Vec::new();
    let mut removed = Vec::new();
    let mut truncated_bytes = 0u64;
    let mut expected: Option<Seq> = None;
    let mut first_seq: Option<Seq> = None;
    let mut changed = false;
    let n = files.len();
    // Index from which every file is dropped (truncate_at_corruption), if any.
    let mut cut_from: Option<usize> = None;

    for (i, (name_seq, path)) in files.iter().enumerate() {
        let is_last = i + 1 == n;
        let bytes = std::fs::read(path).map_err(|e| JournalError::io(path, "read", e))?;
        let scan = match scan_segment(&bytes) {
            Ok(s) => s,
            Err(e) => {
                // Damage a crash could leave (missing or zeroed bytes, a CRC mismatch) versus a
                // header written by something else (another magic, version or layout).
                let torn = match e {
                    DecodeError::Truncated { .. } | DecodeError::BadCrc { .. } => true,
                    DecodeError::BadMagic => magic_then_zeros(&bytes),
                    DecodeError::BadVersion { found } => found == 0,
                    _ => false,
                };
                let valid = any_valid_record(&bytes);
                if is_last && torn && valid.is_none() {
                    let dropped = written_len(&bytes);
                    truncated_bytes += dropped;
                    ctx.note(format!(
                        "{}: torn segment header ({e}), no records: removing it, {dropped} bytes dropped",
                        path.display()
                    ));
                    if !opts.read_only {
                        remove(path)?;
                        changed = true;
                    }
                    removed.push(path.clone());
                    break;
                }
                if !torn {
                    return Err(JournalError::Foreign { path: path.clone(), detail: e.to_string() });
                }
                if opts.truncate_at_corruption {
                    cut_from = Some(i);
                    break;
                }
                return Err(JournalError::Corrupt { path: path.clone(), offset: 0, error: e, valid_after: valid });
            }
        };
        let h = scan.header;
        if h.first_seq != *name_seq {
            return Err(JournalError::Foreign {
                path: path.clone(),
                detail: format!("file name says first sequence {name_seq}, header says {}", h.first_seq),
            });
        }
        if let Some(exp) = expected {
            if h.first_seq != exp {
                if opts.truncate_at_corruption {
                    cut_from = Some(i);
                    break;
                }
                let after = segments.last().map(|s| s.path.clone()).unwrap_or_default();
                return Err(JournalError::SequenceGap { path: path.clone(), after, expected: exp, found: h.first_seq });
            }
        }
        first_seq.get_or_insert(h.first_seq);
        let info = SegmentInfo {
            path: path.clone(),
            header: h,
            records: scan.records,
            data_end: scan.data_end,
            file_len: bytes.len() as u64,
            ts_range: scan.ts_range,
        };
        expected = Some(h.first_seq + scan.records);
        if !scan.is_clean() {
            let stop = scan.stop.expect("an unclean scan has a stop");
            // A CRC-valid record with the wrong sequence was written whole: never a torn write.
            let tail = is_last
                && scan.valid_after.is_none()
                && !matches!(stop.error, DecodeError::SequenceGap { .. });
            if !tail && !opts.truncate_at_corruption {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: stop.offset,
                    error: stop.error,
                    valid_after: scan.valid_after,
                });
            }
            truncated_bytes += scan.garbage_bytes;
            let last = last_left(info.last_seq());
            if tail {
                ctx.note(torn_tail_note(path, stop.offset, stop.error, scan.garbage_bytes, info.last_seq()));
            } else {
                ctx.note(format!(
                    "{}: CORRUPT record at offset {} ({}): truncating the journal there as requested, {} bytes of \
                     this segment dropped, {last}; every later segment is dropped too",
                    path.display(),
                    stop.offset,
                    stop.error,
                    scan.garbage_bytes
                ));
                cut_from = Some(i + 1);
            }
            if !opts.read_only {
                set_len(path, scan.data_end)?;
                changed = true;
            }
            segments.push(info);
            if cut_from.is_some() {
                break;
            }
        } else {
            if is_last && !opts.read_only && bytes.len() as u64 > scan.data_end {
                // Unused preallocated space of the segment a crashed writer left: the next writer
                // starts a new segment, so give the space back.
                set_len(path, scan.data_end)?;
                changed = true;
            }
            segments.push(info);
        }
    }

    if let Some(from) = cut_from.filter(|&f| f < files.len()) {
        let mut bytes = 0;
        for (_, path) in &files[from..] {
            bytes += std::fs::read(path).map(|b| written_len(&b)).unwrap_or(0);
            if !opts.read_only {
                remove(path)?;
                changed = true;
            }
            removed.push(path.clone());
        }
        truncated_bytes += bytes;
        ctx.note(format!(
            "{} segment file(s) after the truncation point dropped ({bytes} bytes): {} .. {}",
            files.len() - from,
            files[from].1.display(),
            files[files.len() - 1].1.display()
        ));
    }

    let next_seq = expected.unwrap_or_else(|| opts.from_seq.max(1));
    let first_seq = first_seq.unwrap_or(next_seq);

    // An empty last segment: its name would collide with the next writer's first segment.
    if segments.last().is_some_and(|s| s.records == 0) && !opts.read_only {
        let s = segments.pop().expect("last");
        remove(&s.path)?;
        changed = true;
        removed.push(s.path);
    }
    if changed {
        sync_dir(dir)?;
    }

    let from_seq = opts.from_seq.max(first_seq);
    if opts.from_seq > 1 && (opts.from_seq < first_seq || opts.from_seq > next_seq) {
        return Err(JournalError::Missing { from_seq: opts.from_seq, first_seq, last_seq: next_seq - 1 });
    }
    Ok(Recovered {
        dir: dir.to_path_buf(),
        segments,
        first_seq,
        last_seq: next_seq - 1,
        from_seq,
        truncated_bytes,
        removed,
        notes,
        lock,
    })
}

const CHUNK_RECORDS: usize = 1024;

/// Streams records of a [`Recovered`] journal, re-checking each one as it is read.
pub struct RecordIter {
    segments: Vec<SegmentInfo>,
    idx: usize,
    file: Option<(File, PathBuf)>,
    off: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
    expected: Seq,
    from: Seq,
    to: Seq,
    done: bool,
}

impl RecordIter {
    fn fail(&mut self, e: JournalError) -> Option<Result<Record>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if self.done {
                return None;
            }
            if self.pos < self.buf.len() {
                let at = self.off - (self.buf.len() - self.pos) as u64;
                let r = decode_record(&self.buf[self.pos..]);
                self.pos += RECORD_LEN;
                let r = match r {
                    Ok(r) if r.seq == self.expected => r,
                    Ok(r) => {
                        let error = DecodeError::SequenceGap { expected: self.expected, found: r.seq };
                        let path = self.file.as_ref().map(|f| f.1.clone()).unwrap_or_default();
                        return self.fail(JournalError::Corrupt { path, offset: at, error, valid_after: None });
                    }
                    Err(error) => {
                        let path = self.file.as_ref().map(|f| f.1.clone()).unwrap_or_default();
                        return self.fail(JournalError::Corrupt { path, offset: at, error, valid_after: None });
                    }
                };
                self.expected += 1;
                if r.seq > self.to {
                    self.done = true;
                    return None;
                }
                return Some(Ok(r));
            }
            if self.file.is_some() && self.off < self.end {
                let n = ((self.end - self.off) as usize).min(CHUNK_RECORDS * RECORD_LEN);
                self.buf.resize(n, 0);
                let (f, path) = self.file.as_ref().expect("file");
                if let Err(e) = f.read_exact_at(&mut self.buf, self.off) {
                    let e = JournalError::io(path.clone(), "read", e);
                    return self.fail(e);
                }
                self.off += n as u64;
                self.pos = 0;
                continue;
            }
            // Next segment that has records at or after `from`.
            self.file = None;
            self.buf.clear();
            self.pos = 0;
            let Some(seg) = self.segments.get(self.idx).cloned() else {
                self.done = true;
                return None;
            };
            self.idx += 1;
            match seg.last_seq() {
                Some(last) if last >= self.from && seg.first_seq() <= self.to => {}
                _ => continue,
            }
            let start = self.from.max(seg.first_seq());
            let f = match File::open(&seg.path) {
                Ok(f) => f,
                Err(e) => return self.fail(JournalError::io(seg.path.clone(), "open", e)),
            };
            self.file = Some((f, seg.path.clone()));
            self.off = slot_offset(start - seg.first_seq());
            self.end = seg.data_end;
            self.expected = start;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Single-pass recovery (used by `recover_engine`).
// ---------------------------------------------------------------------------------------------

/// One segment file: mapped read-only (the directory is locked), or read into memory (read-only
/// recovery, which does not lock: a live writer may trim a file under a map).
pub(crate) enum SegmentBytes {
    Map(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegmentBytes::Map(m) => m,
            SegmentBytes::Read(v) => v,
        }
    }
}

impl SegmentBytes {
    /// Asks the kernel to read ahead: the replay is about to read all of it.
    fn will_need(&self) {
        if let SegmentBytes::Map(m) = self {
            let _ = m.advise(memmap2::Advice::WillNeed);
        }
    }
}

fn load_segment(path: &Path, locked: bool) -> std::io::Result<SegmentBytes> {
    if !locked {
        return std::fs::read(path).map(SegmentBytes::Read);
    }
    let f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(SegmentBytes::Read(Vec::new()));
    }
    // SAFETY: the directory lock excludes every writer of this journal, so nothing truncates
    // or rewrites the file while it is mapped; the plan drops its maps before it changes a file
    // itself (`Plan::commit`).
    let m = unsafe { memmap2::MmapOptions::new().map(&f)? };
    let _ = m.advise(memmap2::Advice::Sequential);
    Ok(SegmentBytes::Map(m))
}

/// The outcome [`recover`] will have, predicted from the segment headers, the file names and the
/// end of the last segment, with every segment mapped (or, read-only, read) once. [`Plan::replay_into`] validates every
/// record (CRC, sequence) as it feeds the engine; if one does not match the prediction, the
/// prediction is void and the caller runs [`recover_locked`] (the validating pre-pass), which
/// reaches the same verdict `recover` always did (refusal, torn tail, or cut). Nothing on disk
/// changes before [`Plan::commit`].
pub(crate) struct Plan {
    /// What `recover` will return (notes recorded, not logged yet).
    pub(crate) rec: Recovered,
    /// One map per `rec.segments` entry.
    maps: Vec<SegmentBytes>,
    /// `set_len` of the last segment (torn tail cut, or preallocated space given back).
    trim: Option<(PathBuf, u64)>,
    /// An empty last segment to remove.
    remove_last: Option<PathBuf>,
}

/// Why the single pass gives up (the validating path takes over, with the lock).
pub(crate) struct Fallback(pub(crate) Option<DirLock>);

/// Builds the [`Plan`] of `dir`. `Ok(Err(_))`: the journal needs the full validating pre-pass
/// (a header, name or segment end that is not the regular case, an I/O error); the lock is
/// handed back. Errors are the ones [`recover`] returns before it reads any segment.
pub(crate) fn plan(dir: &Path, opts: RecoverOptions) -> Result<std::result::Result<Plan, Fallback>> {
    let lock = check_and_lock(dir, opts)?;
    if lock.is_none() {
        // Read-only recovery does not lock: a live writer may trim a segment, which must not be
        // mapped then (SIGBUS), and reading every segment into memory at once could be too much.
        // The validating path reads one segment at a time.
        return Ok(Err(Fallback(lock)));
    }
    let files = list_segments(dir)?;
    let mut maps = Vec::with_capacity(files.len());
    for (_, path) in &files {
        match load_segment(path, lock.is_some()) {
            Ok(m) => maps.push(m),
            Err(_) => return Ok(Err(Fallback(lock))),
        }
    }
    match predict(&files, maps, opts) {
        Some(mut p) => {
            p.rec.dir = dir.to_path_buf();
            p.rec.lock = lock;
            Ok(Ok(p))
        }
        None => Ok(Err(Fallback(lock))),
    }
}

fn ts_at(b: &[u8], slot: u64) -> u64 {
    let o = slot_offset(slot) as usize + 16;
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// The regular case only: every header decodes and matches its name; a segment with a successor
/// holds exactly the records up to the successor's first sequence, then only zeros; the last
/// segment ends with a record of the right sequence at its slot, followed by zeros or by slots
/// none of which holds a CRC-valid record (a torn tail). `None` otherwise.
fn predict(files: &[(Seq, PathBuf)], mut maps: Vec<SegmentBytes>, opts: RecoverOptions) -> Option<Plan> {
    let n = files.len();
    let mut segments = Vec::with_capacity(n);
    let mut notes = Vec::new();
    let mut truncated_bytes = 0u64;
    let mut trim = None;
    for (i, ((name_seq, path), b)) in files.iter().zip(&maps).enumerate() {
        let b: &[u8] = b;
        let h = SegmentHeader::decode(b).ok()?;
        if h.first_seq != *name_seq {
            return None;
        }
        let f = h.first_seq;
        let (records, data_end) = if i + 1 < n {
            // Names are distinct and sorted: the successor starts after this one.
            let records = files[i + 1].0.checked_sub(f).filter(|&r| r > 0)?;
            let end = usize::try_from(slot_offset(records)).ok()?;
            if end > b.len() || !b[end..].iter().all(|&x| x == 0) {
                return None;
            }
            (records, end as u64)
        } else {
            let w = written_len(b) as usize;
            let k = if w <= HEADER_LEN { 0 } else { (w - HEADER_LEN).div_ceil(RECORD_LEN) as u64 };
            // Backwards from the last written slot to the last record with its sequence; the
            // slots after it must not hold any CRC-valid record.
            let mut records = None;
            for j in (0..k).rev() {
                match decode_record(&b[slot_offset(j) as usize..]) {
                    Ok(r) if r.seq == f + j => {
                        records = Some(j + 1);
                        break;
                    }
                    Ok(_) => return None,
                    Err(_) => {}
                }
            }
            let records = match records {
                Some(r) => r,
                None if k == 0 => 0,
                None => return None,
            };
            let data_end = slot_offset(records);
            let garbage = (w as u64).saturating_sub(data_end);
            if garbage > 0 {
                let error = decode_record(&b[data_end as usize..]).err()?;
                if matches!(error, DecodeError::SequenceGap { .. }) {
                    return None;
                }
                let last = (records > 0).then(|| f + records - 1);
                notes.push(note_text(opts, torn_tail_note(path, data_end, error, garbage, last)));
                truncated_bytes += garbage;
                if !opts.read_only {
                    trim = Some((path.clone(), data_end));
                }
            } else if !opts.read_only && b.len() as u64 > data_end {
                trim = Some((path.clone(), data_end));
            }
            (records, data_end)
        };
        let ts_range = (records > 0).then(|| (ts_at(b, 0), ts_at(b, records - 1)));
        segments.push(SegmentInfo { path: path.clone(), header: h, records, data_end, file_len: b.len() as u64, ts_range });
    }
    let next_seq = segments.last().map_or(opts.from_seq.max(1), |s| s.first_seq() + s.records);
    let first_seq = segments.first().map_or(next_seq, |s| s.first_seq());
    let mut removed = Vec::new();
    let mut remove_last = None;
    if segments.last().is_some_and(|s| s.records == 0) && !opts.read_only {
        let s = segments.pop().expect("last");
        maps.pop();
        removed.push(s.path.clone());
        remove_last = Some(s.path);
    }
    let from_seq = opts.from_seq.max(first_seq);
    if opts.from_seq > 1 && (opts.from_seq < first_seq || opts.from_seq > next_seq) {
        return None; // `recover` reports it (after its changes on disk)
    }
    let rec = Recovered {
        dir: PathBuf::new(),
        segments,
        first_seq,
        last_seq: next_seq - 1,
        from_seq,
        truncated_bytes,
        removed,
        notes,
        lock: None,
    };
    Some(Plan { rec, maps, trim, remove_last })
}

impl Plan {
    /// Reads every record of every segment once, checking its CRC and sequence against the
    /// prediction, and feeds those from `rec.from_seq` on to `engine` (events to `sink`).
    /// `Some(commands fed)`, or `None` at the first record that does not match: `engine` then
    /// holds a prefix of the journal and must be discarded.
    pub(crate) fn replay_into<S: EventSink + ?Sized>(&self, engine: &mut Engine, sink: &mut S) -> Option<u64> {
        let from = self.rec.from_seq;
        let mut fed = 0u64;
        for (seg, b) in self.rec.segments.iter().zip(&self.maps) {
            b.will_need();
            let b: &[u8] = b;
            let first = seg.first_seq();
            let end = seg.data_end as usize;
            if end > b.len() {
                return None;
            }
            let mut expected = first;
            for rec in b[HEADER_LEN..end].chunks_exact(RECORD_LEN) {
                match decode_record(rec) {
                    Ok(r) if r.seq == expected => {
                        if expected >= from {
                            engine.handle(&r.cmd, sink);
                            fed += 1;
                        }
                    }
                    _ => return None,
                }
                expected += 1;
            }
            if expected != first + seg.records {
                return None;
            }
        }
        Some(fed)
    }

    /// Gives up: the lock, for [`recover_locked`].
    pub(crate) fn into_fallback(mut self) -> Fallback {
        Fallback(self.rec.lock.take())
    }

    /// Applies what `recover` would have (cut or trim of the last segment, removal of an empty
    /// last segment, directory sync), logs the notes, and returns the journal.
    pub(crate) fn commit(self) -> Result<Recovered> {
        let Plan { rec, maps, trim, remove_last } = self;
        drop(maps);
        for n in &rec.notes {
            log(n);
        }
        let mut changed = false;
        if let Some((path, len)) = trim {
            set_len(&path, len)?;
            changed = true;
        }
        if let Some(path) = remove_last {
            remove(&path)?;
            changed = true;
        }
        if changed {
            sync_dir(&rec.dir)?;
        }
        Ok(rec)
    }
}
