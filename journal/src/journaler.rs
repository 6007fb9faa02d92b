//! The journaler agent and the "durable up to" barrier.
//!
//! Disruptor style: the journaler consumes the inbound command sequence in parallel with the
//! matcher (it is one more consumer of the inbound ring), group-commits what it finds, and
//! publishes [`DurableSeq`]. Publishers of outbound events wait until `DurableSeq >= cmd_seq`
//! of an event before releasing it; the matcher itself never waits for the disk.
//!
//! Wiring to the pipeline (`tickwire_core::pipeline`): set `inbound_side_consumers = 1`, pass the
//! consumer from `Pipeline::take_inbound_side_consumers` to [`Journaler::spawn`] (it implements
//! [`CommandSource`]), and gate every outbound `EventConsumer` on the barrier with
//! [`DurableSeq::gate`] (its `set_durable`, plus its doorbell rung on every publish, so a
//! consumer parked until its events are durable wakes when they are).

use crate::writer::JournalWriter;
use crate::{JournalError, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tickwire_core::pipeline::EventConsumer;
use tickwire_core::ring::{ring_all, Consumer, Doorbell, Sequence, DOORBELL_PARK_MAX};
use tickwire_core::{Command, Seq};

/// The barrier: the highest command sequence whose journal record is durable (per the configured
/// [`crate::Durability`]). Monotonic; starts at the last recovered sequence.
///
/// The value is a ring [`Sequence`] (its own cache lines), so the pipeline's publishers can wait
/// on it directly: pass [`DurableSeq::sequence`] to `EventConsumer::set_durable`.
///
/// Memory ordering: the journaler finishes `write`/`fdatasync` and then [`DurableSeq::publish`]es
/// with `Release` ([`Sequence::set`]); readers [`DurableSeq::get`] with `Acquire`
/// ([`Sequence::get`]). A publisher of outbound events that reads `d` with `Acquire` and only then
/// publishes (its own `Release` store on the outbound ring) events with `cmd_seq <= d` can never
/// have those events visible before the load: the `Acquire` keeps its later stores after it. So
/// an event is observable only after the journaler had completed the system calls that made its
/// command durable.
#[derive(Debug)]
pub struct DurableSeq {
    seq: Arc<Sequence>,
    failed: AtomicBool,
    /// Rung after every publish (and on failure): the doorbells of the consumers gated on it
    /// (filled in order at wiring time, never changed after).
    bells: [OnceLock<Arc<Doorbell>>; DURABLE_BELLS_MAX],
}

/// Most consumers a [`DurableSeq`] rings (the gateway has one).
pub const DURABLE_BELLS_MAX: usize = 4;

impl DurableSeq {
    /// A barrier at `seq` (the last command already durable, 0 if none).
    pub fn new(seq: Seq) -> DurableSeq {
        DurableSeq { seq: Arc::new(Sequence::new(seq)), failed: AtomicBool::new(false), bells: Default::default() }
    }

    /// Gates `consumer` on this barrier (`EventConsumer::set_durable`) and rings its doorbell
    /// after every publish, so a consumer parked until its events are durable wakes when they
    /// are. At wiring time, for up to [`DURABLE_BELLS_MAX`] consumers; `false` (and nothing
    /// changed) past that.
    pub fn gate(&self, consumer: &mut EventConsumer) -> bool {
        if !self.ring_on_publish(consumer.doorbell()) {
            return false;
        }
        consumer.set_durable(self.sequence());
        true
    }

    /// Rings `bell` after every [`DurableSeq::publish`] (and on failure). `false` if
    /// [`DURABLE_BELLS_MAX`] doorbells are already registered.
    pub fn ring_on_publish(&self, bell: Arc<Doorbell>) -> bool {
        let mut bell = Some(bell);
        for slot in &self.bells {
            if let Some(b) = bell.take() {
                if let Err(b) = slot.set(b) {
                    bell = Some(b);
                }
            }
        }
        bell.is_none()
    }

    fn ring_bells(&self) {
        // Slots fill in order: the registered doorbells are the leading set ones.
        ring_all(self.bells.iter().map_while(OnceLock::get));
    }

    /// The ring sequence holding the value (for `EventConsumer::set_durable` or a
    /// `SequenceBarrier` dependency). Only the journaler may `set` it.
    pub fn sequence(&self) -> Arc<Sequence> {
        self.seq.clone()
    }

    /// The durable sequence (`Acquire`).
    #[inline]
    pub fn get(&self) -> Seq {
        self.seq.get()
    }

    /// Publishes `seq` (`Release`). Only the journaler calls this; values never go down.
    #[inline]
    pub fn publish(&self, seq: Seq) {
        debug_assert!(seq >= self.seq.get_relaxed(), "durable sequence went down");
        self.seq.set(seq);
        // After the Release store.
        self.ring_bells();
    }

    /// Marks the journal failed: the value will not advance any more. Waiters get an error.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.ring_bells();
    }

    /// Whether the journaler failed.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until the durable sequence reaches `seq` or `timeout` passes (spin, then yield,
    /// then short sleeps). Returns the value last seen (`< seq` on timeout), or
    /// [`JournalError::Failed`] if the journaler failed before reaching it.
    pub fn wait_for(&self, seq: Seq, timeout: Duration) -> Result<Seq> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let d = self.get();
            if d >= seq {
                return Ok(d);
            }
            if self.has_failed() {
                return Err(JournalError::Failed(format!("journaler stopped at durable sequence {d}")));
            }
            if start.elapsed() >= timeout {
                return Ok(d);
            }
            spins += 1;
            if spins < 128 {
                std::hint::spin_loop();
            } else if spins < 256 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
}

