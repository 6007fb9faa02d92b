//! Where a shard's engine events come from: in-process (a channel fed by the engine's outbound
//! consumer) or another process's shared-memory ring (a lossy reader that detects being lapped).

use crate::sys::Notifier;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tickwire_core::ring::LossyReader;
use tickwire_core::Event;

/// A stream of engine events, in engine sequence order.
pub trait EventSource: Send {
    /// Appends up to `max` available events to `out`; returns how many. Never blocks.
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize;
    /// `None` if the source wakes the shard itself (through the notifier it was given), else how
    /// often the shard must poll it.
    fn poll_interval(&self) -> Option<Duration>;
    /// Receives the shard's notifier once, before the first poll.
    fn set_notifier(&mut self, _n: Notifier) {}
    /// Whether no more events will ever come (the producer is gone).
    fn is_closed(&self) -> bool {
        false
    }
}

/// The producer end of an in-process source: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct FeedSender {
    tx: Sender<Vec<Event>>,
    notifier: Arc<OnceLock<Notifier>>,
}

impl FeedSender {
    /// Hands a batch of events (in engine order) to the shard and wakes it. Returns false if the
    /// shard is gone.
    pub fn send(&self, events: &[Event]) -> bool {
        if events.is_empty() {
            return true;
        }
        let ok = self.tx.send(events.to_vec()).is_ok();
        if let Some(n) = self.notifier.get() {
            n.notify();
        }
        ok
    }
}

/// The shard end of an in-process source.
pub struct ChannelSource {
    rx: Receiver<Vec<Event>>,
    notifier: Arc<OnceLock<Notifier>>,
    /// A batch partly handed out (when `max` cut it).
    carry: Vec<Event>,
    carry_pos: usize,
    closed: bool,
}

/// An unbounded in-process event channel.
pub fn channel() -> (FeedSender, ChannelSource) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let notifier = Arc::new(OnceLock::new());
    (
        FeedSender { tx, notifier: notifier.clone() },
        ChannelSource { rx, notifier, carry: Vec::new(), carry_pos: 0, closed: false },
    )
}

impl EventSource for ChannelSource {
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let start = out.len();
        while out.len() - start < max {
            if self.carry_pos < self.carry.len() {
                let n = (max - (out.len() - start)).min(self.carry.len() - self.carry_pos);
                out.extend_from_slice(&self.carry[self.carry_pos..self.carry_pos + n]);
                self.carry_pos += n;
                continue;
            }
            match self.rx.try_recv() {
                Ok(b) => {
                    self.carry = b;
                    self.carry_pos = 0;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        out.len() - start
    }
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
    fn set_notifier(&mut self, n: Notifier) {
        let _ = self.notifier.set(n);
    }
    fn is_closed(&self) -> bool {
        self.closed && self.carry_pos >= self.carry.len()
    }
}

/// Reads the engine's outbound ring in shared memory (e.g. `/dev/shm/tickwire.events`) without
/// ever holding back the engine. Being lapped loses events: counted in `lapped` and seen by the
/// hub as an engine sequence gap.
pub struct ShmSource {
    reader: LossyReader<Event>,
    /// Times the reader was lapped.
    pub lapped: u64,
    interval: Duration,
}

impl ShmSource {
    /// Attaches read-only to the ring file; starts at the oldest event still in the ring.
    pub fn open(path: &std::path::Path, interval: Duration) -> Result<ShmSource, tickwire_core::ring::RingError> {
        Ok(ShmSource { reader: LossyReader::open(path)?, lapped: 0, interval })
    }
    /// The first engine sequence this reader will return.
    pub fn next_seq(&self) -> tickwire_core::Seq {
        self.reader.next_seq()
    }
}

impl EventSource for ShmSource {
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> usize {
        let start = out.len();
        loop {
            let want = max - (out.len() - start);
            if want == 0 {
                break;
            }
            match self.reader.poll(want, |e, _, _| out.push(*e)) {
                Ok(_) => break,
                Err(_) => self.lapped += 1,
            }
        }
        out.len() - start
    }
    fn poll_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    fn is_closed(&self) -> bool {
        self.reader.is_writer_closed() && self.reader.published() < self.reader.next_seq()
    }
}
