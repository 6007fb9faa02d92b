//! Ring storage: one contiguous region, on the heap or in a memory-mapped file, with this layout.
//!
//! # Layout (format version 1)
//!
//! Every field is a little-endian `u64` at a fixed byte offset. A file (e.g.
//! `/dev/shm/tickwire-events`) and a heap ring have the same layout; other processes attach to a
//! file read-only ([`super::LossyReader::open`]) and only ever load from it.
//!
//! ```text
//! offset  size  field
//! ------  ----  --------------------------------------------------------------------------------
//!      0     8  magic            0x3130_474E_4952_5754, the ASCII bytes "TWRING01". Stored last
//!                                at creation (Release): a reader that loads it (Acquire) sees
//!                                every other header field initialised.
//!      8     8  version          format version, 1
//!     16     8  capacity         number of slots, a power of two >= 2
//!     24     8  slot_size        bytes per record (a multiple of 8; 64 for Command and Event)
//!     32     8  stamps_offset    byte offset of the stamp array: 384
//!     40     8  slots_offset     byte offset of the slot array (a multiple of 128)
//!     48     8  total_len        length of the file / region in bytes
//!     56     8  first_seq        sequence of the first record the ring ever holds (>= 1)
//!     64     8  writer_pid       process id of the writer
//!     72     8  writer_epoch     nanoseconds since the Unix epoch when the writer created the
//!                                file: differs for every writer incarnation
//!     80     8  writer_state     0 initialising, 1 live, 2 closed (the writer dropped its producer)
//!     88    40  reserved         zero
//!    128     8  cursor           producer cursor: highest *published* sequence (single producer)
//!                                or highest *claimed* sequence (multi producer); first_seq - 1
//!                                before the first record. Alone on its 128 bytes.
//!    136   120  padding          zero (false sharing: nothing else on the cursor's two lines)
//!    256     8  gating_cache     producers' cached minimum of the gating consumer sequences
//!                                (in-process producers only; meaningless to other processes)
//!    264   120  padding          zero
//!    384  8*cap stamps[cap]      stamp of slot i: the sequence s (s & (cap-1) == i) whose record
//!                                is completely written there; s | 1<<63 while s is being written;
//!                                0 if never written
//!      …        padding          zero, up to slots_offset = round_up(384 + 8*cap, 128)
//!  slots   slot_size*cap slots   slot i holds the record of the sequence s with s & (cap-1) == i,
//!                                as its in-memory bytes (`#[repr(C)]`, little-endian)
//! ```
//!
//! Sequences are 1-based and equal the record's own sequence (`Event.seq` for the event ring,
//! `Command.seq` for the command ring): record `s` lives in slot `s & (cap - 1)`.
//!
//! # Writing a slot (seqlock)
//!
//! ```text
//! stamp[i] = s | BUSY   (Relaxed)
//! fence(Release)
//! record words          (Relaxed 64-bit atomic stores)
//! stamp[i] = s          (Release)
//! ```
//! Readers that cannot stop the writer (other processes) load `stamp[i]` (Acquire), copy the words
//! (Relaxed atomic loads), `fence(Acquire)`, reload `stamp[i]`: the copy is valid only if both
//! loads returned `s`. Stamps only grow, so a reader that finds a stamp above `s` has been lapped.
//!
//! A new writer creates the file under a temporary name and renames it over the path, so a reader
//! still mapping an older file keeps a consistent (if stale) ring; `writer_epoch`/`writer_state`
//! let it notice and re-open.

#[cfg_attr(loom, allow(unused_imports))]
use super::sync::{AtomicU64, Ordering};
use super::RingError;
use crate::types::Seq;