/// What [`CommandSource::poll`] says about the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePoll {
    /// More commands may come.
    Open,
    /// No command will come after those just returned.
    Closed,
}

/// Where the journaler reads the inbound command sequence from (the inbound ring's consumer, a
/// channel in tests). Commands must come in sequence order, gapless.
pub trait CommandSource: Send {
    /// Appends to `out` up to `max` commands available now, without blocking.
    fn poll(&mut self, out: &mut Vec<Command>, max: usize) -> SourcePoll;

    /// Called after a `poll` that gave nothing: waits up to `timeout` for commands to become
    /// available (may return early). The default sleeps briefly.
    fn wait(&mut self, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }

    /// Called by the journaler's idle back-off after the source's own waits found nothing:
    /// sleeps up to `d`, or less if commands arrive. The default sleeps `d`.
    fn park(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    /// The doorbell `park` sleeps on, if any: [`Journaler::stop`] rings it so a parked journaler
    /// stops at once.
    fn doorbell(&self) -> Option<Arc<Doorbell>> {
        None
    }

    /// Whether commands may be available now: a cheap check without side effects, made on every
    /// iteration of the journaler's bounded idle spin ([`Journaler::spawn_with_idle_spin`]).
    /// The default says "maybe" (`true`): the journaler then simply polls again.
    fn may_have_commands(&mut self) -> bool {
        true
    }
}

/// A [`CommandSource`] over a `std::sync::mpsc` channel (tests, tools, simple servers).
#[derive(Debug)]
pub struct ChannelSource {
    rx: Receiver<Command>,
    pending: Option<Command>,
    closed: bool,
}

impl ChannelSource {
    /// Wraps a receiver; the source closes when every sender is dropped.
    pub fn new(rx: Receiver<Command>) -> ChannelSource {
        ChannelSource { rx, pending: None, closed: false }
    }
}

impl CommandSource for ChannelSource {
    fn poll(&mut self, out: &mut Vec<Command>, max: usize) -> SourcePoll {
        let mut n = 0;
        if let Some(c) = self.pending.take() {
            out.push(c);
            n += 1;
        }
        while n < max && !self.closed {
            match self.rx.try_recv() {
                Ok(c) => {
                    out.push(c);
                    n += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.closed = true,
            }
        }
        if self.closed && self.pending.is_none() {
            SourcePoll::Closed
        } else {
            SourcePoll::Open
        }
    }

    fn wait(&mut self, timeout: Duration) {
        if self.pending.is_some() || self.closed {
            return;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(c) => self.pending = Some(c),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.closed = true,
        }
    }
}

/// The inbound ring's side consumer (`Pipeline::take_inbound_side_consumers`) as the journaler's
/// source: commands are copied out and their slots released to the producers at once. The
/// inbound ring has many producers and no "closed" state: stop the journaler with
/// [`Journaler::stop`] (it is `Closed` only if the barrier is alerted or a single producer is
/// gone, with nothing left to read).
impl CommandSource for Consumer<Command> {
    fn poll(&mut self, out: &mut Vec<Command>, max: usize) -> SourcePoll {
        let n = Consumer::poll(self, max, |c, _, _| out.push(*c));
        let barrier = self.barrier();
        if n == 0 && (barrier.is_alerted() || barrier.is_producer_closed()) && self.available() < self.next_seq() {
            return SourcePoll::Closed;
        }
        SourcePoll::Open
    }

