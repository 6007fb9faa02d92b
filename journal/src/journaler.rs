//! The journaler agent and the "durable up to" barrier.
//!
//! Disruptor style: the journaler consumes the inbound command sequence in parallel with the
//! matcher (it is one more consumer of the inbound ring), group-commits what it finds, and
//! publishes [`DurableSeq`]. Publishers of outbound events wait until `DurableSeq >= cmd_seq`
//! of an event before releasing it; the matcher itself never waits for the disk.
//!
//! Wiring to the pipeline (`tickwire_core::pipeline`): set `inbound_side_consumers = 1`, pass the
//! consumer from `Pipeline::take_inbound_side_consumers` to [`Journaler::spawn`] (it implements
//! [`CommandSource`]), and give [`DurableSeq::sequence`] to every `EventConsumer::set_durable`.

use crate::writer::JournalWriter;
use crate::{JournalError, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tickwire_core::ring::{Consumer, Sequence};
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
}

impl DurableSeq {
    /// A barrier at `seq` (the last command already durable, 0 if none).
    pub fn new(seq: Seq) -> DurableSeq {
        DurableSeq { seq: Arc::new(Sequence::new(seq)), failed: AtomicBool::new(false) }
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
    }

    /// Marks the journal failed: the value will not advance any more. Waiters get an error.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
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
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
}

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
    handle: JoinHandle<Result<JournalerStats>>,
}

impl Journaler {
    /// Starts the journaler thread. It runs until the source closes (or [`Journaler::stop`]),
    /// then syncs and closes the writer.
    pub fn spawn<S: CommandSource + 'static>(writer: JournalWriter, source: S) -> Result<Journaler> {
        let durable = Arc::new(DurableSeq::new(writer.durable_seq()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (durable.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("tw-journaler".into())
            .spawn(move || {
                let mut source = source;
                Journaler::run(writer, &mut source, &d, &s)
            })
            .map_err(|e| JournalError::Failed(format!("cannot start the journaler thread: {e}")))?;
        Ok(Journaler { durable, stop, handle })
    }

    /// The barrier the outbound publishers wait on.
    pub fn durable(&self) -> Arc<DurableSeq> {
        self.durable.clone()
    }

    /// Asks the journaler to finish once the source has nothing available.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
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
        mut writer: JournalWriter,
        source: &mut S,
        durable: &DurableSeq,
        stop: &AtomicBool,
    ) -> Result<JournalerStats> {
        let r = Self::run_inner(&mut writer, source, durable, stop);
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

    fn run_inner<S: CommandSource + ?Sized>(
        writer: &mut JournalWriter,
        source: &mut S,
        durable: &DurableSeq,
        stop: &AtomicBool,
    ) -> Result<JournalerStats> {
        let max = writer.config().max_batch;
        let mut buf: Vec<Command> = Vec::with_capacity(max);
        let mut st = JournalerStats::default();
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
                continue;
            }
            if state == SourcePoll::Closed || stop.load(Ordering::Acquire) {
                st.writer = writer.stats();
                return Ok(st);
            }
            if writer.sync_due() {
                durable.publish(writer.sync()?);
            }
            let t = writer.sync_due_in().unwrap_or(Duration::from_millis(1)).max(Duration::from_micros(10));
            source.wait(t);
        }
    }
}