/// "TWRING01" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TWRING01");
/// Format version of the layout above.
pub const FORMAT_VERSION: u64 = 1;
/// Byte offsets of the header fields (see the module docs).
pub mod offsets {
    /// magic
    pub const MAGIC: usize = 0;
    /// format version
    pub const VERSION: usize = 8;
    /// capacity (slots)
    pub const CAPACITY: usize = 16;
    /// slot size (bytes)
    pub const SLOT_SIZE: usize = 24;
    /// offset of the stamp array
    pub const STAMPS_OFFSET: usize = 32;
    /// offset of the slot array
    pub const SLOTS_OFFSET: usize = 40;
    /// total length
    pub const TOTAL_LEN: usize = 48;
    /// first sequence
    pub const FIRST_SEQ: usize = 56;
    /// writer pid
    pub const WRITER_PID: usize = 64;
    /// writer epoch
    pub const WRITER_EPOCH: usize = 72;
    /// writer state
    pub const WRITER_STATE: usize = 80;
    /// producer cursor
    pub const CURSOR: usize = 128;
    /// gating cache
    pub const GATING_CACHE: usize = 256;
    /// start of the stamps = header size
    pub const HEADER_SIZE: usize = 384;
}
/// Stamp bit: the slot is being written.
pub const STAMP_BUSY: u64 = 1 << 63;
/// `writer_state`: initialising.
pub const WRITER_INIT: u64 = 0;
/// `writer_state`: a writer is live.
pub const WRITER_LIVE: u64 = 1;
/// `writer_state`: the writer closed the ring.
pub const WRITER_CLOSED: u64 = 2;

/// Byte sizes of a ring's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Slots (power of two).
    pub capacity: usize,
    /// Bytes per slot.
    pub slot_size: usize,
    /// Offset of the slots.
    pub slots_offset: usize,
    /// Total bytes.
    pub total_len: usize,
}

impl Layout {
    /// The layout of a ring of `capacity` slots of `slot_size` bytes.
    pub fn new(capacity: usize, slot_size: usize) -> Result<Layout, RingError> {
        if capacity < 2 || !capacity.is_power_of_two() || capacity > (1 << 40) {
            return Err(RingError::Capacity(capacity));
        }
        if slot_size == 0 || slot_size & 7 != 0 {
            return Err(RingError::SlotSize(slot_size));
        }
        let stamps_end = offsets::HEADER_SIZE + 8 * capacity;
        let slots_offset = stamps_end.div_ceil(128) * 128;
        let total_len = slot_size
            .checked_mul(capacity)
            .and_then(|b| b.checked_add(slots_offset))
            .ok_or(RingError::Capacity(capacity))?;
        Ok(Layout { capacity, slot_size, slots_offset, total_len })
    }
}

#[cfg(not(loom))]
pub(crate) use std_region::Region;

/// The shared-memory file protocol every Tickwire region uses (this ring, and the feed's book
/// image): a writer creates the file under a private temporary name, sizes and maps it,
/// initialises it (its magic stored last, with Release), then renames it over the path — so a
/// reader never opens a half-initialised file, and a restarted writer replaces an old one
/// atomically. Readers map it read-only after checking its length.
#[cfg(not(loom))]
pub(crate) mod file {
    use super::RingError;
    use std::fs::OpenOptions;
    use std::path::{Path, PathBuf};

    /// A created, mapped, not yet visible file: [`Pending::publish`] renames it into place.
    pub(crate) struct Pending {
        tmp: PathBuf,
        path: PathBuf,
    }

    impl Pending {
        /// Makes the initialised file visible at its path (replacing any older one).
        pub(crate) fn publish(self) -> Result<(), RingError> {
            std::fs::rename(&self.tmp, &self.path).map_err(|e| RingError::Io(self.path.clone(), e))
        }
    }

    /// Creates `path`'s private temporary sibling of `len` bytes and maps it writable.
    pub(crate) fn create(path: &Path, len: usize) -> Result<(memmap2::MmapMut, Pending), RingError> {
        let io = |e| RingError::Io(path.to_path_buf(), e);
        let tmp = {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".tmp.{}", std::process::id()));
            path.with_file_name(name)
        };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
        file.set_len(len as u64).map_err(io)?;
        // SAFETY: we just created the file at a private temporary name: nobody else maps or
        // truncates it while the caller sets it up, and after `publish` it is only ever accessed
        // through atomics (the contract of every region with other processes).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }.map_err(io)?;
        Ok((map, Pending { tmp, path: path.to_path_buf() }))
    }

    /// Maps `path` read-only, whole; refuses a file shorter than `header_len` bytes (`what`
    /// prefixes that error, e.g. "book image: ").
    pub(crate) fn open_ro(path: &Path, header_len: usize, what: &str) -> Result<memmap2::Mmap, RingError> {
        let io = |e| RingError::Io(path.to_path_buf(), e);
        let file = OpenOptions::new().read(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        if len < header_len {
            return Err(RingError::Header(format!("{what}file is {len} bytes, shorter than the header")));
        }
        // SAFETY: a read-only shared mapping of the whole file: the caller only ever loads from
        // it, through atomics (writers store through 64-bit atomics, so no load is a data race).
        unsafe { memmap2::MmapOptions::new().len(len).map(&file) }.map_err(io)
    }
}

