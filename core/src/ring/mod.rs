//! Disruptor-style lock-free rings.
//!
//! A ring has a fixed power-of-two number of slots, allocated once on the heap or mapped once
//! from a file (layout: `shm.rs`). Records are [`Pod`] values whose size is a multiple of 8
//! (`Command` and `Event` are 64 bytes); record `s` (1-based sequence, equal to the record's own
//! `seq` field) lives in slot `s & (capacity - 1)`.
//!
//! - [`RingBuffer`]: creates the storage and splits it into one producer and N gating consumers.
//! - [`SingleProducer`]: one writer (the engine's events). Writes in place, publishes a batch with
//!   one Release store of the cursor.
//! - [`MultiProducer`]: clonable writers (gateway threads' commands). CAS-claims sequences,
//!   publishes each record by its slot stamp; consumers see the contiguous published prefix.
//! - [`Consumer`] + [`SequenceBarrier`]: gating consumers; the producer never overwrites what a
//!   gating consumer has not released. The barrier answers "highest available", so consumers
//!   take whole batches (`end_of_batch`), and may depend on other sequences (e.g. a journal's
//!   "durable up to").
//! - [`LossyReader`]: never gates the producer (other processes, read-only mappings); seqlock
//!   stamps detect overwritten slots, reported as [`Lapped`].
//! - [`WaitStrategyKind`] / [`IdleStrategy`]: busy-spin, yielding, backoff (default).
//! - [`Doorbell`]: one per consumer; the producers ring them after each publish, so a consumer
//!   whose backoff reached its sleeping phase is woken at once (a system call only then).
//! - [`book_image`]: not a ring: the companion shared-memory region of aggregated books at a known
//!   event sequence (seqlock double buffer), from which lapped or late feed shards resynchronise.
//!
//! Every slot word is accessed through 64-bit atomics (Relaxed) so concurrent lossy readers are
//! never a data race; ordering comes from the Release/Acquire pairs documented at each atomic
//! operation. Loom models: `loom_tests.rs` (command in `sync.rs`).

#[cfg(not(loom))]
pub mod book_image;
mod buffer;
mod consumer;
mod doorbell;
mod lossy;
mod producer;
mod sequence;
pub mod shm;
pub(crate) mod sync;
mod wait;

#[cfg(all(test, loom))]
mod loom_tests;

pub use buffer::{ProducerKind, RingBuffer};
pub use consumer::{Alerted, Consumer, SequenceBarrier};
pub use doorbell::{ring_all, Doorbell, Waker};
pub use lossy::{Lapped, LossyReader};
pub use producer::{MultiProducer, SingleProducer};
pub use sequence::Sequence;
pub use wait::{IdleStrategy, WaitStrategyKind, DOORBELL_PARK_MAX};

use std::fmt;
use std::path::PathBuf;

/// Plain old data: a `Copy` type for which every bit pattern is a valid value and which has no
/// padding bytes, so it may be copied from shared memory that another process writes, even while
/// being overwritten (a torn copy is detected by sequence checks, never used as a value).
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers (or arrays of them) with no padding.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

// SAFETY: integers: any bit pattern is valid, no padding.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: arrays of u64: any bit pattern is valid, no padding.
unsafe impl<const N: usize> Pod for [u64; N] {}

/// The ring was full (nothing was written or claimed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring full")
    }
}

impl std::error::Error for Full {}

/// Why a ring could not be created or attached.
#[derive(Debug)]
pub enum RingError {
    /// Capacity not a power of two in 2..=2^40.
    Capacity(usize),
    /// Record size not a non-zero multiple of 8 (or alignment above 8).
    SlotSize(usize),
    /// First sequence 0 or too large.
    FirstSeq(u64),
    /// Allocation of this many bytes failed.
    Alloc(usize),
    /// File error.
    Io(PathBuf, std::io::Error),
    /// The file's header is not a ring of this record type (or not initialised yet).
    Header(String),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Capacity(c) => write!(f, "ring capacity {c} is not a power of two in 2..=2^40"),
            RingError::SlotSize(s) => write!(f, "record size {s} is not a non-zero multiple of 8 (alignment <= 8)"),
            RingError::FirstSeq(s) => write!(f, "first sequence {s} out of range"),
            RingError::Alloc(n) => write!(f, "cannot allocate {n} bytes for a ring"),
            RingError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            RingError::Header(m) => write!(f, "ring header: {m}"),
        }
    }
}

impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}
