//! One feed shard: an event loop that owns a listener, a [`Hub`] and an [`EventSource`].

use crate::hub::{ConnId, Flush, Hub, HubConfig, HubStats};
use crate::source::EventSource;
use crate::sys::{AnyBackend, Backend, BackendKind, Notifier, Ready};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tickwire_core::Event;

/// Size of the one read buffer all connections of a shard share.
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Engine events consumed per wake-up at most (then the loop comes back for more).
pub const EVENTS_PER_WAKE: usize = 65_536;
/// Looks at the source per write pass (see `FeedShard::flush_and_close`): each look that finds
/// events queues them to every subscriber, so more looks mean lower latency but more, smaller
/// frames and more queueing work per pass.
pub const SOURCE_POLLS_PER_PASS: usize = 8;
/// Connections written between two looks at the source at least.
pub const CONNS_PER_SOURCE_POLL_MIN: usize = 128;
/// Reads of one connection per wake-up at most (each up to [`SCRATCH_BYTES`]): a client that
/// sends without pause is read again on the next wake-up, after the others were served.
pub const READS_PER_CONN_PER_WAKE: usize = 4;
/// Write passes over the dirty connections per wake-up at most (then the loop serves accepts,
/// reads and timers, and comes back without sleeping).
pub const PASSES_PER_WAKE: usize = 2;

/// Memory a shard holds in user space, accounted from sizes and capacities
/// ([`FeedShard::memory`]; inventory in docs/market-data.md, *Memory per connection*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMemory {
    /// Connections open.
    pub conns: usize,
    /// Bytes the hub holds for connections ([`Hub::conn_memory_bytes`]).
    pub hub_bytes: usize,
    /// Bytes the backend holds for connections.
    pub backend_bytes: usize,
    /// Per-shard bytes allocated whatever the connections (read scratch, receive buffers).
    pub fixed_bytes: usize,
}

impl ShardMemory {
    /// `(hub_bytes + backend_bytes) / conns` (0 without connections).
    pub fn per_conn_bytes(&self) -> usize {
        (self.hub_bytes + self.backend_bytes).checked_div(self.conns).unwrap_or(0)
    }
}

/// Shard settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Hub limits and policies.
    pub hub: HubConfig,
    /// Housekeeping period (heartbeats, lingering connections).
    pub tick: Duration,
    /// Send a Heartbeat every tick.
    pub heartbeats: bool,
    /// SO_SNDBUF for accepted sockets (bounds the kernel's memory per subscriber; `None`: the
    /// system default, autotuned).
    pub sndbuf: Option<usize>,
    /// OS interface (epoll or io_uring).
    pub backend: BackendKind,
    /// Levels per side of the top-N channel (`md::CH_TOP`).
    pub top_depth: usize,
    /// Least time between two top-N views of one instrument (the channel's conflation interval).
    pub top_interval: Duration,
}

impl ShardConfig {
    /// Defaults: 1 s tick with heartbeats.
    pub fn new(hub: HubConfig) -> ShardConfig {
        ShardConfig {
            hub,
            tick: Duration::from_secs(1),
            heartbeats: true,
            sndbuf: None,
            backend: BackendKind::Epoll,
            top_depth: 10,
            top_interval: Duration::from_millis(100),
        }
    }
}

/// One shard: call [`FeedShard::run`] on its own thread (or process).
pub struct FeedShard<S: EventSource> {
    hub: Hub,
    backend: AnyBackend,
    source: S,
    cfg: ShardConfig,
    local: SocketAddr,
    scratch: Box<[u8]>,
    evbuf: Vec<Event>,
    ready: Vec<Ready>,
    ids: Vec<ConnId>,
    /// Connections whose reads stopped at [`READS_PER_CONN_PER_WAKE`] with input left: read
    /// again on the next wake-up (edge-triggered readiness will not say so again).
    reread: Vec<ConnId>,
    /// Longest write pass since the last tick, in ns (published as `write_pass_ns_max`).
    pass_ns_max: u64,
    stats_out: Arc<Mutex<HubStats>>,
}