#[cfg(not(loom))]
mod std_region {
    use super::*;
    use std::path::Path;
    use std::ptr::NonNull;

    enum Owner {
        /// `std::alloc` memory of this layout.
        Heap(std::alloc::Layout),
        /// A writable shared mapping (kept alive; never accessed through the map after setup).
        MmapRw(#[allow(dead_code)] memmap2::MmapMut),
        /// A read-only shared mapping: only loads are ever made through `base`.
        MmapRo(#[allow(dead_code)] memmap2::Mmap),
    }

    /// The memory of one ring: header, stamps and slots, accessed only through atomics.
    pub(crate) struct Region {
        base: NonNull<u8>,
        layout: Layout,
        mask: u64,
        slot_words: usize,
        owner: Owner,
    }

    // SAFETY: the region is plain memory accessed only through `AtomicU64` references (see the
    // accessors), so sharing it between threads is as safe as sharing `[AtomicU64]`; the owner
    // (allocation or mapping) is only freed on drop, when no reference remains.
    unsafe impl Send for Region {}
    // SAFETY: as above.
    unsafe impl Sync for Region {}

    impl Region {
        /// A zeroed heap region with the header filled in.
        pub(crate) fn heap(layout: Layout, first_seq: Seq) -> Result<Region, RingError> {
            let alloc_layout = std::alloc::Layout::from_size_align(layout.total_len, 128)
                .map_err(|_| RingError::Capacity(layout.capacity))?;
            // SAFETY: the layout has a non-zero size (the header alone is 384 bytes).
            let ptr = unsafe { std::alloc::alloc_zeroed(alloc_layout) };
            let base = NonNull::new(ptr).ok_or(RingError::Alloc(layout.total_len))?;
            let r = Region::from_parts(base, layout, Owner::Heap(alloc_layout));
            r.prefault();
            r.init_header(first_seq);
            Ok(r)
        }

        /// Creates (or replaces, atomically by rename) the file at `path`, sized and initialised.
        pub(crate) fn create_file(path: &Path, layout: Layout, first_seq: Seq) -> Result<Region, RingError> {
            let (mut map, pending) = super::file::create(path, layout.total_len)?;
            let base = NonNull::new(map.as_mut_ptr()).ok_or(RingError::Alloc(layout.total_len))?;
            let r = Region::from_parts(base, layout, Owner::MmapRw(map));
            r.prefault();
            r.init_header(first_seq);
            pending.publish()?;
            Ok(r)
        }

        /// Maps `path` read-only and checks its header against `slot_size`.
        pub(crate) fn open_file_ro(path: &Path, slot_size: usize) -> Result<Region, RingError> {
            let map = super::file::open_ro(path, offsets::HEADER_SIZE, "")?;
            // The mapping covers the whole file, so every offset checked below is in bounds.
            let len = map.len();
            let base = NonNull::new(map.as_ptr() as *mut u8).ok_or(RingError::Alloc(len))?;
            let word = |off: usize| {
                // SAFETY: off + 8 <= HEADER_SIZE <= len; the mapping is page aligned and `off` a
                // multiple of 8; the memory is only accessed atomically; AtomicU64 has the layout
                // of u64. Plain 64-bit atomic loads do not write, so read-only memory is fine.
                unsafe { &*(base.as_ptr().add(off) as *const AtomicU64) }
            };
            // Acquire: pairs with the Release store of the magic in `init_header`.
            let magic = word(offsets::MAGIC).load(Ordering::Acquire);
            if magic != MAGIC {
                return Err(RingError::Header(format!("bad magic {magic:#x}")));
            }
            let version = word(offsets::VERSION).load(Ordering::Relaxed);
            if version != FORMAT_VERSION {
                return Err(RingError::Header(format!("format version {version}, expected {FORMAT_VERSION}")));
            }
            let capacity = word(offsets::CAPACITY).load(Ordering::Relaxed) as usize;
            let file_slot = word(offsets::SLOT_SIZE).load(Ordering::Relaxed) as usize;
            if file_slot != slot_size {
                return Err(RingError::Header(format!("slot size {file_slot}, expected {slot_size}")));
            }
            let layout = Layout::new(capacity, slot_size)?;
            let slots_off = word(offsets::SLOTS_OFFSET).load(Ordering::Relaxed) as usize;
            let total = word(offsets::TOTAL_LEN).load(Ordering::Relaxed) as usize;
            let stamps_off = word(offsets::STAMPS_OFFSET).load(Ordering::Relaxed) as usize;
            if slots_off != layout.slots_offset
                || total != layout.total_len
                || stamps_off != offsets::HEADER_SIZE
                || len < layout.total_len
            {
                return Err(RingError::Header(format!(
                    "inconsistent header: stamps at {stamps_off}, slots at {slots_off}, total {total}, file {len}"
                )));
            }
            Ok(Region::from_parts(base, layout, Owner::MmapRo(map)))
        }

        fn from_parts(base: NonNull<u8>, layout: Layout, owner: Owner) -> Region {
            Region {
                base,
                layout,
                mask: layout.capacity as u64 - 1,
                slot_words: layout.slot_size / 8,
                owner,
            }
        }

        /// Touches every page once so the hot path takes no page fault.
        fn prefault(&self) {
            let mut off = 0;
            while off < self.layout.total_len {
                self.word(off).store(0, Ordering::Relaxed);
                off += 4096;
            }
        }

        fn init_header(&self, first_seq: Seq) {
            let l = self.layout;
            // All Relaxed: published by the Release store of the magic below.
            let set = |off: usize, v: u64| self.word(off).store(v, Ordering::Relaxed);
            set(offsets::VERSION, FORMAT_VERSION);
            set(offsets::CAPACITY, l.capacity as u64);
            set(offsets::SLOT_SIZE, l.slot_size as u64);
            set(offsets::STAMPS_OFFSET, offsets::HEADER_SIZE as u64);
            set(offsets::SLOTS_OFFSET, l.slots_offset as u64);
            set(offsets::TOTAL_LEN, l.total_len as u64);
            set(offsets::FIRST_SEQ, first_seq);
            set(offsets::WRITER_PID, u64::from(std::process::id()));
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            set(offsets::WRITER_EPOCH, epoch);
            set(offsets::WRITER_STATE, WRITER_LIVE);
            set(offsets::CURSOR, first_seq - 1);
            set(offsets::GATING_CACHE, first_seq - 1);
            // Release: pairs with the Acquire load of the magic in `open_file_ro`.
            self.word(offsets::MAGIC).store(MAGIC, Ordering::Release);
        }

        /// The header word at byte offset `off`.
        #[inline(always)]
        pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
            debug_assert!(off & 7 == 0 && off + 8 <= self.layout.total_len);
            // SAFETY: `off` is a multiple of 8 inside the region (callers pass header offsets or
            // offsets computed from the validated layout); the base is 128-aligned (heap) or page
            // aligned (mapping); AtomicU64 has the size and alignment of u64; the memory is only
            // ever accessed through atomics, and lives as long as `self`.
            unsafe { &*(self.base.as_ptr().add(off) as *const AtomicU64) }
        }

        #[inline(always)]
        pub(crate) fn layout(&self) -> Layout {
            self.layout
        }

        /// Whether stores are allowed (false for a read-only mapping).
        pub(crate) fn is_writable(&self) -> bool {
            !matches!(self.owner, Owner::MmapRo(_))
        }

        #[inline(always)]
        pub(crate) fn cursor(&self) -> &AtomicU64 {
            self.word(offsets::CURSOR)
        }

        #[inline(always)]
        pub(crate) fn gating_cache(&self) -> &AtomicU64 {
            self.word(offsets::GATING_CACHE)
        }

        /// The stamp of the slot of sequence `seq`.
        #[inline(always)]
        pub(crate) fn stamp(&self, seq: Seq) -> &AtomicU64 {
            let i = (seq & self.mask) as usize;
            // SAFETY: i < capacity, so the stamp lies inside [HEADER_SIZE, HEADER_SIZE + 8*cap),
            // inside the region; alignment and access discipline as in `word`.
            unsafe { &*(self.base.as_ptr().add(offsets::HEADER_SIZE + 8 * i) as *const AtomicU64) }
        }

        /// The words of the slot of sequence `seq`.
        #[inline(always)]
        pub(crate) fn slot(&self, seq: Seq) -> &[AtomicU64] {
            let i = (seq & self.mask) as usize;
            // SAFETY: i < capacity, so the slot [slots_offset + i*slot_size, +slot_size) is inside
            // the region; slots_offset and slot_size are multiples of 8; the words are only ever
            // accessed through atomics and live as long as `self`.
            unsafe {
                std::slice::from_raw_parts(
                    self.base.as_ptr().add(self.layout.slots_offset + i * self.layout.slot_size) as *const AtomicU64,
                    self.slot_words,
                )
            }
        }

        pub(crate) fn header(&self, off: usize) -> u64 {
            self.word(off).load(Ordering::Acquire)
        }

        /// Marks the writer closed (Release: pairs with the Acquire load of readers that check it).
        pub(crate) fn set_writer_state(&self, state: u64) {
            if self.is_writable() {
                self.word(offsets::WRITER_STATE).store(state, Ordering::Release);
            }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            if let Owner::Heap(l) = self.owner {
                // SAFETY: allocated in `heap` with exactly this layout; no reference to the region
                // outlives `self`.
                unsafe { std::alloc::dealloc(self.base.as_ptr(), l) };
            }
        }
    }
}

#[cfg(loom)]
pub(crate) use loom_region::Region;

/// Under loom: the same accessors over loom atomics (heap only).
#[cfg(loom)]
mod loom_region {
    use super::*;

