//! Synchronisation shim: std atomics normally, loom's model-checked atomics under `cfg(loom)`.
//!
//! Every ring module takes its atomics, `Arc`, fences and spin/yield/park primitives from here, so
//! the same code is checked by loom. Run the models with (a separate target dir, so the changed
//! `RUSTFLAGS` do not invalidate the shared one):
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     timeout 900 cargo test -p tickwire-core --release --lib ring::
//! ```

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

/// One busy-wait step. Under loom every spin must yield to the model scheduler.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the CPU to another runnable thread.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Sleeps (idle path only). Under loom a yield stands for it.
#[inline]
pub(crate) fn park(d: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = d;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    std::thread::sleep(d);
}