impl<S: EventSource> FeedShard<S> {
    /// A shard on `listener` (see [`crate::sys::bind_reuseport`]) reading `source`.
    pub fn new(listener: std::net::TcpListener, mut source: S, cfg: ShardConfig) -> io::Result<FeedShard<S>> {
        let local = listener.local_addr()?;
        let backend = AnyBackend::new(cfg.backend, listener, cfg.sndbuf)?;
        source.set_notifier(backend.notifier());
        let mut hub_cfg = cfg.hub.clone();
        if hub_cfg.pid == 0 {
            hub_cfg.pid = std::process::id();
        }
        let mut hub = Hub::new(hub_cfg);
        hub.set_top_channel(cfg.top_depth, cfg.top_interval.as_nanos().min(u64::MAX as u128) as u64);
        Ok(FeedShard {
            hub,
            backend,
            source,
            cfg,
            local,
            scratch: vec![0u8; SCRATCH_BYTES].into_boxed_slice(),
            evbuf: Vec::new(),
            ready: Vec::new(),
            ids: Vec::new(),
            reread: Vec::new(),
            pass_ns_max: 0,
            stats_out: Arc::new(Mutex::new(HubStats::default())),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The OS interface this shard runs on.
    pub fn backend_kind(&self) -> BackendKind {
        self.cfg.backend
    }

    /// The hub (e.g. to seed books before running).
    pub fn hub_mut(&mut self) -> &mut Hub {
        &mut self.hub
    }

    /// The user-space memory this shard holds, per connection and fixed.
    pub fn memory(&self) -> ShardMemory {
        ShardMemory {
            conns: self.hub.open_conns(),
            hub_bytes: self.hub.conn_memory_bytes(),
            backend_bytes: self.backend.conn_memory_bytes()
                + self.ids.capacity() * std::mem::size_of::<ConnId>()
                + self.ready.capacity() * std::mem::size_of::<Ready>(),
            fixed_bytes: self.backend.fixed_memory_bytes() + self.scratch.len(),
        }
    }

    /// Wakes the shard from another thread.
    pub fn notifier(&self) -> Notifier {
        self.backend.notifier()
    }

    /// Counters, refreshed every tick, readable from any thread.
    pub fn stats_handle(&self) -> Arc<Mutex<HubStats>> {
        self.stats_out.clone()
    }

    /// Runs until `stop` is set (checked at least every tick; notify to stop sooner).
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut next_tick = Instant::now() + self.cfg.tick;
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let mut timeout = next_tick.saturating_duration_since(now);
            if let Some(p) = self.source.poll_interval() {
                timeout = timeout.min(p);
            }
            if let Some(d) = self.hub.next_deadline() {
                // A top-N view waits for its interval.
                timeout = timeout.min(Duration::from_nanos(d.saturating_sub(wall_ns())));
            }
            self.ready.clear();
            self.backend.wait(Some(timeout), &mut self.ready)?;
            self.step();
            if self.hub.next_deadline().is_some_and(|d| d <= wall_ns()) {
                self.hub.on_timer(wall_ns());
                self.flush_and_close();
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + self.cfg.tick;
                self.trim();
                self.hub.on_tick_at(self.cfg.heartbeats, wall_ns());
                self.flush_and_close();
                self.hub.stats.write_pass_ns_max = std::mem::take(&mut self.pass_ns_max);
                if let Ok(mut s) = self.stats_out.lock() {
                    *s = self.hub.stats;
                }
            }
        }
        self.hub.stats.write_pass_ns_max = self.hub.stats.write_pass_ns_max.max(self.pass_ns_max);
        if let Ok(mut s) = self.stats_out.lock() {
            *s = self.hub.stats;
        }
        Ok(())
    }

    /// One wake-up: engine events → publish; then connection readiness; then writes and closes.
    fn step(&mut self) {
        self.pump_source();
        let mut reread = std::mem::take(&mut self.reread);
        for &id in &reread {
            self.read_all(id);
        }
        reread.clear();
        if self.reread.is_empty() {
            // Keep the allocation.
            self.reread = reread;
        }
        let ready = std::mem::take(&mut self.ready);
        for r in &ready {
            match *r {
                Ready::Wake => {}
                Ready::Listener => self.accept_all(),
                Ready::Conn { id, readable, writable } => {
                    if readable {
                        self.read_all(id);
                    }
                    if writable && self.hub.is_open(id) {
                        self.flush_one(id);
                    }
                }
            }
        }
        self.ready = ready;
        self.flush_and_close();
    }

    /// Takes what the source has (up to [`EVENTS_PER_WAKE`] events) and queues the frames to the
    /// subscribers.
    fn pump_source(&mut self) {
        self.evbuf.clear();
        if self.source.poll(&mut self.evbuf, EVENTS_PER_WAKE) > 0 {
            self.hub.on_events(&self.evbuf);
            self.hub.publish_at(wall_ns());
            if self.evbuf.len() == EVENTS_PER_WAKE {
                // More may be waiting: come back without sleeping.
                self.backend.notifier().notify();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let hub = &mut self.hub;
            match self.backend.accept(&mut || hub.open()) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    eprintln!("tickwire-feed: accept: {e}");
                    break;
                }
            }
        }
    }

