//! Book image: a shared-memory region holding every instrument's aggregated price levels together
//! with the engine event sequence they are consistent with, so that a market-data reader that was
//! lapped on the outbound ring (or starts late) can rebuild its books without asking anybody.
//!
//! # Why here (core/src/ring)
//!
//! It is the companion of the outbound ring's file (`shm.rs`): same conventions (header with a
//! magic stored last, writer pid/epoch/state, created under a temporary name and renamed, every
//! word accessed through 64-bit atomics so a concurrent reader in another process is never a data
//! race, seqlock stamps), the same dependency (`memmap2`), and both the writer (the process that
//! owns the engine) and the readers (feed shard processes) already depend on `tickwire-core`. It
//! knows nothing about the feed: levels are [`Level`]s, sequences are engine event sequences.
//!
//! # Layout (format version 1)
//!
//! Every field is a little-endian `u64`.
//!
//! ```text
//! offset  field
//! ------  ---------------------------------------------------------------------------------------
//!      0  magic          "TWBKIMG1" (0x31474D494B425754); stored last at creation (Release)
//!      8  version        1
//!     16  instruments    N: instrument records per buffer
//!     24  depth          D: levels per side per instrument (default 1000)
//!     32  record_words   8 + 6*D
//!     40  buffer_words   16 + N*record_words
//!     48  total_len      256 + 16*buffer_words bytes
//!     56  writer_pid     process id of the writer
//!     64  writer_epoch   ns since the Unix epoch at creation (differs per writer incarnation)
//!     72  writer_state   0 initialising, 1 live, 2 closed, 3 stale (the writer lost events: do
//!                        not use the image)
//!     80  reserved
//!    128  generation     last completely written generation g (0: none yet); image g lives in
//!                        buffer g & 1. Alone on its 128 bytes.
//!    256  buffer[0], then buffer[1] at 256 + 8*buffer_words:
//!           +0   stamp       g when generation g is complete in it; g | 1<<63 while written
//!           +8   engine_seq  S: the image holds exactly the effect of engine events 1..=S
//!           +16  count       instrument records in use (<= N)
//!           +24  reserved    up to 16 words
//!           +128 records[N], record_words each:
//!                  +0  instrument id
//!                  +8  flags: bit 0 halted, bit 1 truncated (a side had more than D levels)
//!                  +16 bid_count (<= D)   +24 ask_count (<= D)   +32 reserved (4 words)
//!                  +64 bids[D]  (best first), 3 words each: price (i64 bits), qty, orders
//!                  then asks[D] (best first), same encoding
//! ```
//!
//! # Publication (double buffer + seqlock)
//!
//! One writer. Generation g is written into buffer `g & 1` while readers copy generation g - 1
//! from the other buffer:
//!
//! ```text
//! stamp[b] = g | BUSY   (Relaxed)          reader: g  = generation   (Acquire)
//! fence(Release)                                   s1 = stamp[g & 1] (Acquire); s1 == g or retry
//! words                 (Relaxed)                  copy words        (Relaxed)
//! stamp[b] = g          (Release)                  fence(Acquire)
//! generation = g        (Release)                  s2 = stamp[g & 1] (Relaxed); valid iff s2 == g
//! ```
//!
//! A reader is only disturbed when the writer starts generation g + 2 (same buffer) during its
//! copy; it then sees a changed stamp and retries. The writer never waits for readers (they map
//! the file read-only and store nothing), so publishing images can never hold back the engine.

use super::RingError;
use crate::engine::Level;
use crate::types::{InstrumentId, Seq};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// "TWBKIMG1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TWBKIMG1");
/// Format version of the layout above.
pub const FORMAT_VERSION: u64 = 1;
/// Default levels kept per side per instrument.
pub const DEFAULT_DEPTH: usize = 1000;
/// Stamp bit: the buffer is being written.
pub const STAMP_BUSY: u64 = 1 << 63;
/// `writer_state`: the writer lost events; the image must not be used.
pub const WRITER_STALE: u64 = 3;

