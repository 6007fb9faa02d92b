//! [`Doorbell`]: lets an idle waiter sleep until a producer publishes, with a system call on the
//! producer's side only when the waiter really is asleep ("signal only when parked": the idea of
//! the Disruptor's `LiteBlockingWaitStrategy`, without its lock).
//!
//! Every consumer of a ring has one; the ring's producers [`ring`](Doorbell::ring) all of them
//! after each publish, and a journal's durable barrier rings those of the consumers it gates. A
//! busy pipeline never parks, so its producers only pay a fence and a load per doorbell; the
//! system call (a futex wake, or the waiter's own waker such as an eventfd) happens only when a
//! waiter announced it was going to sleep, i.e. when the waiter had nothing to do.
//!
//! Protocol (Dekker style: the two `SeqCst` fences are totally ordered, so at least one side sees
//! the other's store):
//! - waiter: [`prepare_park`](Doorbell::prepare_park) (state = `PARKED`, then a `SeqCst` fence),
//!   then re-check its condition (e.g. `Consumer::available`); if there is work,
//!   [`cancel_park`](Doorbell::cancel_park); otherwise [`park_timeout`](Doorbell::park_timeout)
//!   (futex wait while the state is `PARKED`), or block elsewhere (epoll) after
//!   [`set_waker`](Doorbell::set_waker) and `cancel_park` when that returns.
//! - ringer: publish (its `Release` store), then `ring`: a `SeqCst` fence, a load of the state,
//!   and only if `PARKED`: swap it to `AWAKE` and, if it was still `PARKED` (one ringer wins),
//!   wake the waiter.
//!
//! If the waiter's fence comes first, the ringer's load sees `PARKED` and wakes it (a futex wait
//! that starts after the swap returns at once: the kernel compares the word); if the ringer's
//! comes first, the waiter's re-check sees the published data and it does not sleep. Every park
//! is bounded by its caller's timeout as well, so a signal that rings nobody (a state change that
//! is not a publish, if one were missed) costs at most that timeout.
//!
//! A doorbell has **one waiter** (the thread that owns the consumer): two parkers could lose a
//! wake, since one's `cancel_park` clears the other's announcement. Any number of ringers.

use super::sync::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const AWAKE: u32 = 0;
const PARKED: u32 = 1;

/// Wakes the waiter when the doorbell rings (instead of a futex wake), e.g. an eventfd write for
/// a waiter that blocks in `epoll_wait`.
pub type Waker = Box<dyn Fn() + Send + Sync>;

/// See the module documentation. Cache-line aligned (two lines, like [`super::Sequence`]): the
/// state is written by its waiter and read by every publish.
#[repr(align(128))]
pub struct Doorbell {
    state: AtomicU32,
    waker: OnceLock<Waker>,
    /// Wake-ups sent (rings that found the waiter parked).
    wakes: AtomicU64,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell::new()
    }
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("parked", &self.is_parked())
            .field("wakes", &self.wakes())
            .field("custom_waker", &self.waker.get().is_some())
            .finish()
    }
}

impl Doorbell {
    /// An awake doorbell that wakes its waiter with a futex (until [`Doorbell::set_waker`]).
    pub fn new() -> Doorbell {
        Doorbell { state: AtomicU32::new(AWAKE), waker: OnceLock::new(), wakes: AtomicU64::new(0) }
    }

    /// Makes rings call `w` instead of waking a futex waiter (a waiter that blocks in its own
    /// call, such as `epoll_wait` with an eventfd registered). Only the first call takes effect;
    /// returns whether this one did.
    pub fn set_waker(&self, w: Waker) -> bool {
        self.waker.set(w).is_ok()
    }

