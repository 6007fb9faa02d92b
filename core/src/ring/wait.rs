//! Wait and idle strategies.
//!
//! [`WaitStrategyKind`] is the configuration; [`IdleStrategy`] the per-thread state that applies
//! it, Agrona style: call [`IdleStrategy::idle`] with the amount of work the last step did; any
//! work resets the backoff, no work advances it. Producers waiting for space and consumers waiting
//! for data use the same state machine ([`IdleStrategy::idle_once`] / [`IdleStrategy::reset`]).
//!
//! No strategy blocks on a lock. Only an idle waiter under `Backoff` sleeps; with
//! [`IdleStrategy::idle_on`] its sleeps are parks on a [`Doorbell`] that the producers ring after
//! publishing, so it wakes as soon as there is work instead of at the end of its sleep. A
//! producer makes a system call only when it finds the waiter parked (doorbell.rs): never while
//! the pipeline is busy.

use super::doorbell::Doorbell;
use super::sync::{park, spin_hint, yield_now};
use std::time::Duration;

/// Longest park of [`IdleStrategy::idle_on`], which may grow past a `Backoff`'s `max_park` up to
/// this. `max_park` bounds the latency a sleep adds after an idle period; a park on a doorbell
/// adds none (the producer that brings work rings it), so its bound only limits how long a missed
/// ring could go unnoticed. Longer parks let an idle server sleep: with 1 ms parks its engine
/// woke 1000 times a second.
pub const DOORBELL_PARK_MAX: Duration = Duration::from_millis(50);

/// How a thread waits when it has nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategyKind {
    /// Spin forever (lowest latency; burns a whole core, even when idle).
    BusySpin,
    /// Spin `spins` times, then `yield` on every further step.
    Yielding {
        /// Spins before the first yield.
        spins: u32,
    },
    /// Spin `spins` times, yield `yields` times, then sleep from `min_park`, doubling each step up
    /// to `max_park`. Idles at near-zero CPU; the default.
    Backoff {
        /// Spins before yielding.
        spins: u32,
        /// Yields before sleeping.
        yields: u32,
        /// First sleep.
        min_park: Duration,
        /// Longest sleep (the worst added latency after an idle period).
        max_park: Duration,
    },
}

impl Default for WaitStrategyKind {
    /// `Backoff` with 64 spins, 16 yields and sleeps from 1 µs up to 1 ms: it does not burn a core
    /// when idle (the development machines have two).
    fn default() -> Self {
        WaitStrategyKind::backoff()
    }
}

impl WaitStrategyKind {
    /// The default backoff parameters.
    pub const fn backoff() -> WaitStrategyKind {
        WaitStrategyKind::Backoff {
            spins: 64,
            yields: 16,
            min_park: Duration::from_micros(1),
            max_park: Duration::from_millis(1),
        }
    }

    /// `Yielding` with 100 spins first.
    pub const fn yielding() -> WaitStrategyKind {
        WaitStrategyKind::Yielding { spins: 100 }
    }

    /// Parses `busy-spin` (`busy_spin`, `spin`), `yielding` (`yield`) or `backoff` (default
    /// parameters), for command-line tools.
    pub fn parse(s: &str) -> Option<WaitStrategyKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "busy-spin" | "busy_spin" | "busyspin" | "spin" => Some(WaitStrategyKind::BusySpin),
            "yielding" | "yield" => Some(WaitStrategyKind::yielding()),
            "backoff" | "park" | "sleep" => Some(WaitStrategyKind::backoff()),
            _ => None,
        }
    }

    /// Short name: `busy-spin`, `yielding` or `backoff`.
    pub fn name(&self) -> &'static str {
        match self {
            WaitStrategyKind::BusySpin => "busy-spin",
            WaitStrategyKind::Yielding { .. } => "yielding",
            WaitStrategyKind::Backoff { .. } => "backoff",
        }
    }

    /// A fresh idle state for this strategy.
    pub fn idle_strategy(&self) -> IdleStrategy {
        IdleStrategy::new(*self)
    }
}

/// The per-thread state of a [`WaitStrategyKind`]. Not shared; no allocation.
#[derive(Clone, Debug)]
pub struct IdleStrategy {
    kind: WaitStrategyKind,
    /// Steps taken since the last reset.
    step: u32,
    /// Next sleep (Backoff, after the spin and yield phases).
    park: Duration,
}

impl IdleStrategy {
    /// A fresh state.
    pub fn new(kind: WaitStrategyKind) -> IdleStrategy {
        let park = match kind {
            WaitStrategyKind::Backoff { min_park, .. } => min_park,
            _ => Duration::ZERO,
        };
        IdleStrategy { kind, step: 0, park }
    }

    /// The strategy.
    pub fn kind(&self) -> WaitStrategyKind {
        self.kind
    }