const HEADER_BYTES: usize = 256;
const BUF_HEADER_WORDS: usize = 16;
const REC_HEADER_WORDS: usize = 8;
const FLAG_HALTED: u64 = 1;
const FLAG_TRUNCATED: u64 = 2;

/// Word indexes of the header fields.
mod w {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const INSTRUMENTS: usize = 2;
    pub const DEPTH: usize = 3;
    pub const RECORD_WORDS: usize = 4;
    pub const BUFFER_WORDS: usize = 5;
    pub const TOTAL_LEN: usize = 6;
    pub const WRITER_PID: usize = 7;
    pub const WRITER_EPOCH: usize = 8;
    pub const WRITER_STATE: usize = 9;
    pub const GENERATION: usize = 16;
}

/// Sizes of an image region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// Instrument records per buffer.
    pub instruments: usize,
    /// Levels per side.
    pub depth: usize,
    /// Words per instrument record.
    pub record_words: usize,
    /// Words per buffer.
    pub buffer_words: usize,
    /// Bytes of the whole region.
    pub total_len: usize,
}

impl ImageLayout {
    /// The layout for `instruments` records of `depth` levels per side.
    pub fn new(instruments: usize, depth: usize) -> Result<ImageLayout, RingError> {
        if instruments == 0 || instruments > 1 << 20 {
            return Err(RingError::Header(format!("book image: {instruments} instruments (1..=2^20)")));
        }
        if depth == 0 || depth > 1 << 24 {
            return Err(RingError::Header(format!("book image: depth {depth} (1..=2^24)")));
        }
        let record_words = REC_HEADER_WORDS + 6 * depth;
        let buffer_words = instruments
            .checked_mul(record_words)
            .and_then(|x| x.checked_add(BUF_HEADER_WORDS))
            .ok_or_else(|| RingError::Header("book image too large".into()))?;
        let total_len = buffer_words
            .checked_mul(16)
            .and_then(|x| x.checked_add(HEADER_BYTES))
            .ok_or_else(|| RingError::Header("book image too large".into()))?;
        Ok(ImageLayout { instruments, depth, record_words, buffer_words, total_len })
    }

    fn buffer(&self, b: u64) -> usize {
        HEADER_BYTES / 8 + (b as usize & 1) * self.buffer_words
    }

    fn record(&self, b: u64, r: usize) -> usize {
        self.buffer(b) + BUF_HEADER_WORDS + r * self.record_words
    }
}

/// The words of a mapping. Only ever accessed through `AtomicU64`.
struct Words {
    ptr: *const AtomicU64,
    len: usize,
}

// SAFETY: the words are only accessed through `AtomicU64` references, so sharing or sending them
// across threads is as safe as for `[AtomicU64]`; the mapping they point into is owned by the
// same struct (writer or reader) and outlives every reference handed out.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

impl Words {
    /// # Safety
    /// `base` must point to `len_bytes` mapped bytes, 8-aligned, valid while the result is used
    /// and accessed by every party only through 64-bit atomics.
    unsafe fn new(base: *const u8, len_bytes: usize) -> Words {
        Words { ptr: base as *const AtomicU64, len: len_bytes / 8 }
    }

    #[inline(always)]
    fn all(&self) -> &[AtomicU64] {
        // SAFETY: the contract of `Words::new`: `len` aligned words, alive as long as `self`,
        // accessed only atomically (so concurrent stores by another process are no data race).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    #[inline(always)]
    fn at(&self, i: usize) -> &AtomicU64 {
        &self.all()[i]
    }
}

/// One instrument of an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageBook {
    /// Instrument id.
    pub instrument: InstrumentId,
    /// Whether it is halted.
    pub halted: bool,
    /// Whether a side had more levels than the image's depth (only the best `depth` are here).
    pub truncated: bool,
    /// Bid levels, best (highest) first.
    pub bids: Vec<Level>,
    /// Ask levels, best (lowest) first.
    pub asks: Vec<Level>,
}

/// A copy of one generation of the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookImage {
    /// Generation copied.
    pub generation: u64,
    /// The books hold exactly the effect of engine events `1..=engine_seq`.
    pub engine_seq: Seq,
    /// Instruments, in the writer's order.
    pub books: Vec<ImageBook>,
}