    pub(crate) struct Region {
        layout: Layout,
        mask: u64,
        slot_words: usize,
        cursor: AtomicU64,
        gating_cache: AtomicU64,
        first_seq: u64,
        stamps: Box<[AtomicU64]>,
        words: Box<[AtomicU64]>,
    }

    impl Region {
        pub(crate) fn heap(layout: Layout, first_seq: Seq) -> Result<Region, RingError> {
            let slot_words = layout.slot_size / 8;
            Ok(Region {
                layout,
                mask: layout.capacity as u64 - 1,
                slot_words,
                cursor: AtomicU64::new(first_seq - 1),
                gating_cache: AtomicU64::new(first_seq - 1),
                first_seq,
                stamps: (0..layout.capacity).map(|_| AtomicU64::new(0)).collect(),
                words: (0..layout.capacity * slot_words).map(|_| AtomicU64::new(0)).collect(),
            })
        }
        pub(crate) fn layout(&self) -> Layout {
            self.layout
        }
        pub(crate) fn cursor(&self) -> &AtomicU64 {
            &self.cursor
        }
        pub(crate) fn gating_cache(&self) -> &AtomicU64 {
            &self.gating_cache
        }
        pub(crate) fn stamp(&self, seq: Seq) -> &AtomicU64 {
            &self.stamps[(seq & self.mask) as usize]
        }
        pub(crate) fn slot(&self, seq: Seq) -> &[AtomicU64] {
            let i = (seq & self.mask) as usize;
            &self.words[i * self.slot_words..(i + 1) * self.slot_words]
        }
        pub(crate) fn header(&self, off: usize) -> u64 {
            match off {
                offsets::FIRST_SEQ => self.first_seq,
                offsets::CAPACITY => self.layout.capacity as u64,
                _ => 0,
            }
        }
        pub(crate) fn set_writer_state(&self, _state: u64) {}
    }
}
