//! Agents (Agrona style): a unit of work polled in a loop by its own, optionally pinned, thread.
//!
//! [`AgentRunner::start`] spawns the thread, pins it to a CPU when one is configured (a failed
//! pin is logged to stderr and the agent runs unpinned), then loops `do_work` + idle strategy
//! until stopped; [`AgentRunner::join`] stops it and hands the agent back. An agent that names a
//! [`Doorbell`] ([`Agent::doorbell`]) sleeps on it in its idle strategy's sleeping phase, so the
//! producer that rings it wakes the agent at once ([`IdleStrategy::idle_on`]).

use crate::ring::{Doorbell, IdleStrategy, WaitStrategyKind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A unit of work driven by an [`AgentRunner`].
pub trait Agent {
    /// Does some work without blocking for long; returns how much (0 = idle: the runner then
    /// applies its idle strategy).
    fn do_work(&mut self) -> usize;
    /// Name (thread name, logs).
    fn name(&self) -> &str;
    /// Called once on the agent's thread before the first `do_work`.
    fn on_start(&mut self) {}
    /// Called once on the agent's thread after the last `do_work` (stop requested).
    fn on_close(&mut self) {}
    /// The doorbell rung when work arrives (e.g. its input ring consumer's), if any: the runner
    /// then sleeps on it instead of plain sleeps, re-checking [`Agent::has_work`] first. An agent
    /// that returns one must also implement `has_work`. This thread must be the doorbell's only
    /// waiter.
    fn doorbell(&self) -> Option<Arc<Doorbell>> {
        None
    }
    /// Whether `do_work` would find work now (cheap, no side effects; asked before parking on
    /// the doorbell). Only asked when [`Agent::doorbell`] returns one; the default (`false`)
    /// never parks on a lie: the park still ends after the backoff step's time.
    fn has_work(&mut self) -> bool {
        false
    }
}

/// How an agent's thread runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// CPU to pin the thread to (`core_affinity` id), or none.
    pub cpu: Option<usize>,
    /// What the loop does when `do_work` returns 0.
    pub idle: WaitStrategyKind,
}

const PIN_NONE: u8 = 0;
const PIN_OK: u8 = 1;
const PIN_FAILED: u8 = 2;

/// A running agent on its own thread.
pub struct AgentRunner<A: Agent + Send + 'static> {
    stop: Arc<AtomicBool>,
    bell: Option<Arc<Doorbell>>,
    pinned: Arc<AtomicU8>,
    handle: Option<JoinHandle<A>>,
    name: String,
}

impl<A: Agent + Send + 'static> AgentRunner<A> {
    /// Spawns the agent's thread with a fresh stop flag.
    pub fn start(agent: A, cfg: AgentConfig) -> std::io::Result<AgentRunner<A>> {
        AgentRunner::start_with_stop(agent, cfg, Arc::new(AtomicBool::new(false)))
    }

    /// Spawns the agent's thread; it stops when `stop` becomes true (the agent may hold a clone
    /// of the flag to notice a stop inside a long `do_work`).
    pub fn start_with_stop(mut agent: A, cfg: AgentConfig, stop: Arc<AtomicBool>) -> std::io::Result<AgentRunner<A>> {
        let name = agent.name().to_string();
        let pinned = Arc::new(AtomicU8::new(PIN_NONE));
        let (stop2, pinned2) = (stop.clone(), pinned.clone());
        let bell = agent.doorbell();
        let bell2 = bell.clone();
        let handle = std::thread::Builder::new().name(name.clone()).spawn(move || {
            if let Some(cpu) = cfg.cpu {
                let ok = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                if !ok {
                    eprintln!("tickwire: agent {}: could not pin to cpu {cpu}; running unpinned", agent.name());
                }
                // Release: pairs with the Acquire load in `pinned`.
                pinned2.store(if ok { PIN_OK } else { PIN_FAILED }, Ordering::Release);
            }
            agent.on_start();
            let mut idle = IdleStrategy::new(cfg.idle);
            // Acquire: pairs with the Release store in `request_stop`: whatever the stopper did
            // before asking is visible to the final `on_close`.
            while !stop2.load(Ordering::Acquire) {
                let work = agent.do_work();
                match &bell2 {
                    Some(b) => idle.idle_on(work, b, || agent.has_work() || stop2.load(Ordering::Acquire)),
                    None => idle.idle(work),
                }
            }
            agent.on_close();
            agent
        })?;
        Ok(AgentRunner { stop, bell, pinned, handle: Some(handle), name })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the loop to stop after its current `do_work`.
    pub fn request_stop(&self) {
        // Release: pairs with the Acquire load of the loop.
        self.stop.store(true, Ordering::Release);
        if let Some(b) = &self.bell {
            // A parked agent sees the stop now rather than at the end of its sleep.
            b.ring();
        }
    }

    /// The stop flag.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// `Some(true)` pinned, `Some(false)` pinning failed, `None` no CPU configured or not yet
    /// tried.
    pub fn pinned(&self) -> Option<bool> {
        // Acquire: pairs with the Release store on the agent thread.
        match self.pinned.load(Ordering::Acquire) {
            PIN_OK => Some(true),
            PIN_FAILED => Some(false),
            _ => None,
        }
    }

    /// Whether the thread has ended (stopped or panicked).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the agent, joins its thread and returns the agent (`Err` with the panic payload if
    /// the agent panicked).
    pub fn join(mut self) -> std::thread::Result<A> {
        self.request_stop();
        match self.handle.take() {
            Some(h) => h.join(),
            None => Err(Box::new("agent already joined")),
        }
    }
}

