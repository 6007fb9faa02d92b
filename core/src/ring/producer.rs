//! Producers: [`SingleProducer`] (the engine's outbound events) and [`MultiProducer`] (inbound
//! commands from several gateway threads).

use super::buffer::{ProducerKind, RingShared};
use super::doorbell::ring_all;
use super::sequence::min_sequence;
use super::sync::{Arc, Ordering};
use super::wait::{IdleStrategy, WaitStrategyKind};
use super::{Full, LossyReader, Pod};
use crate::types::Seq;
use std::marker::PhantomData;

/// The only producer of a single-producer ring. Records are written straight into their slot
/// ([`SingleProducer::push`]) and become visible to consumers together at
/// [`SingleProducer::publish`] (end of batch: one Release store of the cursor).
///
/// When the ring is full, `push` first publishes what it has written (consumers can only free
/// space for records they can see; waiting without publishing would deadlock), then waits with
/// the ring's wait strategy.
pub struct SingleProducer<T: Pod> {
    ring: Arc<RingShared>,
    /// Next sequence to write.
    next: Seq,
    /// Last sequence stored into the cursor.
    published: Seq,
    /// Cached minimum of the gating sequences (a lower bound of the real one).
    cached_gating: Seq,
    idle: IdleStrategy,
    _t: PhantomData<T>,
}

impl<T: Pod> SingleProducer<T> {
    pub(crate) fn new(ring: Arc<RingShared>, wait: WaitStrategyKind) -> SingleProducer<T> {
        debug_assert_eq!(ring.kind, ProducerKind::Single);
        let first = ring.first_seq;
        SingleProducer {
            ring,
            next: first,
            published: first - 1,
            cached_gating: first - 1,
            idle: wait.idle_strategy(),
            _t: PhantomData,
        }
    }

    /// Whether the slot of `seq` may be (over)written: its previous record `seq - capacity` has
    /// been consumed by every gating consumer.
    #[inline(always)]
    fn has_space_for(&mut self, seq: Seq) -> bool {
        let wrap = seq.saturating_sub(self.ring.capacity);
        if wrap <= self.cached_gating {
            return true;
        }
        // Acquire loads (Sequence::get): pair with each consumer's Release `Sequence::set` after
        // it copied its records out, so our coming stores to the slot cannot affect those reads.
        self.cached_gating = min_sequence(&self.ring.gating, Seq::MAX);
        wrap <= self.cached_gating
    }

    /// Writes `value` as the next record without publishing it, if there is space.
    #[inline]
    pub fn try_push(&mut self, value: &T) -> Result<Seq, Full> {
        let seq = self.next;
        if !self.has_space_for(seq) {
            return Err(Full);
        }
        self.ring.write(seq, value);
        self.next = seq + 1;
        Ok(seq)
    }

    /// Writes `value` as the next record (not yet published), waiting for space if the ring is
    /// full (after publishing what was written).
    #[inline]
    pub fn push(&mut self, value: &T) -> Seq {
        match self.push_until(value, || false) {
            Ok(s) => s,
            Err(Full) => unreachable!("push waits until there is space"),
        }
    }

    /// Writes the record `make(seq)` for the next sequence (e.g. to stamp the sequence into it).
    #[inline]
    pub fn push_with(&mut self, make: impl FnOnce(Seq) -> T) -> Seq {
        let v = make(self.next);
        self.push(&v)
    }

    /// Like [`SingleProducer::push`], but while waiting for space calls `give_up` after each wait
    /// step and returns `Err(Full)` (nothing written) when it says true.
    #[inline]
    pub fn push_until(&mut self, value: &T, mut give_up: impl FnMut() -> bool) -> Result<Seq, Full> {
        let seq = self.next;
        if !self.has_space_for(seq) {
            // Full: publish first, or consumers never see (and never free) the batch so far.
            self.publish();
            loop {
                self.idle.idle_once();
                if self.has_space_for(seq) {
                    break;
                }
                if give_up() {
                    self.idle.reset();
                    return Err(Full);
                }
            }
            self.idle.reset();
        }
        self.ring.write(seq, value);
        self.next = seq + 1;
        Ok(seq)
    }

    /// Makes every record written so far visible to consumers.
    #[inline]
    pub fn publish(&mut self) {
        let hi = self.next - 1;
        if hi != self.published {
            // Release: pairs with the Acquire cursor load of SequenceBarrier::available (and of
            // lossy readers): the records up to `hi` are visible to whoever sees `hi`.
            self.ring.region.cursor().store(hi, Ordering::Release);
            self.published = hi;
            // After the Release store: a consumer parked on its doorbell is woken (a system call
            // only if one is parked; doorbell.rs).
            ring_all(self.ring.bells.iter());
        }
    }

    /// The sequence the next record gets.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// Highest published sequence.
    pub fn published_seq(&self) -> Seq {
        self.published
    }

    /// Records written but not yet published.
    pub fn pending(&self) -> u64 {
        self.next - 1 - self.published
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }

    /// The minimum of the gating consumers' sequences now (`Seq::MAX` without gating consumers).
    pub fn min_gating_seq(&self) -> Seq {
        min_sequence(&self.ring.gating, Seq::MAX)
    }