    /// Waiter: announces that it is about to sleep. The caller must then re-check its condition
    /// and either [`Doorbell::cancel_park`] or sleep ([`Doorbell::park_timeout`], or its own
    /// blocking call followed by `cancel_park`).
    #[inline]
    pub fn prepare_park(&self) {
        // Relaxed: ordered before the caller's re-check by the SeqCst fence, which pairs with
        // the SeqCst fence of `ring` (module documentation).
        self.state.store(PARKED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Waiter: back to awake (it found work after `prepare_park`, or its own blocking call
    /// returned). A ring that comes later finds it awake and makes no system call.
    #[inline]
    pub fn cancel_park(&self) {
        // Relaxed: only decides whether a later ring makes a system call; a ring that swapped
        // the state first already did (one spurious wake at most).
        self.state.store(AWAKE, Ordering::Relaxed);
    }

    /// Waiter, after [`Doorbell::prepare_park`] and a re-check that found nothing: sleeps until
    /// rung or `timeout` passes. Returns whether it was rung. Always leaves the doorbell awake.
    pub fn park_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Acquire: pairs with the AcqRel swap of `ring`: what the ringer published before
            // ringing is visible (the caller re-reads it through its own Acquire loads anyway).
            if self.state.load(Ordering::Acquire) == AWAKE {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                // Acquire swap (pairs with `ring`'s AcqRel swap): whoever wins, the doorbell ends
                // awake; if a ringer swapped first, report the ring.
                return self.state.swap(AWAKE, Ordering::Acquire) == AWAKE;
            }
            futex_wait(&self.state, PARKED, deadline - now);
        }
    }

    /// Ringer, after publishing: wakes the waiter if it is parked (or about to be).
    #[inline]
    pub fn ring(&self) {
        // SeqCst: pairs with the SeqCst fence of `prepare_park` (module documentation).
        fence(Ordering::SeqCst);
        self.ring_after_fence();
    }

    /// `ring` without its fence, for [`ring_all`], which fences once for many doorbells.
    #[inline]
    fn ring_after_fence(&self) {
        // Relaxed load: ordered after the caller's publish by the SeqCst fence; AcqRel swap:
        // one ringer wins the PARKED -> AWAKE transition (pairs with the Acquire loads of
        // `park_timeout`).
        if self.state.load(Ordering::Relaxed) == PARKED && self.state.swap(AWAKE, Ordering::AcqRel) == PARKED {
            // Relaxed: a statistic.
            self.wakes.fetch_add(1, Ordering::Relaxed);
            match self.waker.get() {
                Some(w) => w(),
                None => futex_wake(&self.state),
            }
        }
    }

    /// Whether a waiter announced that it sleeps (a snapshot).
    pub fn is_parked(&self) -> bool {
        // Relaxed: informative.
        self.state.load(Ordering::Relaxed) == PARKED
    }

    /// Rings that found the waiter parked (each one a wake-up system call).
    pub fn wakes(&self) -> u64 {
        // Relaxed: a statistic.
        self.wakes.load(Ordering::Relaxed)
    }
}

/// Rings every doorbell in `bells` after one fence (none, and no fence, if `bells` is empty): the
/// producers' rings after a publish, a durable barrier's after its.
#[inline]
pub fn ring_all<I>(bells: I)
where
    I: IntoIterator,
    I::Item: AsRef<Doorbell>,
{
    let mut bells = bells.into_iter().peekable();
    if bells.peek().is_none() {
        return;
    }
    // SeqCst: pairs with the SeqCst fence of each waiter's `prepare_park`.
    fence(Ordering::SeqCst);
    for b in bells {
        b.as_ref().ring_after_fence();
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT_PRIVATE reads the aligned u32 behind `as_ptr` (alive for the call:
    // `word` is borrowed) and sleeps while it equals `expected`, up to the relative timeout in
    // `ts` (a valid timespec on our stack).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc != 0 {
        // EINTR, EAGAIN (the word changed: rung) and ETIMEDOUT are handled by the caller's loop,
        // which re-reads the word and the clock. Anything else (no futexes: ENOSYS) must not
        // turn the park into a busy loop: sleep the time instead.
        let e = std::io::Error::last_os_error().raw_os_error();
        if !matches!(e, Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ETIMEDOUT)) {
            std::thread::sleep(timeout);
        }
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE_PRIVATE only uses the address as a key (the word is alive: borrowed);
    // it wakes at most one waiter (a doorbell has one).
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1i32);
    }
}