/// Why no image was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageReadError {
    /// No generation published yet.
    NotYet,
    /// The writer marked the image stale (it lost events) or closed.
    Unusable,
    /// The writer kept overwriting the buffer during every attempt (retry later).
    Busy,
}

impl std::fmt::Display for ImageReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageReadError::NotYet => "no book image published yet",
            ImageReadError::Unusable => "book image stale or closed",
            ImageReadError::Busy => "book image rewritten during every copy attempt",
        })
    }
}

impl std::error::Error for ImageReadError {}

/// The one writer of an image file (in the process that owns the engine).
pub struct BookImageWriter {
    words: Words,
    layout: ImageLayout,
    generation: u64,
    _map: memmap2::MmapMut,
}

/// One generation being written ([`BookImageWriter::begin`]); readers see it only at
/// [`ImageTxn::commit`]. Dropped without commit, nothing is published.
pub struct ImageTxn<'a> {
    w: &'a mut BookImageWriter,
    g: u64,
    count: usize,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

impl BookImageWriter {
    /// Creates (or atomically replaces, by rename) the image file at `path` for up to
    /// `instruments` instruments of `depth` levels per side. No generation is published yet.
    pub fn create(path: &Path, instruments: usize, depth: usize) -> Result<BookImageWriter, RingError> {
        let layout = ImageLayout::new(instruments, depth)?;
        let (mut map, pending) = super::shm::file::create(path, layout.total_len)?;
        // SAFETY: `map` is `total_len` bytes, page aligned, owned by the writer (kept in `_map`),
        // and the layout's contract is atomic access only.
        let words = unsafe { Words::new(map.as_mut_ptr(), layout.total_len) };
        let w = BookImageWriter { words, layout, generation: 0, _map: map };
        // All Relaxed: published by the Release store of the magic below.
        let set = |i: usize, v: u64| w.words.at(i).store(v, Ordering::Relaxed);
        set(w::VERSION, FORMAT_VERSION);
        set(w::INSTRUMENTS, instruments as u64);
        set(w::DEPTH, depth as u64);
        set(w::RECORD_WORDS, layout.record_words as u64);
        set(w::BUFFER_WORDS, layout.buffer_words as u64);
        set(w::TOTAL_LEN, layout.total_len as u64);
        set(w::WRITER_PID, u64::from(std::process::id()));
        set(w::WRITER_EPOCH, now_ns());
        set(w::WRITER_STATE, super::shm::WRITER_LIVE);
        // Release: pairs with the Acquire load of the magic in `BookImageReader::open`.
        w.words.at(w::MAGIC).store(MAGIC, Ordering::Release);
        pending.publish()?;
        Ok(w)
    }

    /// The layout.
    pub fn layout(&self) -> ImageLayout {
        self.layout
    }

    /// Last generation published (0: none).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts writing the next generation, consistent with engine events `1..=engine_seq`.
    pub fn begin(&mut self, engine_seq: Seq) -> ImageTxn<'_> {
        let g = self.generation + 1;
        let b = self.layout.buffer(g);
        let stamp = self.words.at(b);
        // Relaxed: ordered before the data stores by the fence below.
        stamp.store(g | STAMP_BUSY, Ordering::Relaxed);
        // Release fence: pairs with the Acquire fence of `BookImageReader::read`: a reader that
        // copied any word stored below sees this busy stamp (or later) on its second stamp load.
        fence(Ordering::Release);
        // Relaxed: published by the Release stamp store of `commit`.
        self.words.at(b + 1).store(engine_seq, Ordering::Relaxed);
        ImageTxn { w: self, g, count: 0 }
    }

    /// Marks the image stale (the writer lost events): readers get [`ImageReadError::Unusable`].
    pub fn set_stale(&self) {
        // Release: pairs with the Acquire state load of readers.
        self.words.at(w::WRITER_STATE).store(WRITER_STALE, Ordering::Release);
    }
}

