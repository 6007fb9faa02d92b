//! The pipeline: every stage between the gateways' commands and the events they and the feed
//! read, wired in this one file.
//!
//! ```text
//!  gateway threads                     engine thread (pinned)                    readers
//!  ───────────────                     ──────────────────────                    ───────
//!  CommandProducer ─┐                                                        ┌─► EventConsumer (gateway)
//!  CommandProducer ─┼─► inbound ring ──► EngineAgent ──► outbound ring ──────┼─► EventConsumer (feed, …)
//!  CommandProducer ─┘   MultiProducer    batch of ≤ N      SingleProducer    │   (gating, in-process)
//!   send(cmd): CAS     <Command>         commands →       <Event>, heap or   └─► LossyReader (other
//!   claim, seq into    Command.seq ==    engine.handle →  /dev/shm file;         processes, read-only
//!   Command.seq        ring sequence     events written   Event.seq == ring      mapping, never gates)
//!                           │            straight into    sequence
//!                           │            claimed slots;
//!                           │            publish at end of batch
//!                           └─► inbound side consumers (JOURNAL HOOK, below)
//! ```
//!
//! Stage by stage:
//! 1. [`CommandProducer::send`] claims the next inbound sequence (CAS on the claim cursor; waits
//!    with the wait strategy while the ring is full), writes the command with `seq` = that
//!    sequence and publishes the slot's stamp. `ts_ns` is the caller's.
//! 2. [`EngineAgent::do_work`] takes up to `batch_max` available commands (one barrier query),
//!    calls `engine.handle(&cmd, &mut sink)` for each; the sink writes every event straight into
//!    the next outbound slot; the batch's events are published with one cursor store at the end
//!    of the batch. If the outbound ring fills mid-batch, the sink publishes what it has written
//!    *before* waiting for space (consumers cannot free slots they cannot see). Only then is the
//!    inbound batch released to the producers.
//! 3. [`EventConsumer::poll`] hands out events in sequence order with `end_of_batch`; each
//!    gating consumer holds the engine back when it is a whole ring behind. Other processes attach
//!    to the `/dev/shm` file with [`LossyReader::open`].
//!
//! After start, nothing on this path allocates or locks. Only an idle thread under the `Backoff`
//! wait strategy sleeps, parked on its consumer's [`Doorbell`]; a producer that publishes rings
//! the doorbells (a fence and a load each) and makes a system call only for a consumer that is
//! parked, so a busy pipeline makes none, and an idle one wakes at the first command instead of
//! at the end of its sleep.
//!
//! # Journal hook
//!
//! - `PipelineConfig::inbound_side_consumers = k` adds k more gating consumers on the inbound ring,
//!   running in parallel with the matcher (same commands, same sequences); take them with
//!   [`Pipeline::take_inbound_side_consumers`]. The journaler is one: it writes and fsyncs
//!   batches and then `set`s its own "durable up to" [`Sequence`] (command sequence space).
//! - Outbound publishers that must not release unjournaled results (gateway acks, feed) call
//!   [`EventConsumer::set_durable`] with that sequence: they then only see events whose
//!   `cmd_seq` is durable (events are in `cmd_seq` order, so this is a prefix).
//! - Recovery: [`Pipeline::start_with_engine`] takes an engine restored from a snapshot plus
//!   replay; the rings then start at `engine.last_cmd_seq() + 1` and `engine.next_event_seq()`.