/// Without futexes (loom models, other systems) a park is a short sleep and a wake does nothing:
/// the timeout bounds the wait, as with the old sleeping backoff.
#[cfg(not(all(target_os = "linux", not(loom))))]
fn futex_wait(_word: &AtomicU32, _expected: u32, timeout: Duration) {
    super::sync::park(timeout.min(Duration::from_micros(50)));
}

#[cfg(not(all(target_os = "linux", not(loom))))]
fn futex_wake(_word: &AtomicU32) {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64 as StdU64;
    use std::sync::Arc;

    #[test]
    fn ring_without_parked_waiter_makes_no_wake() {
        let b = Doorbell::new();
        b.ring();
        b.prepare_park();
        b.cancel_park();
        b.ring();
        assert_eq!(b.wakes(), 0);
        assert!(!b.is_parked());
    }

    #[test]
    fn park_times_out_awake_and_unrung() {
        let b = Doorbell::new();
        b.prepare_park();
        assert!(!b.park_timeout(Duration::from_micros(200)));
        assert!(!b.is_parked());
        assert_eq!(b.wakes(), 0);
    }

    #[test]
    fn ring_before_park_is_not_lost() {
        let b = Doorbell::new();
        b.prepare_park();
        b.ring(); // the waiter has not reached its futex wait yet
        assert!(b.park_timeout(Duration::from_secs(30)), "returns at once, rung");
        assert_eq!(b.wakes(), 1);
    }

    #[test]
    fn custom_waker_replaces_the_futex() {
        let b = Arc::new(Doorbell::new());
        let hits = Arc::new(StdU64::new(0));
        let h = hits.clone();
        assert!(b.set_waker(Box::new(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })));
        assert!(!b.set_waker(Box::new(|| {})), "only the first waker is kept");
        b.prepare_park();
        ring_all([&b, &b]);
        assert_eq!(hits.load(std::sync::atomic::Ordering::Relaxed), 1, "one wake per park");
        b.cancel_park();
    }

    /// Ping-pong through two doorbells: each side publishes a counter and rings, the other
    /// parks until it sees it. A lost wake-up would show as a park that ends by its (long)
    /// timeout instead of a ring.
    #[test]
    fn no_lost_wakeups_in_ping_pong() {
        const ROUNDS: u64 = 20_000;
        let ping = Arc::new((Doorbell::new(), StdU64::new(0)));
        let pong = Arc::new((Doorbell::new(), StdU64::new(0)));
        let timeouts = Arc::new(StdU64::new(0));
        let wait = |bell: &(Doorbell, StdU64), want: u64, timeouts: &StdU64| {
            use std::sync::atomic::Ordering::Acquire;
            let mut spins = 0;
            while bell.1.load(Acquire) < want {
                spins += 1;
                if spins < 2 {
                    std::hint::spin_loop();
                    continue;
                }
                bell.0.prepare_park();
                if bell.1.load(Acquire) >= want {
                    bell.0.cancel_park();
                    continue;
                }
                // The peer publishes within microseconds: only a lost ring lets 20 s pass.
                if !bell.0.park_timeout(Duration::from_secs(20)) {
                    timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
        let (pi, po, to) = (ping.clone(), pong.clone(), timeouts.clone());
        let t = std::thread::spawn(move || {
            for i in 1..=ROUNDS {
                wait(&pi, i, &to);
                po.1.store(i, std::sync::atomic::Ordering::Release);
                po.0.ring();
            }
        });
        for i in 1..=ROUNDS {
            ping.1.store(i, std::sync::atomic::Ordering::Release);
            ping.0.ring();
            wait(&pong, i, &timeouts);
        }
        t.join().unwrap();
        assert_eq!(timeouts.load(std::sync::atomic::Ordering::Relaxed), 0, "a park ended by timeout, not by a ring");
        assert!(!ping.0.is_parked() && !pong.0.is_parked());
    }
}