impl Drop for BookImageWriter {
    fn drop(&mut self) {
        // Release: pairs with the Acquire state load of readers.
        self.words.at(w::WRITER_STATE).store(super::shm::WRITER_CLOSED, Ordering::Release);
    }
}

impl ImageTxn<'_> {
    /// Adds one instrument's book (levels best first). Keeps the best `depth` levels per side and
    /// flags the record truncated if there were more. Returns false (nothing added) when all
    /// `instruments` records are used.
    pub fn book(
        &mut self,
        instrument: InstrumentId,
        halted: bool,
        bids: impl IntoIterator<Item = Level>,
        asks: impl IntoIterator<Item = Level>,
    ) -> bool {
        let l = self.w.layout;
        if self.count >= l.instruments {
            return false;
        }
        let r = l.record(self.g, self.count);
        let words = self.w.words.all();
        // All Relaxed below: published by the Release stamp store of `commit`.
        let (nb, tb) = write_side(words, r + REC_HEADER_WORDS, l.depth, bids);
        let (na, ta) = write_side(words, r + REC_HEADER_WORDS + 3 * l.depth, l.depth, asks);
        let (truncated, counts) = (tb || ta, [nb, na]);
        words[r].store(u64::from(instrument), Ordering::Relaxed);
        let flags = if halted { FLAG_HALTED } else { 0 } | if truncated { FLAG_TRUNCATED } else { 0 };
        words[r + 1].store(flags, Ordering::Relaxed);
        words[r + 2].store(counts[0] as u64, Ordering::Relaxed);
        words[r + 3].store(counts[1] as u64, Ordering::Relaxed);
        self.count += 1;
        true
    }

    /// Publishes the generation; returns it.
    pub fn commit(self) -> u64 {
        let l = self.w.layout;
        let b = l.buffer(self.g);
        let words = self.w.words.all();
        // Relaxed: published by the Release stamp store below.
        words[b + 2].store(self.count as u64, Ordering::Relaxed);
        // Release: pairs with the Acquire first stamp load of readers: the words are visible.
        words[b].store(self.g, Ordering::Release);
        // Release: pairs with the Acquire generation load of readers (which then see stamp g).
        words[w::GENERATION].store(self.g, Ordering::Release);
        self.w.generation = self.g;
        self.g
    }
}

/// Writes up to `depth` levels from `base` (Relaxed stores, published by the commit's Release);
/// returns how many and whether more were left.
fn write_side(words: &[AtomicU64], base: usize, depth: usize, levels: impl IntoIterator<Item = Level>) -> (usize, bool) {
    let mut n = 0;
    for lv in levels {
        if n == depth {
            return (n, true);
        }
        words[base + 3 * n].store(lv.price as u64, Ordering::Relaxed);
        words[base + 3 * n + 1].store(lv.qty, Ordering::Relaxed);
        words[base + 3 * n + 2].store(u64::from(lv.orders), Ordering::Relaxed);
        n += 1;
    }
    (n, false)
}

/// A read-only attachment to an image file (any process).
pub struct BookImageReader {
    words: Words,
    layout: ImageLayout,
    _map: memmap2::Mmap,
}