use crate::agent::{Agent, AgentConfig, AgentRunner};
use crate::command::Command;
use crate::config::{ConfigError, EngineConfig};
use crate::engine::Engine;
use crate::event::{Event, EventSink};
use crate::ring::{Consumer, Doorbell, Full, LossyReader, MultiProducer, RingBuffer, RingError, Sequence, SingleProducer, WaitStrategyKind};
use crate::types::Seq;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the pipeline needs to start.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Slots of the inbound (command) ring, a power of two.
    pub inbound_capacity: usize,
    /// Slots of the outbound (event) ring, a power of two.
    pub outbound_capacity: usize,
    /// CPU to pin the engine thread to.
    pub engine_cpu: Option<usize>,
    /// Wait strategy of the engine loop, the producers and the consumers.
    pub wait: WaitStrategyKind,
    /// Put the outbound ring in this file (e.g. `/dev/shm/tickwire-events`) instead of the heap.
    pub shm_path: Option<PathBuf>,
    /// Most commands the engine takes per batch (>= 1).
    pub batch_max: usize,
    /// Journal hook: extra gating consumers of the inbound ring, in parallel with the matcher.
    pub inbound_side_consumers: usize,
    /// At shutdown, how long the engine waits for a full outbound ring to drain before it drops
    /// (and counts) the remaining events of the commands it still had to apply.
    pub stop_grace: Duration,
}

impl PipelineConfig {
    /// Defaults: inbound 2^16, outbound 2^18 slots, no pinning, Backoff, heap, batches of 256.
    pub fn new(engine: EngineConfig) -> PipelineConfig {
        PipelineConfig {
            engine,
            inbound_capacity: 1 << 16,
            outbound_capacity: 1 << 18,
            engine_cpu: None,
            wait: WaitStrategyKind::default(),
            shm_path: None,
            batch_max: 256,
            inbound_side_consumers: 0,
            stop_grace: Duration::from_secs(1),
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug)]
pub enum PipelineError {
    /// Bad engine configuration.
    Config(ConfigError),
    /// A ring could not be created.
    Ring(RingError),
    /// The engine thread could not be spawned.
    Spawn(std::io::Error),
    /// Bad pipeline parameter.
    Invalid(String),
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Config(e) => write!(f, "{e}"),
            PipelineError::Ring(e) => write!(f, "{e}"),
            PipelineError::Spawn(e) => write!(f, "cannot spawn the engine thread: {e}"),
            PipelineError::Invalid(m) => write!(f, "invalid pipeline configuration: {m}"),
        }
    }
}

impl std::error::Error for PipelineError {}

impl From<ConfigError> for PipelineError {
    fn from(e: ConfigError) -> Self {
        PipelineError::Config(e)
    }
}

impl From<RingError> for PipelineError {
    fn from(e: RingError) -> Self {
        PipelineError::Ring(e)
    }
}

/// Counters the engine thread publishes once per batch (single writer, Relaxed stores).
#[derive(Debug, Default)]
struct Stats {
    commands: AtomicU64,
    events: AtomicU64,
    batches: AtomicU64,
    events_dropped: AtomicU64,
}

/// A snapshot of the engine thread's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Commands applied.
    pub commands: u64,
    /// Events published.
    pub events: u64,
    /// Batches taken from the inbound ring.
    pub batches: u64,
    /// Events dropped at shutdown because the outbound ring stayed full for `stop_grace`.
    pub events_dropped: u64,
}

