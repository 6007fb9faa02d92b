//! [`LossyReader`]: reads a ring without ever holding back its producer (e.g. a feed shard in
//! another process, attached read-only to the shared-memory ring), detecting when it was lapped.

use super::buffer::{RingShared, SlotRead};
use super::shm::offsets;
use super::sync::{Arc, Ordering};
use super::Pod;
use crate::types::Seq;
use std::marker::PhantomData;

/// The reader fell more than a ring behind: the records from `expected` up to
/// `oldest_available - 1` were overwritten before it read them. The reader has already moved to
/// `oldest_available` (best effort: a fast writer may lap it again, which is reported again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lapped {
    /// The sequence the reader wanted.
    pub expected: Seq,
    /// The oldest sequence still readable when the lap was detected; the reader's next sequence.
    pub oldest_available: Seq,
}

impl std::fmt::Display for Lapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lapped: wanted {}, oldest available {}", self.expected, self.oldest_available)
    }
}

impl std::error::Error for Lapped {}

/// A non-gating reader. Every record it returns is a complete, untorn copy (seqlock check on the
/// slot's stamp, see `shm.rs`); a record overwritten before or while it was copied is reported as
/// [`Lapped`], never returned.
pub struct LossyReader<T: Pod> {
    ring: Arc<RingShared>,
    next: Seq,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for LossyReader<T> {
    fn clone(&self) -> Self {
        LossyReader { ring: self.ring.clone(), next: self.next, _t: PhantomData }
    }
}

impl<T: Pod> LossyReader<T> {
    pub(crate) fn from_shared(ring: Arc<RingShared>) -> LossyReader<T> {
        let mut r = LossyReader { ring, next: 0, _t: PhantomData };
        r.next = r.oldest_available();
        r
    }

    /// Attaches read-only to the ring file at `path` (written by
    /// [`super::RingBuffer::create_shm`], possibly in another process); starts at the oldest record
    /// still available. Fails if the header is missing, of another version or record size.
    #[cfg(not(loom))]
    pub fn open(path: &std::path::Path) -> Result<LossyReader<T>, super::RingError> {
        let region = super::shm::Region::open_file_ro(path, std::mem::size_of::<T>())?;
        let capacity = region.layout().capacity as u64;
        let first_seq = region.header(offsets::FIRST_SEQ);
        let ring = Arc::new(RingShared {
            region,
            kind: super::ProducerKind::Single,
            gating: Box::new([]),
            bells: Box::new([]),
            capacity,
            first_seq,
            closed: super::sync::AtomicBool::new(false),
        });
        Ok(LossyReader::from_shared(ring))
    }

    /// Highest published sequence (the producer cursor).
    #[inline]
    pub fn published(&self) -> Seq {
        // Acquire: pairs with the Release cursor store of SingleProducer::publish.
        self.ring.region.cursor().load(Ordering::Acquire)
    }

    /// The oldest sequence that can still be read now (best effort, it moves on as the writer
    /// writes): the slot after the published cursor may be being overwritten already.
    pub fn oldest_available(&self) -> Seq {
        (self.published() + 2).saturating_sub(self.ring.capacity).max(self.ring.first_seq)
    }

    /// The next sequence this reader returns.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// Moves to `seq` (e.g. after re-synchronising from a snapshot).
    pub fn seek(&mut self, seq: Seq) {
        self.next = seq.max(self.ring.first_seq);
    }

    /// Moves past everything published so far (only new records will be read).
    pub fn seek_latest(&mut self) {
        self.next = self.published() + 1;
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }

    /// Process id of the ring's writer (0 for an in-process heap ring under loom).
    pub fn writer_pid(&self) -> u64 {
        self.ring.region.header(offsets::WRITER_PID)
    }

    /// Creation time of the writer's ring (ns since the Unix epoch): changes when a new writer
    /// replaced the file, so a long-lived reader can notice and re-open.
    pub fn writer_epoch(&self) -> u64 {
        self.ring.region.header(offsets::WRITER_EPOCH)
    }

    /// Whether the writer has closed the ring (its producer was dropped).
    pub fn is_writer_closed(&self) -> bool {
        self.ring.region.header(offsets::WRITER_STATE) == super::shm::WRITER_CLOSED
    }

    fn lapped(&mut self) -> Lapped {
        let expected = self.next;
        let oldest = self.oldest_available().max(expected + 1);
        self.next = oldest;
        Lapped { expected, oldest_available: oldest }
    }

    /// Reads the next record if it is published: `Ok(Some((seq, record)))`, `Ok(None)` if not yet,
    /// `Err(Lapped)` if it was overwritten (the reader then moves on, see [`Lapped`]).
    #[inline]
    pub fn try_read(&mut self) -> Result<Option<(Seq, T)>, Lapped> {
        match self.ring.read_checked::<T>(self.next) {
            SlotRead::Ok(v) => {
                let s = self.next;
                self.next += 1;
                Ok(Some((s, v)))
            }
            SlotRead::NotYet => Ok(None),
            SlotRead::Overwritten => Err(self.lapped()),
        }
    }

    /// Reads up to `limit` published records, calling `f(record, seq, end_of_batch)` for each
    /// valid copy in order. Returns how many were handled, or `Err(Lapped)` when the next record
    /// was overwritten (records handed to `f` before that were valid).
    pub fn poll<F: FnMut(&T, Seq, bool)>(&mut self, limit: usize, mut f: F) -> Result<usize, Lapped> {
        if limit == 0 {
            return Ok(0);
        }
        let published = self.published();
        if published < self.next {
            return Ok(0);
        }
        let hi = published.min(self.next.saturating_add(limit as u64 - 1));
        let mut n = 0;
        while self.next <= hi {
            match self.ring.read_checked::<T>(self.next) {
                SlotRead::Ok(v) => {
                    f(&v, self.next, self.next == hi);
                    self.next += 1;
                    n += 1;
                }
                SlotRead::NotYet => break,
                SlotRead::Overwritten => return Err(self.lapped()),
            }
        }
        Ok(n)
    }
}