    fn wait(&mut self, timeout: Duration) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.available() < self.next_seq() {
            if self.barrier().is_alerted() || self.barrier().is_producer_closed() || start.elapsed() >= timeout {
                return;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else if spins < 128 {
                std::thread::yield_now();
            } else {
                // Sleeps until the producers ring (or the rest of the timeout), then lets the
                // journaler's loop look again (a stop rings the same doorbell).
                CommandSource::park(self, timeout.saturating_sub(start.elapsed()));
                return;
            }
        }
    }

    fn doorbell(&self) -> Option<Arc<Doorbell>> {
        Some(Consumer::doorbell(self))
    }

    /// Parks on the consumer's doorbell, which the command producers ring after each publish: a
    /// command wakes the journaler at once (a system call on the producer's side only then).
    fn park(&mut self, d: Duration) {
        let bell = Consumer::doorbell(self);
        bell.prepare_park();
        if self.may_have_commands() {
            bell.cancel_park();
            return;
        }
        bell.park_timeout(d);
    }

    fn may_have_commands(&mut self) -> bool {
        self.available() >= self.next_seq() || self.barrier().is_alerted() || self.barrier().is_producer_closed()
    }
}

/// Empty source waits (each up to the sleep bound below) before the journaler backs off to sleeps.
const IDLE_WAITS_BEFORE_BACKOFF: u32 = 2;
/// First idle sleep of that back-off (it doubles up to [`IDLE_SLEEP_MAX`]).
const IDLE_SLEEP_MIN: Duration = Duration::from_micros(50);
/// Longest idle sleep of that back-off, for a source without a doorbell (a plain sleep: it is
/// the latency the first command after an idle period may wait). A source with a doorbell parks
/// up to [`DOORBELL_PARK_MAX`] instead: the producers ring it, so a long park adds no latency.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(1);

/// Longest single stretch of the idle spin before the journaler loop runs again (so an `async`
/// sync that falls due, or a stop, is noticed at most this late).
const IDLE_SPIN_CHUNK: Duration = Duration::from_micros(50);

/// Counters of a journaler run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalerStats {
    /// Commands journaled.
    pub commands: u64,
    /// Group commits (batches).
    pub batches: u64,
    /// Largest batch.
    pub max_batch: u64,
    /// Writer counters at the end.
    pub writer: crate::writer::WriterStats,
    /// Durable sequence at the end.
    pub durable_seq: Seq,
}

/// The journaler agent: a thread running [`Journaler::run`].
#[derive(Debug)]
pub struct Journaler {
    durable: Arc<DurableSeq>,
    stop: Arc<AtomicBool>,
    /// The source's doorbell (rung by `stop`).
    bell: Option<Arc<Doorbell>>,
    handle: JoinHandle<Result<JournalerStats>>,
}

impl Journaler {
    /// Starts the journaler thread. It runs until the source closes (or [`Journaler::stop`]),
    /// then syncs and closes the writer.
    pub fn spawn<S: CommandSource + 'static>(writer: JournalWriter, source: S) -> Result<Journaler> {
        Journaler::spawn_with_idle_spin(writer, source, Duration::ZERO)
    }

