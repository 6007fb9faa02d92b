//! tickwire-feed: market-data fan-out over WebSocket. Protocol: `docs/market-data.md`.
//!
//! # Design choices
//!
//! - **Shards.** A shard is one thread (or one process) with its own epoll loop, listener,
//!   books and connections; nothing is shared between shards. Listeners use `SO_REUSEPORT`
//!   ([`sys::bind_reuseport`]) so several shards — threads of one process ([`Feed::spawn`]) or
//!   separate `tickwire-feed` processes — share one port and the kernel spreads the connections.
//!   Each shard consumes the whole engine event stream itself (an in-process channel,
//!   [`source::channel`], or the engine's shared-memory outbound ring through a lossy reader,
//!   [`source::ShmSource`]), so shards never wait on each other.
//! - **Sans-IO core.** [`hub::Hub`] holds everything that is not a syscall: per-instrument books
//!   (`MdBook`, for snapshots and checksums), sequences, replay windows, connection state machines
//!   (handshake, RFC 6455 frames, subscriptions, budgets), fan-out. Tests drive it with byte
//!   slices and fake writers. [`ws`] is the RFC 6455 part (handshake via `httparse` and
//!   `tungstenite::handshake::derive_accept_key`; client frames parsed here — tungstenite's
//!   reader zero-fills a buffer on every read, which costs memory and time per connection).
//! - **OS code behind one trait** (`sys::Backend`: wait / accept / read / writev / close /
//!   notifier), implemented by `sys/epoll.rs` with mio (edge-triggered) and by `sys/uring.rs`
//!   with io_uring (multishot accept and receive into a provided-buffer ring, one send per
//!   connection per wake-up, one submission per loop iteration); [`sys::BackendKind`] picks one
//!   (`ShardConfig::backend`, `tickwire-feed --backend`).
//! - **Encode once.** A server frame is unmasked, so its bytes are the same for every subscriber:
//!   each message is encoded once, WebSocket header included, into a `bytes::Bytes` held once
//!   in the shard's frame table; subscribers' queues hold 4-byte ids with a plain (non-atomic)
//!   count per frame, the replay window shares the `Bytes`. Snapshots are cached per instrument
//!   until its sequence moves.
//! - **Batching.** Per wake-up the shard drains up to 64 Ki engine events, then per instrument
//!   emits Trades and Status as they came and one DeltaBatch with all level updates (its checksum
//!   computed once), then writes each dirty connection's queue with **one `writev`** (up to 64
//!   frames; more only if the kernel took everything). A pass over many connections looks at
//!   the source 8 times on the way, so what arrives mid-pass rides with the connections still
//!   ahead instead of waiting for the next pass.
//! - **Tiny idle connections.** A connection is a small struct (state, counters, an empty
//!   `VecDeque`, its subscription list); reads go to one 64 KiB scratch buffer per shard, and
//!   bytes are kept per connection only while a handshake or a client frame spans reads. Queues
//!   give back their memory when drained after a burst.
//! - **Slow consumers.** Each connection has an outbound budget. Over it: `Conflate` drops the
//!   queue (keeping a half-written frame so the stream stays valid), stops queueing, and sends
//!   fresh snapshots once the socket drains; or `Disconnect` sends Error slow_consumer + Close
//!   1008. Both are counted. Other connections never wait for a slow one.
//! - **Resume.** Each instrument keeps its last frames (bounded in count and bytes); Resume
//!   replays them from `last_seq + 1`, else answers Error resume_unavailable + Snapshot.
//! - **Untrusted input.** Client bytes go through the handshake parser, the frame parser and the
//!   message decoder, which return errors (close codes, Error messages), never panic; no
//!   `unwrap` is reachable from client bytes.
//!
//! # Starting a feed
//!
//! In-process (the gateway/server): [`Feed::spawn`] with a [`FeedConfig`]; give every engine
//! event batch to [`Feed::publish`] (from the outbound ring's consumer). As shard processes: run
//! `tickwire-feed --listen ADDR --shm /dev/shm/RING` once per shard.

pub mod hub;
mod frames;
pub mod shard;
pub mod source;
pub mod sys;
pub mod ws;

pub use hub::{ConnId, Hub, HubConfig, HubStats, SlowPolicy};
pub use shard::{FeedShard, ShardConfig, ShardMemory};
pub use source::{channel, ChannelSource, EventSource, FeedSender, ShmSource};
pub use sys::BackendKind;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tickwire_core::engine::Level;
use tickwire_core::{Engine, Event, Side};