impl Stats {
    fn snapshot(&self) -> PipelineCounters {
        // Relaxed: informative counters; exact after the engine thread was joined.
        PipelineCounters {
            commands: self.commands.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// Sends commands into the inbound ring. Clone one per thread.
#[derive(Clone)]
pub struct CommandProducer {
    inner: MultiProducer<Command>,
}

impl CommandProducer {
    /// Publishes `cmd` with `seq` set to its ring sequence (returned), waiting while the ring is
    /// full. `ts_ns` is left as the caller set it.
    #[inline]
    pub fn send(&mut self, cmd: Command) -> Seq {
        self.inner.send_with(|seq| Command { seq, ..cmd })
    }

    /// Like [`CommandProducer::send`] but fails (nothing sent) when the ring is full.
    #[inline]
    pub fn try_send(&mut self, cmd: Command) -> Result<Seq, Full> {
        self.inner.try_send_with(|seq| Command { seq, ..cmd })
    }

    /// Publishes `cmds` (1..=capacity of them) under consecutive sequences claimed at once;
    /// returns the first and last.
    pub fn send_batch(&mut self, cmds: &[Command]) -> (Seq, Seq) {
        self.inner.send_batch_with(cmds.len(), |i, seq| Command { seq, ..cmds[i] })
    }

    /// Inbound ring capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

/// A gating consumer of the outbound events.
pub struct EventConsumer {
    inner: Consumer<Event>,
    durable: Option<Arc<Sequence>>,
}

impl EventConsumer {
    /// Handles up to `limit` available events in sequence order, calling `f(event,
    /// end_of_batch)`; returns how many (0 when none). With [`EventConsumer::set_durable`], only
    /// events whose `cmd_seq` is durable are handed out.
    #[inline]
    pub fn poll<F: FnMut(&Event, bool)>(&mut self, limit: usize, mut f: F) -> usize {
        if limit == 0 {
            return 0;
        }
        let next = self.inner.next_seq();
        let avail = self.inner.available();
        if avail < next {
            return 0;
        }
        let mut hi = avail.min(next.saturating_add(limit as u64 - 1));
        if let Some(d) = &self.durable {
            let durable = d.get();
            if self.cmd_seq_at(hi) > durable {
                // Events are in cmd_seq order: find the last one whose command is durable.
                let (mut lo_ok, mut hi_bad) = (next - 1, hi);
                while hi_bad - lo_ok > 1 {
                    let mid = lo_ok + (hi_bad - lo_ok) / 2;
                    if self.cmd_seq_at(mid) <= durable {
                        lo_ok = mid;
                    } else {
                        hi_bad = mid;
                    }
                }
                hi = lo_ok;
                if hi < next {
                    return 0;
                }
            }
        }
        self.inner.poll((hi - next + 1) as usize, |ev, _, end| f(ev, end))
    }

    fn cmd_seq_at(&self, seq: Seq) -> Seq {
        self.inner.peek(seq).map_or(Seq::MAX, |e| e.cmd_seq)
    }

    /// The doorbell rung when events may have become available: the engine rings it after each
    /// publish; a durable barrier set with [`EventConsumer::set_durable`] must ring it too (the
    /// journal's `DurableSeq::gate` does both).
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.inner.doorbell()
    }

    /// Journal hook: from now on, hand out only events whose command sequence is `<=
    /// durable.get()` (the journal's "durable up to"). Whoever advances `durable` must also ring
    /// [`EventConsumer::doorbell`] afterwards, or a thread parked on it notices only when its park
    /// times out: use the journal's `DurableSeq::gate`, which does both.
    pub fn set_durable(&mut self, durable: Arc<Sequence>) {
        self.durable = Some(durable);
    }

    /// Sequence of the next event this consumer hands out.
    pub fn next_seq(&self) -> Seq {
        self.inner.next_seq()
    }

    /// This consumer's progress sequence.
    pub fn sequence(&self) -> Arc<Sequence> {
        self.inner.sequence()
    }

    /// The underlying ring consumer.
    pub fn into_inner(self) -> Consumer<Event> {
        self.inner
    }
}

/// Writes the engine's events straight into the outbound ring.
struct RingSink<'a> {
    out: &'a mut SingleProducer<Event>,
    stop: &'a AtomicBool,
    stop_grace: Duration,
    /// Set once an event was dropped at shutdown: every later event is dropped too.
    giving_up: &'a mut bool,
    dropped: u64,
}

impl EventSink for RingSink<'_> {
    #[inline]
    fn push(&mut self, ev: &Event) {
        if *self.giving_up {
            // Shutdown with a stuck consumer: drop every later event too, so the ring never holds
            // a record whose seq differs from its ring sequence.
            self.dropped += 1;
            return;
        }
        debug_assert_eq!(ev.seq, self.out.next_seq(), "event seq must equal its ring sequence");
        let (stop, grace) = (self.stop, self.stop_grace);
        let mut deadline: Option<Instant> = None;
        // `push_until` publishes what was written before waiting: a full ring never deadlocks.
        let r = self.out.push_until(ev, || {
            // Acquire: pairs with the Release store of AgentRunner::request_stop.
            if !stop.load(Ordering::Acquire) {
                return false;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + grace);
            Instant::now() >= d
        });
        if r.is_err() {
            *self.giving_up = true;
            self.dropped += 1;
        }
    }
}

/// The engine agent: inbound commands → `Engine::handle` → outbound events.
pub struct EngineAgent {
    engine: Engine,
    inbound: Consumer<Command>,
    outbound: SingleProducer<Event>,
    batch_max: usize,
    stop: Arc<AtomicBool>,
    stop_grace: Duration,
    giving_up: bool,
    stats: Arc<Stats>,
    totals: PipelineCounters,
}

impl EngineAgent {
    /// The engine (e.g. for its state hash after shutdown).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Consumes the agent, returning its engine.
    pub fn into_engine(self) -> Engine {
        self.engine
    }
}

impl Agent for EngineAgent {
    #[inline]
    fn do_work(&mut self) -> usize {
        let EngineAgent { engine, inbound, outbound, batch_max, stop, stop_grace, giving_up, .. } = self;
        let mut sink = RingSink { out: outbound, stop, stop_grace: *stop_grace, giving_up, dropped: 0 };
        let before = sink.out.next_seq();
        let n = inbound.poll(*batch_max, |cmd, _seq, end_of_batch| {
            engine.handle(cmd, &mut sink);
            if end_of_batch {
                sink.out.publish();
            }
        });
        let dropped = sink.dropped;
        if n > 0 {
            let t = &mut self.totals;
            t.commands += n as u64;
            t.events += self.outbound.next_seq() - before;
            t.batches += 1;
            t.events_dropped += dropped;
            // Relaxed: single writer, informative (exact once the thread is joined).
            self.stats.commands.store(t.commands, Ordering::Relaxed);
            self.stats.events.store(t.events, Ordering::Relaxed);
            self.stats.batches.store(t.batches, Ordering::Relaxed);
        }
        n
    }