    /// Agrona's `idle(workCount)`: resets after work, otherwise waits one step.
    #[inline]
    pub fn idle(&mut self, work_count: usize) {
        if work_count > 0 {
            self.reset();
        } else {
            self.idle_once();
        }
    }

    /// [`IdleStrategy::idle`], except that a sleeping step (Backoff, after the spins and yields)
    /// parks on `bell` for the same time at most: it announces the park, re-checks `has_work`
    /// (a producer that published just before does not ring a sleeper), and sleeps until the
    /// bell is rung or the step's time passes. The parks keep doubling past `max_park` up to
    /// [`DOORBELL_PARK_MAX`]. Other strategies and steps are unchanged.
    #[inline]
    pub fn idle_on(&mut self, work_count: usize, bell: &Doorbell, has_work: impl FnOnce() -> bool) {
        if work_count > 0 {
            self.reset();
            return;
        }
        let WaitStrategyKind::Backoff { max_park, .. } = self.kind else {
            return self.idle_once();
        };
        if !self.is_parking() {
            return self.idle_once();
        }
        bell.prepare_park();
        if has_work() {
            bell.cancel_park();
            return;
        }
        bell.park_timeout(self.park);
        self.next_park(max_park.max(DOORBELL_PARK_MAX));
    }

    /// After a sleeping step: the next one is twice as long, up to `max_park`.
    #[inline]
    fn next_park(&mut self, max_park: Duration) {
        self.step = self.step.saturating_add(1).max(1);
        self.park = (self.park * 2).min(max_park).max(Duration::from_nanos(1));
    }

    /// Forgets past idleness: the next wait starts with spinning again.
    #[inline]
    pub fn reset(&mut self) {
        if self.step != 0 {
            self.step = 0;
            if let WaitStrategyKind::Backoff { min_park, .. } = self.kind {
                self.park = min_park;
            }
        }
    }

    /// Waits one step of the strategy (spin, yield or sleep).
    #[inline]
    pub fn idle_once(&mut self) {
        match self.kind {
            WaitStrategyKind::BusySpin => spin_hint(),
            WaitStrategyKind::Yielding { spins } => {
                if self.step < spins {
                    self.step += 1;
                    spin_hint();
                } else {
                    yield_now();
                }
            }
            WaitStrategyKind::Backoff { spins, yields, max_park, .. } => {
                if self.step < spins {
                    self.step += 1;
                    spin_hint();
                } else if self.step < spins.saturating_add(yields) {
                    self.step += 1;
                    yield_now();
                } else {
                    park(self.park);
                    self.next_park(max_park);
                }
            }
        }
    }

    /// Whether the strategy has reached its sleeping phase (Backoff only).
    pub fn is_parking(&self) -> bool {
        matches!(self.kind, WaitStrategyKind::Backoff { spins, yields, .. } if self.step >= spins.saturating_add(yields))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn backoff_reaches_parking_and_resets_on_work() {
        let kind = WaitStrategyKind::Backoff {
            spins: 2,
            yields: 2,
            min_park: Duration::from_nanos(1),
            max_park: Duration::from_micros(4),
        };
        let mut s = kind.idle_strategy();
        for _ in 0..4 {
            assert!(!s.is_parking());
            s.idle(0);
        }
        assert!(s.is_parking());
        for _ in 0..20 {
            s.idle(0);
        }
        assert_eq!(s.park, Duration::from_micros(4), "sleep capped at max_park");
        s.idle(3);
        assert!(!s.is_parking());
        assert_eq!(s.park, Duration::from_nanos(1));
    }

    /// Parks on a doorbell keep doubling past `max_park`, up to `DOORBELL_PARK_MAX` (a ring ends
    /// them, so `max_park`'s latency bound does not apply); plain sleeps stay capped (above).
    #[test]
    fn doorbell_parks_grow_past_max_park() {
        let kind = WaitStrategyKind::Backoff {
            spins: 0,
            yields: 0,
            min_park: Duration::from_nanos(1),
            max_park: Duration::from_micros(4),
        };
        let mut s = kind.idle_strategy();
        let bell = Doorbell::new();
        // 1 ns doubling to 50 ms: 27 parks (~100 ms asleep), then a few at the bound.
        for _ in 0..30 {
            s.idle_on(0, &bell, || false);
            assert!(s.park <= DOORBELL_PARK_MAX);
        }
        assert_eq!(s.park, DOORBELL_PARK_MAX);
        s.idle_on(1, &bell, || false);
        assert_eq!(s.park, Duration::from_nanos(1), "work resets the parks");
    }

    #[test]
    fn parse_names() {
        for k in [WaitStrategyKind::BusySpin, WaitStrategyKind::yielding(), WaitStrategyKind::backoff()] {
            assert_eq!(WaitStrategyKind::parse(k.name()), Some(k));
        }
        assert_eq!(WaitStrategyKind::default(), WaitStrategyKind::backoff());
        assert_eq!(WaitStrategyKind::parse("nope"), None);
    }
}