    fn read_all(&mut self, id: ConnId) {
        for _ in 0..READS_PER_CONN_PER_WAKE {
            if !self.hub.is_open(id) {
                return;
            }
            match self.backend.read(id, &mut self.scratch) {
                Ok(0) => return self.close(id),
                Ok(n) => {
                    self.hub.on_read(id, &mut self.scratch[..n]);
                    if n < self.scratch.len() {
                        // Edge-triggered: a short read means the socket is drained (a later
                        // arrival raises a new edge).
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
        // Full reads all the way: more may be waiting.
        self.reread.push(id);
        self.backend.notifier().notify();
    }

    fn flush_one(&mut self, id: ConnId) {
        let backend = &mut self.backend;
        match self.hub.flush(id, &mut |bufs| backend.writev(id, bufs)) {
            Flush::Done | Flush::Blocked => {}
            Flush::Close => self.close(id),
        }
    }

    /// Writes every connection with something queued, in passes over the dirty list.
    ///
    /// A pass over thousands of connections takes milliseconds (one `writev` each, most of it
    /// the kernel's TCP path), so [`SOURCE_POLLS_PER_PASS`] times per pass it looks at the
    /// source again and queues what arrived to every subscriber: the connections still ahead
    /// in this pass carry it at once, the ones behind get it in the next pass. An update then
    /// waits at most about one pass for its subscriber (not the rest of the current pass and its
    /// place in the next): up to half the fan-out latency when passes run back to back (p50
    /// 65 → 37–42 ms at 10 000 subscribers × 100 updates/s, with the frame table; see
    /// docs/benchmarks.md, *fanout*).
    fn flush_and_close(&mut self) {
        let mut ids = std::mem::take(&mut self.ids);
        let mut passes = 0;
        loop {
            if passes == PASSES_PER_WAKE {
                if self.hub.has_dirty() {
                    // Still busy: serve readiness and timers, then come back without sleeping.
                    self.backend.notifier().notify();
                }
                break;
            }
            self.hub.take_dirty(&mut ids);
            if ids.is_empty() {
                break;
            }
            let every = (ids.len() / SOURCE_POLLS_PER_PASS).max(CONNS_PER_SOURCE_POLL_MIN);
            let start = Instant::now();
            for (k, &id) in ids.iter().enumerate() {
                if k % every == every - 1 {
                    self.backend.submit();
                    self.pump_source();
                }
                self.flush_one(id);
            }
            passes += 1;
            let pass_ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            self.pass_ns_max = self.pass_ns_max.max(pass_ns);
            let st = &mut self.hub.stats;
            st.write_passes += 1;
            st.write_pass_ns_sum = st.write_pass_ns_sum.saturating_add(pass_ns);
        }
        self.hub.take_to_close(&mut ids);
        for &id in &ids {
            self.close(id);
        }
        self.ids = ids;
    }

    /// Gives back what bursts (connection storms, heartbeats) left in tables that grow with the
    /// connections; the next burst grows them again.
    fn trim(&mut self) {
        self.backend.trim();
        self.ids = Vec::new();
        self.ready = Vec::new();
    }

    fn close(&mut self, id: ConnId) {
        if self.hub.is_open(id) {
            self.backend.close(id);
            self.hub.close(id);
        }
    }
}

/// The clock the hub is given: wall-clock ns since the Unix epoch (comparable with engine
/// timestamps, which candles are bucketed by).
fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
