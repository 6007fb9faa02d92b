//! [`RingBuffer`]: creation and splitting into a producer and its gating consumers; the slot
//! read/write protocol shared by every handle.

use super::consumer::{Consumer, SequenceBarrier};
use super::doorbell::Doorbell;
use super::producer::{MultiProducer, SingleProducer};
use super::sequence::Sequence;
use super::shm::{Layout, Region, STAMP_BUSY};
use super::sync::{fence, Arc, AtomicBool, Ordering};
use super::wait::WaitStrategyKind;
use super::{Pod, RingError};
use crate::types::Seq;
use std::marker::PhantomData;

/// Who publishes into a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerKind {
    /// One thread owns the [`SingleProducer`]; the cursor is the highest published sequence.
    Single,
    /// Any number of [`MultiProducer`] clones; the cursor is the highest claimed sequence and a
    /// slot's stamp tells whether it is published.
    Multi,
}

/// State shared by a ring's producer(s) and consumers (not generic: barriers need no `T`).
pub(crate) struct RingShared {
    pub(crate) region: Region,
    pub(crate) kind: ProducerKind,
    /// The gating consumers' sequences, fixed when the ring is split.
    pub(crate) gating: Box<[Arc<Sequence>]>,
    /// The gating consumers' doorbells (same order), rung by the producers after each publish.
    pub(crate) bells: Box<[Arc<Doorbell>]>,
    pub(crate) capacity: u64,
    pub(crate) first_seq: Seq,
    /// Set when the producer handle is gone (single) or on request; wakes barrier waiters.
    pub(crate) closed: AtomicBool,
}

