//! The engine side of `c100k`: a matching engine in this process (its own thread) driven by a
//! generated order flow at a fixed rate, publishing every event into a shared-memory outbound
//! ring that the `tickwire-feed --shm` shard processes read. Each command is stamped with the
//! wall clock when the engine handles it; the feed copies that stamp into DeltaBatch and Trade
//! messages, so a subscriber's fan-out latency is its receive time minus that stamp.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::ring::{RingBuffer, SingleProducer, WaitStrategyKind};
use tickwire_core::{Command, Engine, EngineConfig, Event, InstrumentConfig, OrderType, Side};

/// Ring capacity in events (64 B each): 64 MiB of /dev/shm, hours of flow at the rates used.
pub const RING_EVENTS: usize = 1 << 20;

pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The running order flow.
pub struct OrderFlow {
    stop: Arc<AtomicBool>,
    pub commands: Arc<AtomicU64>,
    #[allow(dead_code)]
    pub events: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OrderFlow {
    /// Creates the ring at `path` (so shards can attach before the flow starts) and returns
    /// its producer.
    pub fn create_ring(path: &Path) -> Result<SingleProducer<Event>, String> {
        let _ = std::fs::remove_file(path);
        let ring: RingBuffer<Event> =
            RingBuffer::create_shm(path, RING_EVENTS, 1).map_err(|e| format!("shm ring {}: {e:?}", path.display()))?;
        // No gating consumer: the shards read with lossy readers and never hold the engine back.
        let (p, _) = ring.into_single_producer(0, WaitStrategyKind::Yielding { spins: 100 });
        Ok(p)
    }

    /// Starts `rate` commands per second over `instruments` instruments (ids 1..=n).
    pub fn start(mut producer: SingleProducer<Event>, rate: f64, instruments: u32) -> Result<OrderFlow, String> {
        let cfg = EngineConfig {
            instruments: (1..=instruments).map(|i| InstrumentConfig::simple(i, &format!("I{i}"))).collect(),
            ..EngineConfig::single_default()
        };
        let mut engine = Engine::new(&cfg).map_err(|e| format!("engine: {e:?}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let commands = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let (s2, c2, e2) = (stop.clone(), commands.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name("c100k-engine".into())
            .spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                // Live orders per instrument, oldest first: (account, id).
                let mut live: Vec<std::collections::VecDeque<(u32, u64)>> = vec![Default::default(); instruments as usize + 1];
                let mut next_id = 0u64;
                let mut evs: Vec<Event> = Vec::new();
                let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
                let t0 = Instant::now();
                let mut seq = 0u64;
                while !s2.load(Ordering::Relaxed) {
                    let due = t0 + period.mul_f64(seq as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep((due - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    let inst = 1 + (seq % instruments as u64) as u32;
                    let book = &mut live[inst as usize];
                    let r = next();
                    let cmd = if book.len() > 60 || (r % 10 < 2 && !book.is_empty()) {
                        let (a, id) = book.pop_front().unwrap_or((1, 0));
                        Command::cancel(a, inst, id)
                    } else {
                        next_id += 1;
                        let side = if r & 1 == 0 { Side::Buy } else { Side::Sell };
                        // Mostly passive prices around 10_000; about one in eight crosses.
                        let off = ((r >> 8) % 10) as i64;
                        let cross = (r >> 16) % 8 == 0;
                        let price = match (side, cross) {
                            (Side::Buy, false) => 9_999 - off,
                            (Side::Sell, false) => 10_001 + off,
                            (Side::Buy, true) => 10_011,
                            (Side::Sell, true) => 9_989,
                        };
                        let acct = 1 + ((r >> 24) % 16) as u32;
                        book.push_back((acct, next_id));
                        Command::new_order(acct, inst, next_id, side, OrderType::LimitGtc, Some(price), 1 + (r >> 32) % 20, None)
                    };
                    seq += 1;
                    evs.clear();
                    engine.handle(&cmd.with_seq(seq, wall_ns()), &mut evs);
                    for e in &evs {
                        producer.push(e);
                    }
                    producer.publish();
                    c2.fetch_add(1, Ordering::Relaxed);
                    e2.fetch_add(evs.len() as u64, Ordering::Relaxed);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(OrderFlow { stop, commands, events, thread: Some(thread) })
    }
}

impl Drop for OrderFlow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