    /// [`Journaler::spawn`] with a bounded idle spin (the gateway's `spin` wait profile): for up
    /// to `idle_spin` after its last batch, a journaler with nothing to read spins
    /// (`spin_loop`, checking [`CommandSource::may_have_commands`] on every iteration) instead of
    /// the source's own wait (a few spins and yields, then 20 µs sleeps, which cost ~100 µs each
    /// on a VM). Commands usually come in bursts, so one that follows another soon is picked up
    /// within a few hundred nanoseconds; after `idle_spin` without commands it waits as before
    /// and uses no CPU. Costs up to one core for `idle_spin` after every batch. `ZERO`: no spin
    /// phase (as `spawn`). What is written, synced and published is unchanged.
    pub fn spawn_with_idle_spin<S: CommandSource + 'static>(
        writer: JournalWriter,
        source: S,
        idle_spin: Duration,
    ) -> Result<Journaler> {
        let durable = Arc::new(DurableSeq::new(writer.durable_seq()));
        let stop = Arc::new(AtomicBool::new(false));
        let bell = source.doorbell();
        let (d, s) = (durable.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("tw-journaler".into())
            .spawn(move || {
                let mut source = source;
                Journaler::run_with_idle_spin(writer, &mut source, &d, &s, idle_spin)
            })
            .map_err(|e| JournalError::Failed(format!("cannot start the journaler thread: {e}")))?;
        Ok(Journaler { durable, stop, bell, handle })
    }

    /// The barrier the outbound publishers wait on.
    pub fn durable(&self) -> Arc<DurableSeq> {
        self.durable.clone()
    }

    /// Asks the journaler to finish once the source has nothing available.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(b) = &self.bell {
            // A parked journaler sees the stop now rather than when its park times out.
            b.ring();
        }
    }

    /// Waits for the thread's end.
    pub fn join(self) -> Result<JournalerStats> {
        self.handle.join().map_err(|_| JournalError::Failed("journaler thread panicked".into()))?
    }

    /// The journaler loop, on the caller's thread (an agent the pipeline pins): drain the source
    /// in batches of at most `max_batch`, append + commit each batch as one group, publish the
    /// durable sequence. Idle: `async` syncs when due. Any error marks `durable` failed (the
    /// barrier stops; nothing after it is released) and is returned.
    pub fn run<S: CommandSource + ?Sized>(
        writer: JournalWriter,
        source: &mut S,
        durable: &DurableSeq,
        stop: &AtomicBool,
    ) -> Result<JournalerStats> {
        Self::run_with_idle_spin(writer, source, durable, stop, Duration::ZERO)
    }

    /// [`Journaler::run`] with a bounded idle spin (see [`Journaler::spawn_with_idle_spin`]).
    pub fn run_with_idle_spin<S: CommandSource + ?Sized>(
        mut writer: JournalWriter,
        source: &mut S,
        durable: &DurableSeq,
        stop: &AtomicBool,
        idle_spin: Duration,
    ) -> Result<JournalerStats> {
        let r = Self::run_inner(&mut writer, source, durable, stop, idle_spin);
        let r = match r {
            Ok(mut st) => match writer.close() {
                Ok(d) => {
                    durable.publish(d);
                    st.durable_seq = d;
                    Ok(st)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if r.is_err() {
            durable.fail();
        }
        r
    }

    /// Spins until the source may have commands, a stop is asked, `end` passes, or
    /// [`IDLE_SPIN_CHUNK`] passes. Returns `false` once `end` has passed (the spin is over).
    fn idle_spin<S: CommandSource + ?Sized>(source: &mut S, stop: &AtomicBool, end: Instant) -> bool {
        let start = Instant::now();
        if start >= end {
            return false;
        }
        let chunk_end = end.min(start + IDLE_SPIN_CHUNK);
        let mut i = 0u32;
        loop {
            if source.may_have_commands() || stop.load(Ordering::Acquire) {
                return true;
            }
            i = i.wrapping_add(1);
            if i.is_multiple_of(16) {
                // Lets another runnable thread on this CPU go first (few-core machines).
                std::thread::yield_now();
            } else {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
            let now = Instant::now();
            if now >= chunk_end {
                return now < end;
            }
        }
    }

    fn run_inner<S: CommandSource + ?Sized>(
        writer: &mut JournalWriter,
        source: &mut S,
        durable: &DurableSeq,
        stop: &AtomicBool,
        idle_spin: Duration,
    ) -> Result<JournalerStats> {
        let max = writer.config().max_batch;
        let mut buf: Vec<Command> = Vec::with_capacity(max);
        let mut st = JournalerStats::default();
        // End of the idle spin that follows the last batch (only with `idle_spin`).
        let mut spin_until: Option<Instant> = None;
        // Empty waits in a row, and the current idle sleep: after IDLE_WAITS_BEFORE_BACKOFF empty
        // waits the journaler sleeps instead of calling the source's (spinning) wait, doubling from
        // IDLE_SLEEP_MIN to IDLE_SLEEP_MAX (DOORBELL_PARK_MAX for a source with a doorbell), so an
        // idle server does not keep a core busy. Reset by any batch. A plain sleep costs at most
        // IDLE_SLEEP_MAX on the first command after a long idle; a doorbell park costs nothing.
        let mut idle_waits = 0u32;
        let mut idle_sleep = IDLE_SLEEP_MIN;
        let sleep_max = if source.doorbell().is_some() { DOORBELL_PARK_MAX } else { IDLE_SLEEP_MAX };
        loop {
            buf.clear();
            let state = source.poll(&mut buf, max);
            if !buf.is_empty() {
                writer.append(&buf)?;
                let d = writer.commit()?;
                durable.publish(d);
                st.commands += buf.len() as u64;
                st.batches += 1;
                st.max_batch = st.max_batch.max(buf.len() as u64);
                if !idle_spin.is_zero() {
                    spin_until = Some(Instant::now() + idle_spin);
                }
                idle_waits = 0;
                idle_sleep = IDLE_SLEEP_MIN;
                continue;
            }
            if state == SourcePoll::Closed || stop.load(Ordering::Acquire) {
                st.writer = writer.stats();
                return Ok(st);
            }
            if writer.sync_due() {
                durable.publish(writer.sync()?);
            }
            if let Some(end) = spin_until {
                if Self::idle_spin(source, stop, end) {
                    continue;
                }
                spin_until = None;
            }
            let t = writer.sync_due_in().unwrap_or(sleep_max).max(Duration::from_micros(10));
            if idle_waits < IDLE_WAITS_BEFORE_BACKOFF {
                idle_waits += 1;
                source.wait(t);
            } else if source.may_have_commands() {
                idle_waits = 0;
            } else {
                source.park(idle_sleep.min(t));
                idle_sleep = (idle_sleep * 2).min(sleep_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, JournalConfig, RecoverOptions};
    use tickwire_core::pipeline::{Pipeline, PipelineConfig};
    use tickwire_core::{EngineConfig, InstrumentConfig};

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("tickwire-journaler-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// With a bounded idle spin, on the real inbound ring: commands sent in bursts separated by
    /// pauses longer than the spin (so the journaler also goes back to its sleeping wait) all
    /// become durable, and a stop during a spin ends the journaler.
    #[test]
    fn idle_spin_journals_everything_and_stops() {
        for durability in [Durability::None, Durability::Sync] {
            let dir = temp_dir(&format!("spin-{durability}"));
            let jcfg = JournalConfig { durability, ..JournalConfig::new(&dir) };
            let (writer, _) = JournalWriter::open_dir(jcfg, RecoverOptions::default()).unwrap();
            let ecfg = EngineConfig {
                instruments: vec![InstrumentConfig::simple(1, "A")],
                orders_max: 1024,
                levels_max: 64,
                accounts_max: 16,
                ..EngineConfig::single_default()
            };
            let mut pcfg = PipelineConfig::new(ecfg);
            pcfg.inbound_side_consumers = 1;
            pcfg.inbound_capacity = 1 << 8;
            let (mut pipeline, _consumers) = Pipeline::start(pcfg, 1).unwrap();
            let side = pipeline.take_inbound_side_consumers().pop().unwrap();
            let j = Journaler::spawn_with_idle_spin(writer, side, Duration::from_micros(300)).unwrap();
            let durable = j.durable();
            let mut producer = pipeline.producer();
            let mut last = 0;
            for burst in 0..6u64 {
                for i in 0..(1 + burst * 7) {
                    last = producer.send(Command::set_halted(1, i % 2 == 0));
                }
                assert_eq!(durable.wait_for(last, Duration::from_secs(30)).unwrap(), last, "{durability}");
                // Longer than the spin: the next burst finds the journaler in its sleeping wait.
                std::thread::sleep(Duration::from_millis(if burst % 2 == 0 { 3 } else { 0 }));
            }
            j.stop();
            let st = j.join().unwrap();
            assert_eq!(st.commands, last, "{durability}");
            assert_eq!(st.durable_seq, last);
            drop(pipeline);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A source without a cheap readiness check (the default `may_have_commands`) still works
    /// with the spin: it is polled again until the spin ends.
    #[test]
    fn idle_spin_with_a_channel_source() {
        let dir = temp_dir("spin-channel");
        let (writer, _) = JournalWriter::open_dir(JournalConfig::new(&dir), RecoverOptions::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let j = Journaler::spawn_with_idle_spin(writer, ChannelSource::new(rx), Duration::from_micros(200)).unwrap();
        let durable = j.durable();
        for seq in 1..=20u64 {
            tx.send(Command::set_halted(1, seq % 2 == 0).with_seq(seq, seq)).unwrap();
            if seq % 5 == 0 {
                assert_eq!(durable.wait_for(seq, Duration::from_secs(30)).unwrap(), seq);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(tx);
        let st = j.join().unwrap();
        assert_eq!((st.commands, st.durable_seq), (20, 20));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