impl<A: Agent + Send + 'static> Drop for AgentRunner<A> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.request_stop();
            let _ = h.join();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Counter {
        work: usize,
        limit: usize,
        closed: bool,
        started: bool,
    }

    impl Agent for Counter {
        fn do_work(&mut self) -> usize {
            if self.work < self.limit {
                self.work += 1;
                1
            } else {
                0
            }
        }
        fn name(&self) -> &str {
            "counter"
        }
        fn on_start(&mut self) {
            self.started = true;
        }
        fn on_close(&mut self) {
            self.closed = true;
        }
    }

    /// Work arrives through a counter and a doorbell, like commands through the inbound ring.
    struct Doorbelled {
        pending: Arc<std::sync::atomic::AtomicU64>,
        done: Arc<std::sync::atomic::AtomicU64>,
        bell: Arc<Doorbell>,
    }

    impl Agent for Doorbelled {
        fn do_work(&mut self) -> usize {
            let n = self.pending.swap(0, Ordering::Acquire);
            self.done.fetch_add(n, Ordering::Release);
            n as usize
        }
        fn name(&self) -> &str {
            "doorbelled"
        }
        fn doorbell(&self) -> Option<Arc<Doorbell>> {
            Some(self.bell.clone())
        }
        fn has_work(&mut self) -> bool {
            self.pending.load(Ordering::Acquire) > 0
        }
    }

    /// An agent asleep in its backoff (parks of 10 s here) is woken by the ring that comes with
    /// its work, and by a stop: the ring finds it parked, and the work is done.
    #[test]
    fn parked_agent_wakes_on_its_doorbell() {
        use std::sync::atomic::AtomicU64;
        let (pending, done, bell) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(Doorbell::new()));
        let agent = Doorbelled { pending: pending.clone(), done: done.clone(), bell: bell.clone() };
        let idle = WaitStrategyKind::Backoff {
            spins: 1,
            yields: 0,
            min_park: std::time::Duration::from_secs(10),
            max_park: std::time::Duration::from_secs(10),
        };
        let r = AgentRunner::start(agent, AgentConfig { cpu: None, idle }).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !bell.is_parked() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(bell.is_parked(), "the idle agent parks on its doorbell");
        pending.store(3, Ordering::Release);
        bell.ring();
        assert_eq!(bell.wakes(), 1, "the ring found the agent parked and woke it");
        while done.load(Ordering::Acquire) < 3 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(done.load(Ordering::Acquire), 3);
        r.join().unwrap();
    }

    #[test]
    fn runs_until_stopped_and_returns_agent() {
        let r = AgentRunner::start(
            Counter { work: 0, limit: 1000, closed: false, started: false },
            AgentConfig { cpu: Some(0), idle: WaitStrategyKind::backoff() },
        )
        .unwrap();
        assert_eq!(r.name(), "counter");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while r.pinned().is_none() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(r.pinned().is_some(), "pinning was attempted");
        let a = r.join().unwrap();
        assert!(a.started && a.closed);
        assert!(a.work <= 1000);
    }
}