    /// A reader that never blocks this producer and detects being lapped; starts at the oldest
    /// record still available.
    pub fn lossy_reader(&self) -> LossyReader<T> {
        LossyReader::from_shared(self.ring.clone())
    }
}

impl<T: Pod> Drop for SingleProducer<T> {
    fn drop(&mut self) {
        self.publish();
        self.ring.region.set_writer_state(super::shm::WRITER_CLOSED);
        // Release: pairs with the Acquire load in SequenceBarrier::is_producer_closed.
        self.ring.closed.store(true, Ordering::Release);
        // Parked consumers see the close now rather than when their park times out.
        ring_all(self.ring.bells.iter());
    }
}

/// A producer handle of a multi-producer ring; clone one per thread. Each record is claimed by a
/// CAS on the shared claim cursor (never past the gating consumers: a full ring makes `send` wait
/// and `try_send` fail, with nothing claimed), written, and published by its slot's stamp.
/// Consumers see the contiguous prefix of published records, in sequence order.
pub struct MultiProducer<T: Pod> {
    ring: Arc<RingShared>,
    idle: IdleStrategy,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for MultiProducer<T> {
    fn clone(&self) -> Self {
        MultiProducer { ring: self.ring.clone(), idle: self.idle.kind().idle_strategy(), _t: PhantomData }
    }
}

impl<T: Pod> MultiProducer<T> {
    pub(crate) fn new(ring: Arc<RingShared>, wait: WaitStrategyKind) -> MultiProducer<T> {
        debug_assert_eq!(ring.kind, ProducerKind::Multi);
        MultiProducer { ring, idle: wait.idle_strategy(), _t: PhantomData }
    }

    /// Claims `n` consecutive sequences; returns the first. Waits for space when `wait`.
    #[inline]
    fn claim(&mut self, n: u64, wait: bool) -> Result<Seq, Full> {
        assert!(n >= 1 && n <= self.ring.capacity, "claim of {n} records in a ring of {}", self.ring.capacity);
        let cursor = self.ring.region.cursor();
        let cache = self.ring.region.gating_cache();
        loop {
            // Relaxed: the claim cursor carries no data (records are published by their stamps);
            // the CAS below makes claims unique.
            let current = cursor.load(Ordering::Relaxed);
            let hi = current + n;
            let wrap = hi.saturating_sub(self.ring.capacity);
            // Acquire: pairs with the Release store of the cache below by another producer, made
            // after its Acquire loads of the gating sequences: the consumers' reads of the slots
            // up to the cached value happen-before our writes.
            if wrap > cache.load(Ordering::Acquire) {
                // Acquire loads: pair with the consumers' Release `Sequence::set`.
                let min = min_sequence(&self.ring.gating, Seq::MAX);
                // Release: pairs with the Acquire cache load above (other producers).
                cache.store(min, Ordering::Release);
                if wrap > min {
                    if !wait {
                        return Err(Full);
                    }
                    self.idle.idle_once();
                    continue;
                }
            }
            // Relaxed (success and failure): only uniqueness is needed, see the load above.
            if cursor.compare_exchange_weak(current, hi, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.idle.reset();
                return Ok(current + 1);
            }
        }
    }

    /// Claims the next sequence, waiting for space, and publishes `make(seq)` there.
    #[inline]
    pub fn send_with(&mut self, make: impl FnOnce(Seq) -> T) -> Seq {
        let seq = match self.claim(1, true) {
            Ok(s) => s,
            Err(Full) => unreachable!("a waiting claim does not fail"),
        };
        self.ring.write(seq, &make(seq));
        // After the stamp's Release store (doorbell.rs).
        ring_all(self.ring.bells.iter());
        seq
    }

    /// Like [`MultiProducer::send_with`] but fails (claiming nothing) when the ring is full.
    #[inline]
    pub fn try_send_with(&mut self, make: impl FnOnce(Seq) -> T) -> Result<Seq, Full> {
        let seq = self.claim(1, false)?;
        self.ring.write(seq, &make(seq));
        // After the stamp's Release store (doorbell.rs).
        ring_all(self.ring.bells.iter());
        Ok(seq)
    }

    /// Publishes `value` unchanged; returns its sequence.
    #[inline]
    pub fn send(&mut self, value: &T) -> Seq {
        self.send_with(|_| *value)
    }

    /// Claims `n` (1..=capacity) consecutive sequences at once and publishes `make(i, seq)` for
    /// i in 0..n; returns the first and last sequence. `make` must not panic: a claimed record
    /// that is never written stalls every consumer.
    #[inline]
    pub fn send_batch_with(&mut self, n: usize, mut make: impl FnMut(usize, Seq) -> T) -> (Seq, Seq) {
        let lo = match self.claim(n as u64, true) {
            Ok(s) => s,
            Err(Full) => unreachable!("a waiting claim does not fail"),
        };
        for i in 0..n {
            let seq = lo + i as u64;
            self.ring.write(seq, &make(i, seq));
        }
        // After the stamps' Release stores (doorbell.rs).
        ring_all(self.ring.bells.iter());
        (lo, lo + n as u64 - 1)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.capacity as usize
    }

    /// Highest sequence claimed so far (published or not).
    pub fn claimed_seq(&self) -> Seq {
        // Relaxed: an informative snapshot.
        self.ring.region.cursor().load(Ordering::Relaxed)
    }
}