impl RingShared {
    /// Writes `value` as record `seq` with the seqlock protocol of `shm.rs`.
    #[inline(always)]
    pub(crate) fn write<T: Pod>(&self, seq: Seq, value: &T) {
        let stamp = self.region.stamp(seq);
        // Relaxed: ordered before the record stores by the fence below.
        stamp.store(seq | STAMP_BUSY, Ordering::Relaxed);
        // Release fence: pairs with the Acquire fence of `read_checked`: a reader that sees any
        // word stored below also sees the busy stamp (or later) on its second stamp load.
        fence(Ordering::Release);
        let words = self.region.slot(seq);
        let src = value as *const T as *const u64;
        for (i, w) in words.iter().enumerate() {
            // SAFETY: `T: Pod` and size_of::<T>() == 8 * words.len() (checked at creation), so
            // word i is inside `value`; read_unaligned copes with T's alignment.
            let v = unsafe { src.add(i).read_unaligned() };
            // Relaxed: published by the Release store of the stamp (and, single producer, of the
            // cursor).
            w.store(v, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire stamp loads of multi-producer barriers and of lossy
        // readers: they see the record complete.
        stamp.store(seq, Ordering::Release);
    }

    /// Copies record `seq` out. The caller must know the slot holds `seq` and will not be
    /// overwritten during the copy (a gating consumer after its barrier said so).
    #[inline(always)]
    pub(crate) fn read<T: Pod>(&self, seq: Seq) -> T {
        let words = self.region.slot(seq);
        let mut out = std::mem::MaybeUninit::<T>::uninit();
        let dst = out.as_mut_ptr() as *mut u64;
        for (i, w) in words.iter().enumerate() {
            // Relaxed: the Acquire that made the record visible was done by the barrier (cursor
            // or stamp load).
            let v = w.load(Ordering::Relaxed);
            // SAFETY: word i is inside `out` (size_of::<T>() == 8 * words.len()).
            unsafe { dst.add(i).write_unaligned(v) };
        }
        // SAFETY: every byte of `out` was written above and `T: Pod` accepts any bit pattern.
        unsafe { out.assume_init() }
    }

    /// Seqlock read of record `seq` for a reader that does not gate the producer.
    #[inline(always)]
    pub(crate) fn read_checked<T: Pod>(&self, seq: Seq) -> SlotRead<T> {
        let stamp = self.region.stamp(seq);
        // Acquire: pairs with the final Release stamp store of `write`: the record words of `seq`
        // are visible if the stamp says `seq`.
        let s1 = stamp.load(Ordering::Acquire);
        if s1 != seq {
            let s = s1 & !STAMP_BUSY;
            return if s1 != 0 && s > seq { SlotRead::Overwritten } else { SlotRead::NotYet };
        }
        let value = self.read::<T>(seq);
        // Acquire fence: pairs with the Release fence of `write`: if the copy read any word of a
        // later record, the reload below sees that record's busy stamp (or a later one).
        fence(Ordering::Acquire);
        // Relaxed: ordered after the copy by the fence above.
        let s2 = stamp.load(Ordering::Relaxed);
        if s2 == seq {
            SlotRead::Ok(value)
        } else {
            SlotRead::Overwritten
        }
    }
}

/// Result of a seqlock read.
pub(crate) enum SlotRead<T> {
    /// A complete, untorn copy.
    Ok(T),
    /// Not yet written (or being written).
    NotYet,
    /// A later record is (or was during the copy) in the slot: the reader was lapped.
    Overwritten,
}

/// A ring of fixed power-of-two capacity, allocated once (heap) or mapped once (file), not yet
/// split into producer and consumers. See [`super`] for the protocol and `shm.rs` for the layout.
pub struct RingBuffer<T: Pod> {
    region: Region,
    first_seq: Seq,
    _t: PhantomData<T>,
}

impl<T: Pod> RingBuffer<T> {
    fn check_type() -> Result<usize, RingError> {
        let size = std::mem::size_of::<T>();
        if size == 0 || size & 7 != 0 || std::mem::align_of::<T>() > 8 {
            return Err(RingError::SlotSize(size));
        }
        Ok(size)
    }

    /// A heap ring of `capacity` slots (a power of two >= 2) whose first record is sequence 1.
    pub fn heap(capacity: usize) -> Result<RingBuffer<T>, RingError> {
        RingBuffer::heap_from(capacity, 1)
    }

    /// A heap ring whose first record is `first_seq` (>= 1), e.g. an engine's next event sequence
    /// after recovery.
    pub fn heap_from(capacity: usize, first_seq: Seq) -> Result<RingBuffer<T>, RingError> {
        let layout = Layout::new(capacity, Self::check_type()?)?;
        if first_seq == 0 || first_seq >= STAMP_BUSY {
            return Err(RingError::FirstSeq(first_seq));
        }
        Ok(RingBuffer { region: Region::heap(layout, first_seq)?, first_seq, _t: PhantomData })
    }

    /// A ring in the file `path` (e.g. `/dev/shm/tickwire-events`), created or atomically
    /// replaced, that readers in other processes open with [`super::LossyReader::open`].
    #[cfg(not(loom))]
    pub fn create_shm(path: &std::path::Path, capacity: usize, first_seq: Seq) -> Result<RingBuffer<T>, RingError> {
        let layout = Layout::new(capacity, Self::check_type()?)?;
        if first_seq == 0 || first_seq >= STAMP_BUSY {
            return Err(RingError::FirstSeq(first_seq));
        }
        Ok(RingBuffer { region: Region::create_file(path, layout, first_seq)?, first_seq, _t: PhantomData })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.region.layout().capacity
    }

    fn split(self, kind: ProducerKind, gating_consumers: usize, wait: WaitStrategyKind) -> (Arc<RingShared>, Vec<Consumer<T>>) {
        let seqs: Vec<Arc<Sequence>> = (0..gating_consumers).map(|_| Arc::new(Sequence::new(self.first_seq - 1))).collect();
        let bells: Vec<Arc<Doorbell>> = (0..gating_consumers).map(|_| Arc::new(Doorbell::new())).collect();
        let capacity = self.region.layout().capacity as u64;
        let shared = Arc::new(RingShared {
            region: self.region,
            kind,
            gating: seqs.clone().into_boxed_slice(),
            bells: bells.clone().into_boxed_slice(),
            capacity,
            first_seq: self.first_seq,
            closed: AtomicBool::new(false),
        });
        let consumers = seqs
            .into_iter()
            .zip(bells)
            .map(|(seq, bell)| Consumer::new(SequenceBarrier::new(shared.clone(), Vec::new()), seq, bell, wait))
            .collect();
        (shared, consumers)
    }

    /// Splits into the single producer and `gating_consumers` consumers that it waits for
    /// (0 = a broadcast ring that never blocks its producer; only lossy readers then).
    pub fn into_single_producer(self, gating_consumers: usize, wait: WaitStrategyKind) -> (SingleProducer<T>, Vec<Consumer<T>>) {
        let (shared, consumers) = self.split(ProducerKind::Single, gating_consumers, wait);
        (SingleProducer::new(shared, wait), consumers)
    }

    /// Splits into a (clonable) multi producer and `gating_consumers` consumers.
    pub fn into_multi_producer(self, gating_consumers: usize, wait: WaitStrategyKind) -> (MultiProducer<T>, Vec<Consumer<T>>) {
        let (shared, consumers) = self.split(ProducerKind::Multi, gating_consumers, wait);
        (MultiProducer::new(shared, wait), consumers)
    }
}