    fn name(&self) -> &str {
        "tickwire-engine"
    }

    /// The inbound consumer's doorbell: the command producers ring it, so an engine asleep in its
    /// backoff wakes on the next command.
    fn doorbell(&self) -> Option<Arc<Doorbell>> {
        Some(self.inbound.doorbell())
    }

    fn has_work(&mut self) -> bool {
        self.inbound.has_available()
    }

    /// Applies what producers had published when the stop was requested, then publishes.
    fn on_close(&mut self) {
        let target = self.inbound.available();
        while self.inbound.next_seq() <= target {
            let EngineAgent { engine, inbound, outbound, stop, stop_grace, giving_up, .. } = self;
            let mut sink = RingSink { out: outbound, stop, stop_grace: *stop_grace, giving_up, dropped: 0 };
            let before = sink.out.next_seq();
            let limit = (target + 1 - inbound.next_seq()) as usize;
            let n = inbound.poll(limit, |cmd, _, _| engine.handle(cmd, &mut sink));
            let dropped = sink.dropped;
            self.outbound.publish();
            let t = &mut self.totals;
            t.commands += n as u64;
            t.events += self.outbound.next_seq() - before;
            t.batches += 1;
            t.events_dropped += dropped;
        }
        self.outbound.publish();
        // Relaxed: read after the join, which orders it.
        self.stats.commands.store(self.totals.commands, Ordering::Relaxed);
        self.stats.events.store(self.totals.events, Ordering::Relaxed);
        self.stats.batches.store(self.totals.batches, Ordering::Relaxed);
        self.stats.events_dropped.store(self.totals.events_dropped, Ordering::Relaxed);
    }
}

/// A running pipeline. Dropping it stops the engine thread too; use [`Pipeline::shutdown`] to get
/// the engine back.
pub struct Pipeline {
    runner: AgentRunner<EngineAgent>,
    producer: CommandProducer,
    side: Vec<Consumer<Command>>,
    reader: LossyReader<Event>,
    stats: Arc<Stats>,
    shm_path: Option<PathBuf>,
}

impl Pipeline {
    /// Builds the engine from `cfg.engine` and starts the pipeline with `gating_consumers` event
    /// consumers (returned, in-process, each sees every event).
    pub fn start(cfg: PipelineConfig, gating_consumers: usize) -> Result<(Pipeline, Vec<EventConsumer>), PipelineError> {
        let engine = Engine::new(&cfg.engine)?;
        Pipeline::start_with_engine(engine, cfg, gating_consumers)
    }

