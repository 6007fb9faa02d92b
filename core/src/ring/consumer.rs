//! Gating consumers ([`Consumer`]) and the [`SequenceBarrier`] they wait on.

use super::buffer::{ProducerKind, RingShared};
use super::doorbell::{ring_all, Doorbell};
use super::sequence::Sequence;
use super::sync::{Arc, AtomicBool, Ordering};
use super::wait::{IdleStrategy, WaitStrategyKind};
use super::Pod;
use crate::types::Seq;
use std::marker::PhantomData;

/// A barrier waited on by [`SequenceBarrier::wait_for`] was alerted (shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alerted;

impl std::fmt::Display for Alerted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sequence barrier alerted")
    }
}

impl std::error::Error for Alerted {}

/// Tells a consumer up to which sequence it may read: the producer's published records,
/// further limited by optional dependency sequences (consumers this one must stay behind, or a
/// journal's "durable up to"), all in this ring's sequence space.
pub struct SequenceBarrier {
    ring: Arc<RingShared>,
    deps: Vec<Arc<Sequence>>,
    alert: Arc<AtomicBool>,
}

impl SequenceBarrier {
    pub(crate) fn new(ring: Arc<RingShared>, deps: Vec<Arc<Sequence>>) -> SequenceBarrier {
        SequenceBarrier { ring, deps, alert: Arc::new(AtomicBool::new(false)) }
    }

    /// Adds a dependency: records above `seq.get()` are not available through this barrier.
    pub fn add_dependency(&mut self, seq: Arc<Sequence>) {
        self.deps.push(seq);
    }

    /// The highest sequence available now (every record from `next` to it may be read);
    /// `next - 1` or less when nothing is. Never blocks.
    #[inline]
    pub fn available(&self, next: Seq) -> Seq {
        let mut hi = match self.ring.kind {
            // Acquire: pairs with the Release cursor store of SingleProducer::publish.
            ProducerKind::Single => self.ring.region.cursor().load(Ordering::Acquire),
            // Relaxed: the claim cursor only bounds the scan; the stamps publish.
            ProducerKind::Multi => self.ring.region.cursor().load(Ordering::Relaxed),
        };
        for d in &self.deps {
            // Acquire (Sequence::get): pairs with the dependency's Release Sequence::set.
            hi = hi.min(d.get());
        }
        if self.ring.kind == ProducerKind::Multi {
            let mut s = next;
            // Acquire stamp loads: pair with the final Release stamp store of RingShared::write:
            // a record whose stamp shows its sequence is completely written and visible. The slot
            // cannot be reused before this consumer moves past it, so the stamp cannot move on.
            while s <= hi && self.ring.region.stamp(s).load(Ordering::Acquire) == s {
                s += 1;
            }
            hi = s - 1;
        }
        hi
    }

    /// Waits until `seq` is available (or the barrier is alerted) and returns the highest
    /// available sequence (>= `seq`), so the caller can take the whole batch.
    #[inline]
    pub fn wait_for(&self, seq: Seq, idle: &mut IdleStrategy) -> Result<Seq, Alerted> {
        loop {
            let hi = self.available(seq);
            if hi >= seq {
                idle.reset();
                return Ok(hi);
            }
            if self.is_alerted() {
                return Err(Alerted);
            }
            idle.idle_once();
        }
    }

    /// Makes current and future `wait_for` calls return `Err(Alerted)` while nothing is available.
    pub fn alert(&self) {
        // Release: pairs with the Acquire load in is_alerted.
        self.alert.store(true, Ordering::Release);
        // Wakes a consumer parked on its doorbell (every consumer of the ring: the barrier does
        // not know which one is its own; the others take one spurious wake).
        ring_all(self.ring.bells.iter());
    }

    /// Clears the alert.
    pub fn clear_alert(&self) {
        // Release: as in alert.
        self.alert.store(false, Ordering::Release);
    }

    /// Whether alerted.
    pub fn is_alerted(&self) -> bool {
        // Acquire: pairs with the Release store of alert.
        self.alert.load(Ordering::Acquire)
    }

    /// The flag `alert` sets, to alert this barrier from another thread.
    pub fn alert_flag(&self) -> Arc<AtomicBool> {
        self.alert.clone()
    }

    /// Whether the single producer has been dropped (every record it wrote is published).
    pub fn is_producer_closed(&self) -> bool {
        // Acquire: pairs with the Release store in SingleProducer's Drop.
        self.ring.closed.load(Ordering::Acquire)
    }
}