impl BookImageReader {
    /// Maps `path` read-only and checks its header.
    pub fn open(path: &Path) -> Result<BookImageReader, RingError> {
        let map = super::shm::file::open_ro(path, HEADER_BYTES, "book image: ")?;
        let len = map.len();
        // SAFETY: `len` mapped, page-aligned bytes owned by the result (`_map`).
        let words = unsafe { Words::new(map.as_ptr(), len) };
        // Acquire: pairs with the Release store of the magic at creation: the header is complete.
        let magic = words.at(w::MAGIC).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(RingError::Header(format!("book image: bad magic {magic:#x}")));
        }
        // Relaxed: made visible by the Acquire magic load above; never change afterwards.
        let get = |i: usize| words.at(i).load(Ordering::Relaxed);
        let version = get(w::VERSION);
        if version != FORMAT_VERSION {
            return Err(RingError::Header(format!("book image: version {version}, expected {FORMAT_VERSION}")));
        }
        let layout = ImageLayout::new(get(w::INSTRUMENTS) as usize, get(w::DEPTH) as usize)?;
        if layout.total_len != len
            || get(w::TOTAL_LEN) as usize != len
            || get(w::RECORD_WORDS) as usize != layout.record_words
            || get(w::BUFFER_WORDS) as usize != layout.buffer_words
        {
            return Err(RingError::Header("book image: sizes do not match the file".into()));
        }
        Ok(BookImageReader { words, layout, _map: map })
    }

    /// The layout.
    pub fn layout(&self) -> ImageLayout {
        self.layout
    }

    /// Last generation published (0: none yet).
    pub fn generation(&self) -> u64 {
        // Acquire: pairs with the Release generation store of `ImageTxn::commit`.
        self.words.at(w::GENERATION).load(Ordering::Acquire)
    }

    /// Process id of the writer.
    pub fn writer_pid(&self) -> u64 {
        // Relaxed: a header constant, visible since `open`.
        self.words.at(w::WRITER_PID).load(Ordering::Relaxed)
    }

    /// Writer state (`shm::WRITER_LIVE`, `shm::WRITER_CLOSED`, [`WRITER_STALE`]).
    pub fn writer_state(&self) -> u64 {
        // Acquire: pairs with the Release stores of `set_stale` / the writer's drop.
        self.words.at(w::WRITER_STATE).load(Ordering::Acquire)
    }

    /// Copies the newest generation into `out` (reusing its allocations), trying up to
    /// `attempts` times while the writer overwrites the buffer being copied. Never blocks the
    /// writer. A stale image is refused; a closed writer's last image is still returned (it is
    /// consistent, just not followed any more).
    pub fn read(&self, out: &mut BookImage, attempts: usize) -> Result<(), ImageReadError> {
        let l = self.layout;
        let words = self.words.all();
        for _ in 0..attempts.max(1) {
            if self.writer_state() == WRITER_STALE {
                return Err(ImageReadError::Unusable);
            }
            let g = self.generation();
            if g == 0 {
                return Err(ImageReadError::NotYet);
            }
            let b = l.buffer(g);
            // Acquire: pairs with the Release stamp store of `commit`: generation g's words are
            // visible if the stamp says g.
            if words[b].load(Ordering::Acquire) != g {
                std::hint::spin_loop();
                continue;
            }
            // Relaxed loads from here to the fence: validated by the stamp reload below. Counts
            // are clamped so a torn copy stays in bounds (and is then discarded).
            out.generation = g;
            out.engine_seq = words[b + 1].load(Ordering::Relaxed);
            let count = (words[b + 2].load(Ordering::Relaxed) as usize).min(l.instruments);
            out.books.resize_with(count, ImageBook::default);
            for (r, book) in out.books.iter_mut().enumerate() {
                let rec = l.record(g, r);
                book.instrument = words[rec].load(Ordering::Relaxed) as InstrumentId;
                let flags = words[rec + 1].load(Ordering::Relaxed);
                book.halted = flags & FLAG_HALTED != 0;
                book.truncated = flags & FLAG_TRUNCATED != 0;
                for (k, side) in [&mut book.bids, &mut book.asks].into_iter().enumerate() {
                    let n = (words[rec + 2 + k].load(Ordering::Relaxed) as usize).min(l.depth);
                    let base = rec + REC_HEADER_WORDS + k * 3 * l.depth;
                    side.clear();
                    side.extend((0..n).map(|i| Level {
                        price: words[base + 3 * i].load(Ordering::Relaxed) as i64,
                        qty: words[base + 3 * i + 1].load(Ordering::Relaxed),
                        orders: words[base + 3 * i + 2].load(Ordering::Relaxed) as u32,
                    }));
                }
            }
            // Acquire fence: pairs with the Release fence of `begin`: if the copy read any word
            // of a later generation, the reload below sees its busy stamp (or a later one).
            fence(Ordering::Acquire);
            // Relaxed: ordered after the copy by the fence above.
            if words[b].load(Ordering::Relaxed) == g {
                return Ok(());
            }
        }
        Err(ImageReadError::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(tag: &str) -> std::path::PathBuf {
        let dir = if Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        dir.join(format!("tickwire-image-unit-{tag}-{}", std::process::id()))
    }

    fn lv(price: i64, qty: u64) -> Level {
        Level { price, qty, orders: 1 }
    }

    #[test]
    fn generations_round_trip_and_truncate() {
        let p = path("rt");
        let mut w = BookImageWriter::create(&p, 2, 3).unwrap();
        let r = BookImageReader::open(&p).unwrap();
        let mut img = BookImage::default();
        assert_eq!(r.read(&mut img, 4), Err(ImageReadError::NotYet));
        let mut t = w.begin(10);
        assert!(t.book(1, false, vec![lv(100, 5), lv(99, 1)], vec![lv(101, 2)]));
        assert!(t.book(2, true, (0..5).map(|i| lv(50 - i, 1)), vec![]));
        assert!(!t.book(3, false, vec![], vec![]));
        assert_eq!(t.commit(), 1);
        r.read(&mut img, 4).unwrap();
        assert_eq!(img.engine_seq, 10);
        assert_eq!(img.books.len(), 2);
        assert_eq!(img.books[0].bids, vec![lv(100, 5), lv(99, 1)]);
        assert_eq!(img.books[0].asks, vec![lv(101, 2)]);
        assert!(img.books[1].halted && img.books[1].truncated);
        assert_eq!(img.books[1].bids.len(), 3);
        // An uncommitted generation is invisible; the next commit replaces it.
        {
            let mut t = w.begin(11);
            t.book(1, false, vec![], vec![]);
        }
        r.read(&mut img, 4).unwrap();
        assert_eq!((img.generation, img.engine_seq), (1, 10));
        let mut t = w.begin(12);
        t.book(1, false, vec![lv(7, 7)], vec![]);
        assert_eq!(t.commit(), 2);
        r.read(&mut img, 4).unwrap();
        assert_eq!((img.generation, img.engine_seq, img.books.len()), (2, 12, 1));
        w.set_stale();
        assert_eq!(r.read(&mut img, 4), Err(ImageReadError::Unusable));
        drop(w);
        let _ = std::fs::remove_file(&p);
    }

    /// A reader copying while the writer publishes as fast as it can only ever sees whole
    /// generations (each generation's levels all carry its engine_seq as quantity).
    #[test]
    fn concurrent_copies_are_consistent() {
        let p = path("conc");
        let mut w = BookImageWriter::create(&p, 2, 16).unwrap();
        let r = BookImageReader::open(&p).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let t = std::thread::spawn(move || {
            let mut s = 0u64;
            while !stop2.load(Ordering::Acquire) && s < 200_000 {
                s += 1;
                let n = (s % 16) as i64 + 1;
                let mut tx = w.begin(s);
                tx.book(1, false, (0..n).map(|i| lv(1000 - i, s)), (0..n).map(|i| lv(2000 + i, s)));
                tx.book(2, s.is_multiple_of(2), vec![lv(1, s)], vec![]);
                tx.commit();
            }
            w
        });
        let mut img = BookImage::default();
        let check = |img: &BookImage| {
            let s = img.engine_seq;
            assert_eq!(img.books.len(), 2);
            let n = (s % 16) as usize + 1;
            assert_eq!(img.books[0].bids.len(), n);
            assert!(img.books[0].bids.iter().chain(&img.books[0].asks).chain(&img.books[1].bids).all(|l| l.qty == s));
            assert_eq!(img.books[1].halted, s.is_multiple_of(2));
        };
        let mut ok = 0;
        while ok < 2000 && !t.is_finished() {
            if r.read(&mut img, 64).is_ok() {
                ok += 1;
                check(&img);
            }
        }
        stop.store(true, Ordering::Release);
        let w = t.join().unwrap();
        // The writer is done: the newest generation copies at the first attempt.
        r.read(&mut img, 1).unwrap();
        assert_eq!(img.generation, w.generation());
        check(&img);
        drop(w);
        let _ = std::fs::remove_file(&p);
    }
}