    /// Starts the pipeline around an existing engine (restored from a snapshot, replayed); the
    /// rings continue its command and event sequences. `cfg.engine` is not used.
    pub fn start_with_engine(
        engine: Engine,
        cfg: PipelineConfig,
        gating_consumers: usize,
    ) -> Result<(Pipeline, Vec<EventConsumer>), PipelineError> {
        if cfg.batch_max == 0 {
            return Err(PipelineError::Invalid("batch_max must be >= 1".into()));
        }
        let inbound = RingBuffer::<Command>::heap_from(cfg.inbound_capacity, engine.last_cmd_seq() + 1)?;
        let (mp, mut in_consumers) = inbound.into_multi_producer(1 + cfg.inbound_side_consumers, cfg.wait);
        let matcher_in = in_consumers.remove(0);
        let first_event = engine.next_event_seq();
        let outbound = match &cfg.shm_path {
            Some(p) => RingBuffer::<Event>::create_shm(p, cfg.outbound_capacity, first_event)?,
            None => RingBuffer::<Event>::heap_from(cfg.outbound_capacity, first_event)?,
        };
        let (sp, out_consumers) = outbound.into_single_producer(gating_consumers, cfg.wait);
        let reader = sp.lossy_reader();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let agent = EngineAgent {
            engine,
            inbound: matcher_in,
            outbound: sp,
            batch_max: cfg.batch_max,
            stop: stop.clone(),
            stop_grace: cfg.stop_grace,
            giving_up: false,
            stats: stats.clone(),
            totals: PipelineCounters::default(),
        };
        let runner = AgentRunner::start_with_stop(agent, AgentConfig { cpu: cfg.engine_cpu, idle: cfg.wait }, stop)
            .map_err(PipelineError::Spawn)?;
        let consumers = out_consumers.into_iter().map(|inner| EventConsumer { inner, durable: None }).collect();
        Ok((
            Pipeline {
                runner,
                producer: CommandProducer { inner: mp },
                side: in_consumers,
                reader,
                stats,
                shm_path: cfg.shm_path,
            },
            consumers,
        ))
    }

    /// A new command producer (clone it for more threads).
    pub fn producer(&self) -> CommandProducer {
        self.producer.clone()
    }

    /// Journal hook: the inbound side consumers (`PipelineConfig::inbound_side_consumers`), once.
    pub fn take_inbound_side_consumers(&mut self) -> Vec<Consumer<Command>> {
        std::mem::take(&mut self.side)
    }

    /// A non-gating reader of the outbound events, starting at the oldest still available.
    pub fn event_reader(&self) -> LossyReader<Event> {
        let mut r = self.reader.clone();
        r.seek(r.oldest_available());
        r
    }

    /// The outbound ring's file, if it is in shared memory.
    pub fn shm_path(&self) -> Option<&std::path::Path> {
        self.shm_path.as_deref()
    }

    /// The engine thread's counters so far.
    pub fn counters(&self) -> PipelineCounters {
        self.stats.snapshot()
    }

    /// Whether the engine thread was pinned (`None`: no CPU configured or not yet tried).
    pub fn engine_pinned(&self) -> Option<bool> {
        self.runner.pinned()
    }

    /// Stops the engine thread after it applied every command already published, and returns
    /// the engine (read its `state_hash`). Panics if the engine thread panicked.
    pub fn shutdown(self) -> Engine {
        self.shutdown_with_counters().0
    }

    /// [`Pipeline::shutdown`], also returning the final counters.
    pub fn shutdown_with_counters(self) -> (Engine, PipelineCounters) {
        let Pipeline { runner, stats, .. } = self;
        match runner.join() {
            Ok(agent) => (agent.into_engine(), stats.snapshot()),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}