/// A consumer that gates the producer: the producer never overwrites a record this consumer has
/// not yet released (its [`Sequence`] is the highest sequence it has finished with).
///
/// Dropping a consumer sets its sequence to `Seq::MAX`, so a consumer that is gone no longer
/// gates the producer (a dead consumer must not stall the engine).
pub struct Consumer<T: Pod> {
    barrier: SequenceBarrier,
    seq: Arc<Sequence>,
    /// Next sequence to read.
    next: Seq,
    /// Highest sequence known to be available (cached barrier answer).
    avail: Seq,
    idle: IdleStrategy,
    /// Rung by the producers after each publish (and by whatever else this consumer is made to
    /// wait on, e.g. a journal's durable barrier).
    bell: Arc<Doorbell>,
    _t: PhantomData<T>,
}

impl<T: Pod> Consumer<T> {
    pub(crate) fn new(barrier: SequenceBarrier, seq: Arc<Sequence>, bell: Arc<Doorbell>, wait: WaitStrategyKind) -> Consumer<T> {
        let next = seq.get_relaxed() + 1;
        Consumer { barrier, seq, next, avail: next - 1, idle: wait.idle_strategy(), bell, _t: PhantomData }
    }

    /// Handles up to `limit` available records without waiting: calls `f(record, seq,
    /// end_of_batch)` for each, in sequence order, then releases them to the producer. Returns
    /// how many were handled (0 when none was available).
    #[inline]
    pub fn poll<F: FnMut(&T, Seq, bool)>(&mut self, limit: usize, mut f: F) -> usize {
        if limit == 0 {
            return 0;
        }
        if self.avail < self.next {
            self.avail = self.barrier.available(self.next);
            if self.avail < self.next {
                return 0;
            }
        }
        let lo = self.next;
        let hi = self.avail.min(lo.saturating_add(limit as u64 - 1));
        for s in lo..=hi {
            let v = self.barrier.ring.read::<T>(s);
            f(&v, s, s == hi);
        }
        self.next = hi + 1;
        // Release (Sequence::set): pairs with the producers' Acquire gating loads: our reads of
        // these slots happen-before they are overwritten.
        self.seq.set(hi);
        (hi - lo + 1) as usize
    }

    /// Like [`Consumer::poll`] but waits (with the ring's wait strategy) for at least one record;
    /// `Err(Alerted)` if the barrier is alerted while nothing is available.
    pub fn poll_wait<F: FnMut(&T, Seq, bool)>(&mut self, limit: usize, f: F) -> Result<usize, Alerted> {
        if self.avail < self.next {
            self.avail = self.barrier.wait_for(self.next, &mut self.idle)?;
        }
        Ok(self.poll(limit, f))
    }

    /// The highest sequence available now (asks the barrier), without consuming.
    pub fn available(&mut self) -> Seq {
        self.avail = self.avail.max(self.barrier.available(self.next));
        self.avail
    }

    /// A copy of the available, not yet released record `seq` (`next_seq() <= seq <=
    /// available()`), without consuming it; `None` outside that range.
    pub fn peek(&self, seq: Seq) -> Option<T> {
        (seq >= self.next && seq <= self.avail).then(|| self.barrier.ring.read::<T>(seq))
    }

    /// The next sequence this consumer will read.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// This consumer's progress sequence (what the producer is gated on), e.g. to make another
    /// consumer depend on this one.
    pub fn sequence(&self) -> Arc<Sequence> {
        self.seq.clone()
    }

    /// This consumer's doorbell: the ring's producers ring it after each publish, so a thread
    /// that parks on it ([`Doorbell::prepare_park`], re-check [`Consumer::available`], then
    /// sleep) is woken as soon as records arrive. Another sequence this consumer depends on must
    /// ring it too when it advances (e.g. `DurableSeq::ring_on_publish`).
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.bell.clone()
    }

    /// Whether records are available now (asks the barrier), without consuming.
    #[inline]
    pub fn has_available(&mut self) -> bool {
        self.available() >= self.next
    }

    /// The barrier (to add dependencies or alert it).
    pub fn barrier(&self) -> &SequenceBarrier {
        &self.barrier
    }

    /// The barrier, mutably (to add dependencies before consuming).
    pub fn barrier_mut(&mut self) -> &mut SequenceBarrier {
        &mut self.barrier
    }
}

impl<T: Pod> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Release: as in poll; releases every slot for good.
        self.seq.set(Seq::MAX);
    }
}
