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
        let msg = if self.opts.read_only { format!("(read-only, not applied) {msg}") } else { msg };
        log(&msg);
        self.notes.push(msg);
    }
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
    if !dir.exists() {
        return Err(JournalError::NotFound(dir.to_path_buf()));
    }
    if !dir.is_dir() {
        return Err(JournalError::Config(format!("{} is not a directory", dir.display())));
    }
    let lock = if opts.read_only { None } else { Some(DirLock::acquire(dir)?) };
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
            let last = match info.last_seq() {
                Some(s) => format!("last sequence {s}"),
                None => "no records left in it".to_string(),
            };
            if tail {
                ctx.note(format!(
                    "{}: torn tail at offset {} ({}): truncated to the last whole record, {} bytes dropped, {last}",
                    path.display(),
                    stop.offset,
                    stop.error,
                    scan.garbage_bytes
                ));
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
                let path = self.file.as_ref().map(|f| f.1.clone()).unwrap_or_default();
                let r = match r {
                    Ok(r) if r.seq == self.expected => r,
                    Ok(r) => {
                        let error = DecodeError::SequenceGap { expected: self.expected, found: r.seq };
                        return self.fail(JournalError::Corrupt { path, offset: at, error, valid_after: None });
                    }
                    Err(error) => return self.fail(JournalError::Corrupt { path, offset: at, error, valid_after: None }),
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