/// Configuration of an in-process feed.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Address to listen on (port 0: any; every shard then shares the port the first one got).
    pub listen: SocketAddr,
    /// Shard threads (each its own listener on the same port).
    pub shards: usize,
    /// Per-shard settings.
    pub shard: ShardConfig,
}

impl FeedConfig {
    /// One shard on `listen` serving `instruments` with default limits.
    pub fn new(listen: SocketAddr, instruments: Vec<tickwire_core::InstrumentId>) -> FeedConfig {
        FeedConfig { listen, shards: 1, shard: ShardConfig::new(HubConfig::new(instruments)) }
    }

    /// The same, on another OS backend (sets `shard.backend`).
    pub fn with_backend(mut self, backend: BackendKind) -> FeedConfig {
        self.shard.backend = backend;
        self
    }
}

/// A running in-process feed: shard threads plus the senders that feed them.
pub struct Feed {
    senders: Vec<FeedSender>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stop: Arc<AtomicBool>,
    notifiers: Vec<sys::Notifier>,
    stats: Vec<Arc<Mutex<HubStats>>>,
    addr: SocketAddr,
}

/// Initial state of the books when the feed starts after the engine (see [`seed_from_engine`]).
#[derive(Clone, Debug, Default)]
pub struct Seed {
    /// `(instrument, bids best first, asks best first, halted)`.
    pub books: Vec<(tickwire_core::InstrumentId, Vec<Level>, Vec<Level>, bool)>,
    /// Engine sequence already reflected in the books (`Engine::next_event_seq() - 1`).
    pub engine_seq: tickwire_core::Seq,
}

/// Reads an engine's books (all levels) for [`Feed::spawn_seeded`].
pub fn seed_from_engine(engine: &Engine) -> Seed {
    let mut seed = Seed { books: Vec::new(), engine_seq: engine.next_event_seq() - 1 };
    for &id in engine.instrument_ids() {
        let (mut b, mut a) = (Vec::new(), Vec::new());
        engine.depth(id, Side::Buy, usize::MAX, &mut b);
        engine.depth(id, Side::Sell, usize::MAX, &mut a);
        let halted = engine.book(id).is_some_and(|bk| bk.halted);
        seed.books.push((id, b, a, halted));
    }
    seed
}

impl Feed {
    /// Starts `cfg.shards` shard threads with empty books.
    pub fn spawn(cfg: FeedConfig) -> io::Result<Feed> {
        Feed::spawn_seeded(cfg, Seed::default())
    }

    /// Starts the shards with books already loaded (a feed started after the engine).
    pub fn spawn_seeded(cfg: FeedConfig, seed: Seed) -> io::Result<Feed> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut feed = Feed {
            senders: Vec::new(),
            threads: Vec::new(),
            stop: stop.clone(),
            notifiers: Vec::new(),
            stats: Vec::new(),
            addr: cfg.listen,
        };
        for i in 0..cfg.shards.max(1) {
            let listener = sys::bind_reuseport(feed.addr, 1024)?;
            if i == 0 {
                feed.addr = listener.local_addr()?;
            }
            let (tx, rx) = source::channel();
            let mut shard_cfg = cfg.shard.clone();
            shard_cfg.hub.shard = u32::try_from(i).unwrap_or(u32::MAX);
            let mut shard = FeedShard::new(listener, rx, shard_cfg)?;
            for (id, b, a, halted) in &seed.books {
                shard.hub_mut().seed_book(*id, b, a, *halted, 0);
            }
            shard.hub_mut().set_engine_seq(seed.engine_seq);
            feed.notifiers.push(shard.notifier());
            feed.stats.push(shard.stats_handle());
            feed.senders.push(tx);
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("tickwire-feed-{i}"))
                .spawn(move || shard.run(&stop))?;
            feed.threads.push(t);
        }
        Ok(feed)
    }

    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands a batch of engine events (in engine order) to every shard.
    pub fn publish(&self, events: &[Event]) {
        for s in &self.senders {
            s.send(events);
        }
    }

    /// A sender per shard (to publish from several places, or from another thread).
    pub fn senders(&self) -> &[FeedSender] {
        &self.senders
    }

    /// Counters summed over the shards (refreshed every tick).
    pub fn stats(&self) -> HubStats {
        let mut t = HubStats::default();
        for s in &self.stats {
            if let Ok(s) = s.lock() {
                t.merge(&s);
            }
        }
        t
    }

    /// Stops every shard and waits for them; returns the first error a shard had.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        for n in &self.notifiers {
            n.notify();
        }
        let mut res = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => res = res.and(Err(e)),
                Err(_) => res = res.and(Err(io::Error::other("feed shard panicked"))),
            }
        }
        res
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.stop_threads();
    }
}
