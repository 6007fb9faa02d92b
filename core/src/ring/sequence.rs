//! [`Sequence`]: a cache-line padded atomic sequence counter.

use super::sync::{AtomicU64, Ordering};
use crate::types::Seq;

/// A 64-bit sequence alone on 128 bytes (two cache lines, against the adjacent-line prefetcher),
/// so a producer's cursor and each consumer's progress never share a line with anything else.
///
/// Meaning by convention: the highest sequence a party has *finished* (published for a producer,
/// consumed for a consumer, made durable for a journal). 0 means none (sequences start at 1).
///
/// Ordering contract: [`Sequence::set`] is a Release store and [`Sequence::get`] an Acquire load.
/// Whoever stores `n` has finished every memory access for sequences `<= n` before the store;
/// whoever loads `n` sees those accesses completed. Concretely:
/// - a consumer's `set` (after it copied slot data out) pairs with the producer's `get` in its
///   wrap check, so the producer overwrites a slot only after the consumer's reads of it;
/// - a dependency's `set` (e.g. the journal's "durable up to") pairs with the `get` in a
///   [`super::SequenceBarrier`] that waits on it.
#[repr(C, align(128))]
pub struct Sequence {
    value: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Sequence>() >= 128);

impl Sequence {
    /// A sequence holding `initial`.
    pub fn new(initial: Seq) -> Sequence {
        Sequence { value: AtomicU64::new(initial) }
    }

    /// Acquire load; pairs with the Release of [`Sequence::set`] (see the type's docs).
    #[inline]
    pub fn get(&self) -> Seq {
        self.value.load(Ordering::Acquire)
    }

    /// Relaxed load, for the owner of the sequence reading its own value.
    #[inline]
    pub fn get_relaxed(&self) -> Seq {
        self.value.load(Ordering::Relaxed)
    }

    /// Release store; pairs with the Acquire of [`Sequence::get`] (see the type's docs).
    #[inline]
    pub fn set(&self, v: Seq) {
        self.value.store(v, Ordering::Release);
    }
}

impl Default for Sequence {
    fn default() -> Self {
        Sequence::new(0)
    }
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sequence").field(&self.value.load(Ordering::Relaxed)).finish()
    }
}

/// The minimum of `seqs` (Acquire loads, see [`Sequence`]), or `default` when empty.
#[inline]
pub(crate) fn min_sequence(seqs: &[super::sync::Arc<Sequence>], default: Seq) -> Seq {
    let mut m = default;
    for s in seqs {
        m = m.min(s.get());
    }
    m
}
