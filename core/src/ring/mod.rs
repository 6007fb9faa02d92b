//! Disruptor-style lock-free rings. (Filled in by the ring work: see `ring/` files.)

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
