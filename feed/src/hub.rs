//! The sans-IO heart of a feed shard: instruments (book, sequence, replay window), connections
//! (handshake, client frames, subscriptions, outbound queue with budget) and fan-out. No sockets:
//! the shard's event loop hands it bytes read and a write function; tests drive it directly.
//!
//! # Channels
//!
//! A subscription is an instrument plus a channel mask (`md::CH_*`, `docs/market-data.md`):
//! each instrument keeps one subscriber list per channel and encodes each message once per
//! channel (WebSocket header included), shared by every subscriber of that channel:
//!
//! - book (`CH_BOOK`, the default): Snapshot, DeltaBatch, Trade, Status on the instrument
//!   sequence, with the replay window (unchanged from before channels existed);
//! - top-N (`CH_TOP`): the best N levels per side as a Snapshot flagged `SNAP_TOP`, at most one per
//!   interval: an instrument whose book changed is marked, and the view is encoded when the
//!   interval since the last one has passed ([`Hub::publish_at`], [`Hub::on_timer`],
//!   [`Hub::next_deadline`] give the shard its wake-up time); unchanged views are not sent;
//! - trades (`CH_TRADES`): Trades renumbered by a per-instrument trade sequence;
//! - candles (`CH_CANDLES`): Candles from [`candles`], numbered by a per-instrument candle sequence.
//!
//! Time comes from the caller (`now_ns` arguments): the hub reads no clock for channels or
//! candles. [`http`] answers plain HTTP requests on the same port.

#[path = "candles.rs"]
pub mod candles;
#[path = "http.rs"]
pub mod http;

use crate::frames::{FrameId, FrameTable};
use crate::ws;
use bytes::Bytes;
use candles::{Bar, Candles};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use tickwire_core::engine::Level;
use tickwire_core::ring::book_image::ImageBook;
use tickwire_core::{Event, EventView, InstrumentId, Seq, Side};
use tickwire_protocol::md::book::{levels_crc, MdBook};
use tickwire_protocol::md::{
    self, CandleInterval, ClientMsg, DecodeError, ErrorCode, ErrorMsg, LevelUpdate, CH_BOOK, CH_CANDLES, CH_TOP,
    CH_TRADES,
};

/// Connection id (index in the hub's table; the I/O backend uses the same index).
pub type ConnId = u32;

/// What to do with a connection over its outbound budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Drop what is queued, then send fresh snapshots once the socket drains.
    Conflate,
    /// Send Error slow_consumer and Close 1008, then close.
    Disconnect,
}

impl std::str::FromStr for SlowPolicy {
    type Err = String;
    /// `conflate` or `disconnect` (the names in config files and flags).
    fn from_str(s: &str) -> Result<SlowPolicy, String> {
        match s {
            "conflate" => Ok(SlowPolicy::Conflate),
            "disconnect" => Ok(SlowPolicy::Disconnect),
            _ => Err(format!("unknown slow-consumer policy {s:?} (conflate, disconnect)")),
        }
    }
}

/// Limits and policies of one shard.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Instruments served.
    pub instruments: Vec<InstrumentId>,
    /// Messages kept per instrument for Resume.
    pub replay_msgs: usize,
    /// Bytes kept per instrument for Resume.
    pub replay_bytes: usize,
    /// Queued outbound bytes per connection before the slow policy applies.
    pub budget_bytes: usize,
    /// Slow-consumer policy.
    pub slow_policy: SlowPolicy,
    /// Subscriptions per connection.
    pub max_subs: usize,
    /// Largest client frame payload (bigger: close 1009).
    pub max_client_payload: usize,
    /// Largest HTTP upgrade request.
    pub max_handshake: usize,
    /// Ticks a connection may stay in the handshake or closing state.
    pub linger_ticks: u32,
    /// Closed candles kept per instrument and interval (served by `GET /candles`).
    pub candle_history: usize,
    /// A tick closes a candle bucket once `now >= bucket end + candle_grace_ns` (trades close it
    /// as soon as one of a later bucket arrives).
    pub candle_grace_ns: u64,
    /// Read keys (each [`ws::valid_read_key`]); empty: public, the default. Otherwise every
    /// upgrade and HTTP request must carry one (`ws::parse_handshake`), or gets 401 (counted in
    /// `handshake_failures`).
    pub read_keys: Vec<String>,
    /// This shard's index among its process's shards (`Feed::spawn` numbers them from 0); named
    /// in `GET /stats` with [`HubConfig::pid`].
    pub shard: u32,
    /// Id of the process running the shard (0: not known; `FeedShard::new` fills it in), named in
    /// `GET /stats` so the answers of SO_REUSEPORT shard processes can be told apart.
    pub pid: u32,
}

impl HubConfig {
    /// Least `budget_bytes` a configuration may set. Any budget works (a frame always enters an
    /// empty queue), but under a page nearly every burst would conflate: a unit mistake.
    pub const BUDGET_BYTES_MIN: usize = 4096;
    /// Most `budget_bytes` a configuration may set: the budget is what bounds a slow
    /// subscriber's memory, so a huge one would quietly switch that protection off.
    pub const BUDGET_BYTES_MAX: usize = 1 << 30;

    /// Whether `b` is within [`HubConfig::BUDGET_BYTES_MIN`]..=[`HubConfig::BUDGET_BYTES_MAX`];
    /// `Err` says the bounds.
    pub fn check_budget_bytes(b: usize) -> Result<(), String> {
        if (Self::BUDGET_BYTES_MIN..=Self::BUDGET_BYTES_MAX).contains(&b) {
            Ok(())
        } else {
            Err(format!("{b} is outside {}..={} bytes", Self::BUDGET_BYTES_MIN, Self::BUDGET_BYTES_MAX))
        }
    }

    /// Defaults for `instruments` (see docs/market-data.md).
    pub fn new(instruments: Vec<InstrumentId>) -> HubConfig {
        HubConfig {
            instruments,
            replay_msgs: 4096,
            replay_bytes: 4 << 20,
            budget_bytes: 4 << 20,
            slow_policy: SlowPolicy::Conflate,
            max_subs: 256,
            max_client_payload: 1024,
            max_handshake: 8192,
            linger_ticks: 3,
            candle_history: 1000,
            candle_grace_ns: 250_000_000,
            read_keys: Vec::new(),
            shard: 0,
            pid: 0,
        }
    }
}

/// Counters of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections currently open, including ones still in the handshake and plain HTTP
    /// requests being answered (a gauge).
    pub open: u64,
    /// Upgrade requests refused.
    pub handshake_failures: u64,
    /// Connections closed for a WebSocket protocol error.
    pub protocol_errors: u64,
    /// Times a connection's queue was conflated.
    pub conflations: u64,
    /// Connections closed as slow consumers.
    pub slow_disconnects: u64,
    /// Frames encoded (each once, however many connections get it).
    pub frames_encoded: u64,
    /// Frames queued to connections.
    pub frames_queued: u64,
    /// Bytes written to sockets.
    pub bytes_written: u64,
    /// Engine events consumed.
    pub engine_events: u64,
    /// Engine sequence gaps seen (events lost upstream).
    pub engine_gaps: u64,
    /// Times the books were re-seeded from a book image ([`Hub::reset_from_image`]).
    pub engine_resyncs: u64,
    /// Resumes served from the replay window.
    pub resumes_replayed: u64,
    /// Resumes answered with a snapshot.
    pub resumes_snapshot: u64,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Candles closed (both intervals).
    pub candles_closed: u64,
    /// Top-N views broadcast.
    pub top_updates: u64,
    /// Ticks run ([`Hub::on_tick_at`]).
    pub ticks: u64,
    /// Write passes over the connections with something queued (counted by the shard's loop).
    pub write_passes: u64,
    /// Time spent in those passes, in ns: its growth over wall time is how busy the shard is
    /// writing.
    pub write_pass_ns_sum: u64,
    /// Longest write pass of the last tick, in ns (a gauge, like `open`; the rest are
    /// counters). An update waits up to about one pass before its subscriber's write (see
    /// `FeedShard`), so this is the shard's share of the fan-out latency.
    pub write_pass_ns_max: u64,
}

impl HubStats {
    /// Adds `o`'s counters to these (one shard's into a total). Destructures every field, so a
    /// counter added later cannot be forgotten here.
    pub fn merge(&mut self, o: &HubStats) {
        let HubStats {
            accepted, closed, open, handshake_failures, protocol_errors, conflations,
            slow_disconnects, frames_encoded, frames_queued, bytes_written, engine_events,
            engine_gaps, engine_resyncs, resumes_replayed, resumes_snapshot, http_requests,
            candles_closed, top_updates, ticks, write_passes, write_pass_ns_sum, write_pass_ns_max,
        } = *o;
        self.accepted += accepted;
        self.closed += closed;
        self.open += open;
        self.handshake_failures += handshake_failures;
        self.protocol_errors += protocol_errors;
        self.conflations += conflations;
        self.slow_disconnects += slow_disconnects;
        self.frames_encoded += frames_encoded;
        self.frames_queued += frames_queued;
        self.bytes_written += bytes_written;
        self.engine_events += engine_events;
        self.engine_gaps += engine_gaps;
        self.engine_resyncs += engine_resyncs;
        self.resumes_replayed += resumes_replayed;
        self.resumes_snapshot += resumes_snapshot;
        self.http_requests += http_requests;
        self.candles_closed += candles_closed;
        self.top_updates += top_updates;
        self.ticks += ticks;
        self.write_passes += write_passes;
        self.write_pass_ns_sum += write_pass_ns_sum;
        self.write_pass_ns_max = self.write_pass_ns_max.max(write_pass_ns_max);
    }

    /// Every counter by name, in declaration order (the `/stats` body; destructures every field
    /// like [`HubStats::merge`]).
    pub fn fields(&self) -> [(&'static str, u64); 22] {
        let HubStats {
            accepted, closed, open, handshake_failures, protocol_errors, conflations,
            slow_disconnects, frames_encoded, frames_queued, bytes_written, engine_events,
            engine_gaps, engine_resyncs, resumes_replayed, resumes_snapshot, http_requests,
            candles_closed, top_updates, ticks, write_passes, write_pass_ns_sum, write_pass_ns_max,
        } = *self;
        [
            ("accepted", accepted),
            ("closed", closed),
            ("open", open),
            ("handshake_failures", handshake_failures),
            ("protocol_errors", protocol_errors),
            ("conflations", conflations),
            ("slow_disconnects", slow_disconnects),
            ("frames_encoded", frames_encoded),
            ("frames_queued", frames_queued),
            ("bytes_written", bytes_written),
            ("engine_events", engine_events),
            ("engine_gaps", engine_gaps),
            ("engine_resyncs", engine_resyncs),
            ("resumes_replayed", resumes_replayed),
            ("resumes_snapshot", resumes_snapshot),
            ("http_requests", http_requests),
            ("candles_closed", candles_closed),
            ("top_updates", top_updates),
            ("ticks", ticks),
            ("write_passes", write_passes),
            ("write_pass_ns_sum", write_pass_ns_sum),
            ("write_pass_ns_max", write_pass_ns_max),
        ]
    }
}

/// How a queued frame counts for its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Market data: under the outbound budget (the slow-consumer policy) and marks the
    /// connection busy (its queue keeps its capacity between ticks).
    Data,
    /// A heartbeat: under the budget, but not market data (an idle connection stays idle).
    Heartbeat,
    /// Outside the budget and conflation: snapshots, feed resets, errors, replies to requests.
    Exempt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    /// Close after the queue is written (or after the linger).
    Closing,
}

/// One connection. Idle and caught up, it holds no heap memory at all (up to [`SUBS_INLINE`]
/// subscriptions; the byte inventory is in docs/market-data.md, *Memory per connection*).
struct Conn {
    state: State,
    /// Set while over budget under `Conflate`: nothing is queued, snapshots follow the drain.
    conflated: bool,
    in_dirty: bool,
    /// Got a market-data frame since the last tick: keeps its queue's capacity when drained (no
    /// allocation per wake-up on the busy path); an idle connection's drained queue is freed.
    busy: bool,
    /// The shard's current heartbeat (`Hub::hb_id`) is queued, ahead of `out`, without a
    /// queue entry (`out` is then empty): heartbeats to idle connections allocate nothing.
    hb: bool,
    /// Bytes of `out[0]` already written.
    head_off: u32,
    /// Tick at which it entered its current state (handshake / closing linger).
    since_tick: u32,
    /// Queued bytes not yet written.
    queued: usize,
    /// Frames to write, by id in the hub's [`FrameTable`] (each entry holds one reference).
    out: VecDeque<FrameId>,
    /// `(instrument index << 4) | channel mask`; the mask is always `md::effective_channels` of
    /// itself.
    subs: Subs,
    /// Only while a handshake or a client frame spans reads. Boxed: 8 bytes when absent
    /// instead of 24, for every idle connection.
    #[allow(clippy::box_collection)]
    partial: Option<Box<Vec<u8>>>,
}

impl Conn {
    /// Turns a flagged heartbeat (`hb`, no queue entry) into the queue's first entry holding a
    /// reference to `hb_id`, before anything is queued behind it or the heartbeat is replaced.
    fn unflag_heartbeat(&mut self, frames: &mut FrameTable, hb_id: FrameId) {
        if self.hb {
            self.hb = false;
            frames.retain(hb_id);
            self.out.push_front(hb_id);
        }
    }

    /// Drops every queued frame but one already partly written (the WebSocket stream must stay
    /// well-formed). A flagged heartbeat must have been unflagged first.
    fn drop_queued(&mut self, frames: &mut FrameTable) {
        debug_assert!(!self.hb);
        let keep = if self.head_off > 0 { self.out.pop_front() } else { None };
        for x in self.out.drain(..) {
            frames.release(x);
        }
        self.queued = 0;
        match keep {
            Some(h) => {
                self.queued = frames.get(h).len() - self.head_off as usize;
                self.out.push_back(h);
            }
            None => self.head_off = 0,
        }
    }
}

/// Subscriptions kept inline (no heap) per connection; more spill to a `Vec`.
pub const SUBS_INLINE: usize = 4;
/// Queue entries a busy connection keeps allocated once drained (more was a burst: freed).
const OUT_KEEP_MAX: usize = 1024;

/// A connection's subscriptions, each `(instrument index << 4) | channel mask`: up to
/// [`SUBS_INLINE`] inline (the common 1–4 instruments cost no allocation), more on the heap.
#[derive(Clone)]
enum Subs {
    Inline(u8, [u32; SUBS_INLINE]),
    Heap(Vec<u32>),
}

impl Subs {
    const EMPTY: Subs = Subs::Inline(0, [0; SUBS_INLINE]);

    fn as_slice(&self) -> &[u32] {
        match self {
            Subs::Inline(n, a) => &a[..*n as usize],
            Subs::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u32] {
        match self {
            Subs::Inline(n, a) => &mut a[..*n as usize],
            Subs::Heap(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, x: u32) {
        match self {
            Subs::Inline(n, a) if (*n as usize) < SUBS_INLINE => {
                a[*n as usize] = x;
                *n += 1;
            }
            Subs::Inline(_, a) => {
                let mut v = Vec::with_capacity(2 * SUBS_INLINE);
                v.extend_from_slice(a);
                v.push(x);
                *self = Subs::Heap(v);
            }
            Subs::Heap(v) => v.push(x),
        }
    }

    fn swap_remove(&mut self, p: usize) -> u32 {
        match self {
            Subs::Inline(n, a) => {
                let x = a[p];
                a[p] = a[*n as usize - 1];
                *n -= 1;
                x
            }
            Subs::Heap(v) => {
                let x = v.swap_remove(p);
                if v.len() <= SUBS_INLINE {
                    let mut a = [0; SUBS_INLINE];
                    a[..v.len()].copy_from_slice(v);
                    *self = Subs::Inline(v.len() as u8, a);
                }
                x
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Subs::Inline(..) => 0,
            Subs::Heap(v) => v.capacity() * 4,
        }
    }
}

fn sub_entry(i: usize, mask: u16) -> u32 {
    ((i as u32) << 4) | u32::from(mask & md::CH_ALL)
}

fn sub_index(x: u32) -> usize {
    (x >> 4) as usize
}

fn sub_mask(x: u32) -> u16 {
    (x & 0xF) as u16
}

struct Instrument {
    id: InstrumentId,
    book: MdBook,
    seq: Seq,
    ts_ns: u64,
    pending: Vec<LevelUpdate>,
    /// Frames produced since the last fan-out.
    fresh: Vec<Bytes>,
    replay: VecDeque<(Seq, Seq, Bytes)>,
    replay_bytes: usize,
    /// Subscribers of the book channel.
    subscribers: Vec<ConnId>,
    top_subs: Vec<ConnId>,
    trade_subs: Vec<ConnId>,
    candle_subs: Vec<ConnId>,
    /// Trade channel sequence.
    trade_seq: Seq,
    /// Candle channel sequence.
    candle_seq: Seq,
    /// Trade / candle channel frames since the last fan-out (encoded only with subscribers).
    fresh_trades: Vec<Bytes>,
    fresh_candles: Vec<Bytes>,
    top: Top,
    candles: Candles,
    snapshot: Option<Bytes>,
    in_touched: bool,
}

/// State of an instrument's top-N channel.
#[derive(Default)]
struct Top {
    /// Update number of the last view broadcast (0: none yet).
    update: u32,
    last_emit_ns: Option<u64>,
    /// In `Hub::top_pending` (the book changed since the last view).
    pending: bool,
    /// The last view broadcast.
    bids: Vec<Level>,
    asks: Vec<Level>,
    halted: bool,
}

const CHANNELS: [u16; 4] = [CH_BOOK, CH_TOP, CH_TRADES, CH_CANDLES];

impl Instrument {
    fn list(&mut self, ch: u16) -> &mut Vec<ConnId> {
        match ch {
            CH_BOOK => &mut self.subscribers,
            CH_TOP => &mut self.top_subs,
            CH_TRADES => &mut self.trade_subs,
            _ => &mut self.candle_subs,
        }
    }

    /// Moves connection `id` from the lists of `old` channels to those of `new`.
    fn set_channels(&mut self, id: ConnId, old: u16, new: u16) {
        for ch in CHANNELS {
            if new & ch != 0 && old & ch == 0 {
                self.list(ch).push(id);
            }
            if old & ch != 0 && new & ch == 0 {
                let l = self.list(ch);
                if let Some(p) = l.iter().position(|&x| x == id) {
                    l.swap_remove(p);
                }
            }
        }
    }
}

/// The state of a shard, without I/O.
pub struct Hub {
    cfg: HubConfig,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    instruments: Vec<Instrument>,
    index: HashMap<InstrumentId, usize>,
    touched: Vec<usize>,
    dirty: Vec<ConnId>,
    to_close: Vec<ConnId>,
    last_engine_seq: Seq,
    /// A book image arriving in-band (resync records, see `source.rs`).
    resync: crate::source::ResyncAssembler,
    tick: u32,
    scratch: Vec<u8>,
    levels: (Vec<Level>, Vec<Level>),
    /// Levels per side of a top-N view.
    top_depth: usize,
    /// Least time between two top-N views of an instrument.
    top_interval_ns: u64,
    /// Instruments whose top-N view may have changed since it was last sent.
    top_pending: Vec<usize>,
    /// The last `now` the caller gave.
    now_ns: u64,
    bars: Vec<(CandleInterval, Bar)>,
    /// Every frame queued to a connection, held once (queues hold ids).
    frames: FrameTable,
    /// The heartbeat of the last tick (held by the hub), queued by flag (`Conn::hb`) or by id.
    hb_id: FrameId,
    /// Ids of the frames being fanned out (reused).
    fan_ids: Vec<FrameId>,
    /// Counters.
    pub stats: HubStats,
}

/// Result of a write attempt for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued was written.
    Done,
    /// The socket is full; wait for writability.
    Blocked,
    /// The connection must be closed now (finished closing, or a write error).
    Close,
}

fn ws_frame(payload: &[u8]) -> Bytes {
    Bytes::from(ws::server_frame(ws::OP_BINARY, payload))
}

fn top_frame(id: InstrumentId, seq: Seq, update: u32, halted: bool, bids: &[Level], asks: &[Level]) -> Bytes {
    let n = md::snapshot_len(bids.len(), asks.len());
    let mut v = Vec::with_capacity(ws::frame_header_len(n) + n);
    ws::frame_header(ws::OP_BINARY, n, &mut v);
    md::encode_top(&mut v, id, seq, update, halted, levels_crc(bids, asks), bids, asks);
    Bytes::from(v)
}

fn error_frame(e: ErrorMsg) -> Bytes {
    let mut p = Vec::with_capacity(md::ERROR_SIZE);
    e.encode(&mut p);
    ws_frame(&p)
}

impl Hub {
    /// An empty hub serving `cfg.instruments`.
    pub fn new(cfg: HubConfig) -> Hub {
        let mut ids = cfg.instruments.clone();
        ids.sort_unstable();
        ids.dedup();
        // Subscription entries keep the instrument index in 28 bits.
        assert!(ids.len() < 1 << 28, "too many instruments for one hub");
        let mut frames = FrameTable::default();
        // No heartbeat before the first tick: an empty one (never queued: flags come with ticks).
        let hb_id = frames.insert(Bytes::new());
        let instruments: Vec<Instrument> = ids
            .iter()
            .map(|&id| Instrument {
                id,
                book: MdBook::new(),
                seq: 0,
                ts_ns: 0,
                pending: Vec::new(),
                fresh: Vec::new(),
                replay: VecDeque::new(),
                replay_bytes: 0,
                subscribers: Vec::new(),
                top_subs: Vec::new(),
                trade_subs: Vec::new(),
                candle_subs: Vec::new(),
                trade_seq: 0,
                candle_seq: 0,
                fresh_trades: Vec::new(),
                fresh_candles: Vec::new(),
                top: Top::default(),
                candles: Candles::new(cfg.candle_history),
                snapshot: None,
                in_touched: false,
            })
            .collect();
        let index = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        Hub {
            cfg,
            conns: Vec::new(),
            free: Vec::new(),
            instruments,
            index,
            touched: Vec::new(),
            dirty: Vec::new(),
            to_close: Vec::new(),
            last_engine_seq: 0,
            resync: Default::default(),
            tick: 0,
            scratch: Vec::new(),
            levels: (Vec::new(), Vec::new()),
            top_depth: 10,
            top_interval_ns: 100_000_000,
            top_pending: Vec::new(),
            now_ns: 0,
            bars: Vec::new(),
            frames,
            hb_id,
            fan_ids: Vec::new(),
            stats: HubStats::default(),
        }
    }

    /// Sets the top-N channel: `depth` levels per side (at least 1), at most one view per
    /// `interval_ns` per instrument. Defaults: 10 levels, 100 ms.
    pub fn set_top_channel(&mut self, depth: usize, interval_ns: u64) {
        self.top_depth = depth.max(1);
        self.top_interval_ns = interval_ns;
    }

    /// Instrument `id`'s candles (tests, diagnostics).
    pub fn candles(&self, id: InstrumentId) -> Option<&Candles> {
        self.index.get(&id).map(|&i| &self.instruments[i].candles)
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Instrument `id`'s book and sequence (tests, diagnostics).
    pub fn book(&self, id: InstrumentId) -> Option<(&MdBook, Seq)> {
        self.index.get(&id).map(|&i| (&self.instruments[i].book, self.instruments[i].seq))
    }

    /// Loads an instrument's initial book (e.g. from `Engine::depth` when the feed starts after
    /// the engine), before any subscriber. `seq` is the instrument sequence to start from.
    pub fn seed_book(&mut self, id: InstrumentId, bids: &[Level], asks: &[Level], halted: bool, seq: Seq) -> bool {
        let Some(&i) = self.index.get(&id) else { return false };
        let ins = &mut self.instruments[i];
        ins.book.clear();
        ins.book.halted = halted;
        for (side, ls) in [(Side::Buy, bids), (Side::Sell, asks)] {
            for l in ls {
                ins.book.apply(&LevelUpdate { side, price: l.price, qty: l.qty, orders: l.orders });
            }
        }
        ins.seq = seq;
        ins.snapshot = None;
        true
    }

    /// Sets the engine sequence already reflected (events up to it are skipped as duplicates).
    pub fn set_engine_seq(&mut self, seq: Seq) {
        self.last_engine_seq = seq;
    }

    /// Re-seeds the books from a consistent image of the engine's books at engine sequence
    /// `engine_seq` (after events were lost, or at a late start): every instrument of the image
    /// this hub serves gets the image's levels, a new instrument sequence one above its last
    /// (the reset takes a number, so nothing sent before can pass for its continuation), an
    /// emptied replay window (Resume from before the reset gets resume_unavailable + Snapshot),
    /// and each of its book subscribers gets Error feed_reset (detail: `engine_seq`) then the
    /// Snapshot. Events up to `engine_seq` are then skipped as duplicates. The trade channel
    /// sequence also takes a number (trades may have been lost); top-N views are refreshed.
    /// Returns the number of instruments reset.
    pub fn reset_from_image(&mut self, books: &[ImageBook], engine_seq: Seq) -> usize {
        self.last_engine_seq = engine_seq;
        self.stats.engine_resyncs += 1;
        let mut n = 0;
        for b in books {
            let Some(&i) = self.index.get(&b.instrument) else { continue };
            let seq = self.instruments[i].seq + 1;
            self.seed_book(b.instrument, &b.bids, &b.asks, b.halted, seq);
            let ins = &mut self.instruments[i];
            // Frames of the lost stretch not sent yet: superseded by the Snapshot.
            ins.pending.clear();
            ins.fresh.clear();
            ins.replay.clear();
            ins.replay_bytes = 0;
            ins.trade_seq += 1;
            if !ins.top_subs.is_empty() && !ins.top.pending {
                ins.top.pending = true;
                self.top_pending.push(i);
            }
            let subs = std::mem::take(&mut self.instruments[i].subscribers);
            let err = error_frame(ErrorMsg::new(ErrorCode::FeedReset, b.instrument, engine_seq));
            let snap = self.snapshot(i);
            let (err, snap) = (self.frames.insert(err), self.frames.insert(snap));
            for &c in &subs {
                self.push_id(c, err, Class::Exempt);
                self.push_id(c, snap, Class::Exempt);
            }
            self.frames.release(err);
            self.frames.release(snap);
            self.instruments[i].subscribers = subs;
            n += 1;
        }
        n
    }

    /// One in-band resync record; the image is applied when its last record arrives.
    fn on_resync_record(&mut self, ev: &Event) {
        if let Some(seq) = self.resync.on_record(ev) {
            let books = self.resync.take_books();
            self.reset_from_image(&books, seq);
            self.resync.recycle(books);
        }
    }

    // ---- engine side --------------------------------------------------------------------

    /// Consumes engine events: books change, trades and status are encoded. Call
    /// [`Hub::publish`] after a batch (one wake-up) to emit delta batches and fan out.
    pub fn on_events(&mut self, evs: &[Event]) {
        for ev in evs {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: &Event) {
        if ev.kind == crate::source::RESYNC_KIND {
            return self.on_resync_record(ev);
        }
        self.stats.engine_events += 1;
        if self.last_engine_seq != 0 && ev.seq != self.last_engine_seq + 1 {
            if ev.seq <= self.last_engine_seq {
                return; // duplicate (e.g. re-read after a restart)
            }
            self.stats.engine_gaps += 1;
        }
        self.last_engine_seq = ev.seq;
        let Some(&i) = self.index.get(&ev.instrument) else { return };
        let view = ev.view();
        let ins = &mut self.instruments[i];
        let frame = match view {
            EventView::LevelDelta { side, price, qty, orders, ts_ns } => {
                ins.pending.push(LevelUpdate { side, price, qty, orders: if qty == 0 { 0 } else { orders } });
                ins.ts_ns = ts_ns;
                None
            }
            EventView::Trade { trade_id, aggressor, price, qty, ts_ns } => {
                ins.seq += 1;
                let t = md::Trade { instrument: ins.id, seq: ins.seq, trade_id, price, qty, aggressor, ts_ns };
                let mut p = Vec::with_capacity(md::TRADE_SIZE);
                t.encode(&mut p);
                ins.trade_seq += 1;
                if !ins.trade_subs.is_empty() {
                    let mut q = Vec::with_capacity(md::TRADE_SIZE);
                    md::Trade { seq: ins.trade_seq, ..t }.encode(&mut q);
                    ins.fresh_trades.push(ws_frame(&q));
                    self.stats.frames_encoded += 1;
                }
                ins.candles.on_trade(ts_ns, price, qty, &mut self.bars);
                Self::encode_candles(&mut self.stats, ins, &mut self.bars);
                Some((ws_frame(&p), ins.seq))
            }
            EventView::InstrumentStatus { halted } => {
                // The book changes before a halt/resume go out before it.
                Self::encode_pending(&self.cfg, &mut self.stats, &mut self.scratch, ins);
                ins.seq += 1;
                ins.book.halted = halted;
                let mut p = Vec::with_capacity(md::STATUS_SIZE);
                md::Status { instrument: ins.id, seq: ins.seq, halted, engine_seq: ev.seq }.encode(&mut p);
                Some((ws_frame(&p), ins.seq))
            }
            _ => None,
        };
        if let Some((f, seq)) = frame {
            Self::record(&self.cfg, &mut self.stats, ins, seq, seq, f);
        }
        if !ins.in_touched {
            ins.in_touched = true;
            self.touched.push(i);
        }
    }

    fn record(cfg: &HubConfig, stats: &mut HubStats, ins: &mut Instrument, first: Seq, last: Seq, f: Bytes) {
        stats.frames_encoded += 1;
        ins.snapshot = None;
        ins.replay_bytes += f.len();
        ins.replay.push_back((first, last, f.clone()));
        while ins.replay.len() > cfg.replay_msgs || (ins.replay_bytes > cfg.replay_bytes && ins.replay.len() > 1) {
            if let Some((_, _, old)) = ins.replay.pop_front() {
                ins.replay_bytes -= old.len();
            }
        }
        ins.fresh.push(f);
    }

    /// Encodes closed candles (`bars`, drained) for the candle channel.
    fn encode_candles(stats: &mut HubStats, ins: &mut Instrument, bars: &mut Vec<(CandleInterval, Bar)>) {
        for (interval, b) in bars.drain(..) {
            ins.candle_seq += 1;
            stats.candles_closed += 1;
            if ins.candle_subs.is_empty() {
                continue;
            }
            let mut p = Vec::with_capacity(md::CANDLE_SIZE);
            md::Candle {
                instrument: ins.id,
                seq: ins.candle_seq,
                interval,
                start_ns: b.start_ns,
                open: b.open,
                high: b.high,
                low: b.low,
                close: b.close,
                volume: b.volume,
                trades: b.trades,
            }
            .encode(&mut p);
            ins.fresh_candles.push(ws_frame(&p));
            stats.frames_encoded += 1;
        }
    }

    /// Ends a wake-up: [`Hub::publish_at`] with the time of the last call that gave one
    /// (`publish_at`, `on_timer`, `on_tick_at`; 0 before any). Callers that use top-N views should
    /// call `publish_at` (and `on_timer` at [`Hub::next_deadline`]) instead.
    pub fn publish(&mut self) -> &[ConnId] {
        let now = self.now_ns;
        self.publish_at(now)
    }

    /// Ends a wake-up at time `now_ns` (any ns clock, the same for every call): encodes each
    /// touched instrument's delta batch once, queues every new frame to its channel's
    /// subscribers, and sends the top-N views that are due. Returns the connections that have
    /// something to write.
    pub fn publish_at(&mut self, now_ns: u64) -> &[ConnId] {
        let touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            let ins = &mut self.instruments[i];
            ins.in_touched = false;
            Self::encode_pending(&self.cfg, &mut self.stats, &mut self.scratch, ins);
            if !ins.top_subs.is_empty() && !ins.top.pending {
                ins.top.pending = true;
                self.top_pending.push(i);
            }
            for ch in [CH_BOOK, CH_TRADES, CH_CANDLES] {
                self.fan_out(i, ch);
            }
        }
        self.touched = touched;
        self.touched.clear();
        self.on_timer(now_ns);
        &self.dirty
    }

    /// Queues instrument `i`'s fresh frames of channel `ch` (book, trades or candles) to the
    /// channel's subscribers.
    fn fan_out(&mut self, i: usize, ch: u16) {
        let ins = &mut self.instruments[i];
        let frames = std::mem::take(match ch {
            CH_BOOK => &mut ins.fresh,
            CH_TRADES => &mut ins.fresh_trades,
            _ => &mut ins.fresh_candles,
        });
        if frames.is_empty() {
            return;
        }
        let subs = std::mem::take(ins.list(ch));
        let mut fan_ids = std::mem::take(&mut self.fan_ids);
        let mut frames = frames;
        fan_ids.extend(frames.drain(..).map(|f| self.frames.insert(f)));
        for &c in &subs {
            for &f in &fan_ids {
                self.push_id(c, f, Class::Data);
            }
        }
        for f in fan_ids.drain(..) {
            self.frames.release(f);
        }
        self.fan_ids = fan_ids;
        let ins = &mut self.instruments[i];
        *ins.list(ch) = subs;
        match ch {
            CH_BOOK => ins.fresh = frames,
            CH_TRADES => ins.fresh_trades = frames,
            _ => ins.fresh_candles = frames,
        }
    }

    /// Time-driven work at `now_ns`: sends the top-N views whose interval has passed.
    pub fn on_timer(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        let mut k = 0;
        while k < self.top_pending.len() {
            let i = self.top_pending[k];
            let ins = &mut self.instruments[i];
            let due = match ins.top.last_emit_ns {
                None => true,
                // A clock that went backwards does not freeze the channel.
                Some(t) => now_ns < t || now_ns - t >= self.top_interval_ns,
            };
            if ins.top_subs.is_empty() || due {
                ins.top.pending = false;
                self.top_pending.swap_remove(k);
                if due {
                    self.emit_top(i, now_ns);
                }
            } else {
                k += 1;
            }
        }
    }

    /// When [`Hub::on_timer`] next has work (a top-N view is waiting for its interval), in the
    /// caller's clock; `None` if nothing waits.
    pub fn next_deadline(&self) -> Option<u64> {
        self.top_pending
            .iter()
            .map(|&i| self.instruments[i].top.last_emit_ns.map_or(0, |t| t.saturating_add(self.top_interval_ns)))
            .min()
    }

    /// Broadcasts instrument `i`'s top-N view if it differs from the last one sent.
    fn emit_top(&mut self, i: usize, now_ns: u64) {
        let n = self.top_depth;
        let ins = &mut self.instruments[i];
        let (bids, asks) = &mut self.levels;
        ins.book.depth(Side::Buy, n, bids);
        ins.book.depth(Side::Sell, n, asks);
        let top = &mut ins.top;
        if top.update != 0 && *bids == top.bids && *asks == top.asks && ins.book.halted == top.halted {
            return;
        }
        top.update = top.update.wrapping_add(1).max(1);
        top.last_emit_ns = Some(now_ns);
        top.bids.clone_from(bids);
        top.asks.clone_from(asks);
        top.halted = ins.book.halted;
        let f = top_frame(ins.id, ins.seq, top.update, top.halted, bids, asks);
        self.stats.frames_encoded += 1;
        self.stats.top_updates += 1;
        let subs = std::mem::take(&mut ins.top_subs);
        let f = self.frames.insert(f);
        for &c in &subs {
            self.push_id(c, f, Class::Data);
        }
        self.frames.release(f);
        self.instruments[i].top_subs = subs;
    }

    /// The current top-N view of instrument `i` for one new subscriber, numbered like the last
    /// view broadcast (the next broadcast is that number + 1).
    fn top_now(&mut self, i: usize) -> Bytes {
        let ins = &self.instruments[i];
        let (bids, asks) = &mut self.levels;
        ins.book.depth(Side::Buy, self.top_depth, bids);
        ins.book.depth(Side::Sell, self.top_depth, asks);
        self.stats.frames_encoded += 1;
        top_frame(ins.id, ins.seq, ins.top.update, ins.book.halted, bids, asks)
    }

    /// Applies the pending level updates to the book and encodes them as DeltaBatch frames.
    fn encode_pending(cfg: &HubConfig, stats: &mut HubStats, scratch: &mut Vec<u8>, ins: &mut Instrument) {
        let pending = std::mem::take(&mut ins.pending);
        for chunk in pending.chunks(md::MAX_BATCH_UPDATES) {
            for u in chunk {
                ins.book.apply(u);
            }
            let first = ins.seq + 1;
            ins.seq += chunk.len() as u64;
            scratch.clear();
            let n = md::delta_batch_len(chunk.len());
            ws::frame_header(ws::OP_BINARY, n, scratch);
            md::encode_delta_batch(scratch, ins.id, first, ins.ts_ns, ins.book.crc(), chunk);
            let f = Bytes::copy_from_slice(scratch);
            let last = ins.seq;
            Self::record(cfg, stats, ins, first, last, f);
        }
        ins.pending = pending;
        ins.pending.clear();
    }

    /// A Snapshot frame of instrument index `i` (encoded once per sequence, cached).
    fn snapshot(&mut self, i: usize) -> Bytes {
        let ins = &mut self.instruments[i];
        if let Some(s) = &ins.snapshot {
            return s.clone();
        }
        let (bids, asks) = &mut self.levels;
        ins.book.depth(Side::Buy, usize::MAX, bids);
        ins.book.depth(Side::Sell, usize::MAX, asks);
        let n = md::snapshot_len(bids.len(), asks.len());
        let mut v = Vec::with_capacity(ws::frame_header_len(n) + n);
        ws::frame_header(ws::OP_BINARY, n, &mut v);
        md::encode_snapshot(&mut v, ins.id, ins.seq, ins.book.halted, ins.book.crc(), bids, asks);
        let b = Bytes::from(v);
        ins.snapshot = Some(b.clone());
        self.stats.frames_encoded += 1;
        b
    }

    // ---- connections --------------------------------------------------------------------

    /// Registers a new connection (in the handshake state); the backend uses the same id.
    pub fn open(&mut self) -> ConnId {
        let c = Conn {
            state: State::Handshake,
            conflated: false,
            in_dirty: false,
            busy: false,
            hb: false,
            head_off: 0,
            since_tick: self.tick,
            queued: 0,
            out: VecDeque::new(),
            subs: Subs::EMPTY,
            partial: None,
        };
        self.stats.accepted += 1;
        self.stats.open += 1;
        if let Some(id) = self.free.pop() {
            self.conns[id as usize] = Some(c);
            id
        } else {
            self.conns.push(Some(c));
            (self.conns.len() - 1) as ConnId
        }
    }

    /// Forgets a connection (its socket was closed by the backend).
    pub fn close(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get_mut(id as usize) else { return };
        let Some(c) = slot.take() else { return };
        for &f in &c.out {
            self.frames.release(f);
        }
        // A close pending for this id must not hit the connection that reuses it.
        self.to_close.retain(|&x| x != id);
        for &x in c.subs.as_slice() {
            self.instruments[sub_index(x)].set_channels(id, sub_mask(x), 0);
        }
        self.free.push(id);
        self.stats.closed += 1;
        self.stats.open -= 1;
    }

    /// Whether the connection exists.
    pub fn is_open(&self, id: ConnId) -> bool {
        matches!(self.conns.get(id as usize), Some(Some(_)))
    }

    /// Bytes queued for a connection (tests).
    pub fn queued(&self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| c.queued)
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id as usize).and_then(|c| c.as_ref())
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(|c| c.as_mut())
    }

    /// Queues a frame of class `class`.
    fn push(&mut self, id: ConnId, f: Bytes, class: Class) {
        let f = self.frames.insert(f);
        self.push_id(id, f, class);
        self.frames.release(f);
    }

    /// Queues the current views of instrument `i` that channels `mask` start from: a Snapshot
    /// for the book channel, the top-N view for the top channel.
    fn push_views(&mut self, id: ConnId, i: usize, mask: u16) {
        if mask & CH_BOOK != 0 {
            let s = self.snapshot(i);
            self.push(id, s, Class::Exempt);
        }
        if mask & CH_TOP != 0 {
            let t = self.top_now(i);
            self.push(id, t, Class::Exempt);
        }
    }

    /// Queues frame `f` of the table (the caller keeps its own reference).
    fn push_id(&mut self, id: ConnId, f: FrameId, class: Class) {
        let budgeted = class != Class::Exempt;
        let budget = self.cfg.budget_bytes;
        let policy = self.cfg.slow_policy;
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        if c.state != State::Open || (budgeted && c.conflated) {
            return;
        }
        c.unflag_heartbeat(&mut self.frames, self.hb_id);
        c.busy |= class == Class::Data;
        let len = self.frames.get(f).len();
        if budgeted && !c.out.is_empty() && c.queued + len > budget {
            match policy {
                SlowPolicy::Conflate => {
                    c.drop_queued(&mut self.frames);
                    c.conflated = true;
                    self.stats.conflations += 1;
                }
                SlowPolicy::Disconnect => return self.slow_close(id),
            }
        } else {
            c.queued += len;
            self.frames.retain(f);
            c.out.push_back(f);
            self.stats.frames_queued += 1;
        }
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Ends a slow consumer: drops what is queued (but a frame already partly written), queues
    /// Error `slow_consumer` and a close 1008, and closes once they are written.
    fn slow_close(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        if c.state != State::Open {
            return;
        }
        c.unflag_heartbeat(&mut self.frames, self.hb_id);
        c.drop_queued(&mut self.frames);
        for fr in [error_frame(ErrorMsg::new(ErrorCode::SlowConsumer, 0, 0)), Bytes::from(ws::close_frame(ws::CLOSE_POLICY))] {
            c.queued += fr.len();
            c.out.push_back(self.frames.insert(fr));
        }
        c.state = State::Closing;
        c.since_tick = self.tick;
        c.partial = None;
        self.stats.slow_disconnects += 1;
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Queues the current heartbeat (`Hub::hb_id`, budgeted like any frame): to a connection
    /// with nothing queued, as a flag (no queue entry, no allocation).
    fn push_heartbeat(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        if c.state != State::Open || c.conflated {
            return;
        }
        if !c.out.is_empty() || c.hb {
            return self.push_id(id, self.hb_id, Class::Heartbeat);
        }
        c.hb = true;
        c.queued += self.frames.get(self.hb_id).len();
        self.stats.frames_queued += 1;
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Bytes this hub holds for its connections, from sizes and capacities: the slot table, each
    /// connection's queue entries, spilled subscriptions, partial input and queued bytes (frames
    /// shared with other connections counted as if owned), the instruments' subscriber lists, and
    /// the id lists (free, dirty, to close). Shared frames, books and replay windows are not
    /// per connection and are not counted. See docs/market-data.md, *Memory per connection*.
    pub fn conn_memory_bytes(&self) -> usize {
        let mut n = self.conns.capacity() * std::mem::size_of::<Option<Conn>>();
        n += (self.free.capacity() + self.dirty.capacity() + self.to_close.capacity()) * std::mem::size_of::<ConnId>();
        for c in self.conns.iter().flatten() {
            n += c.out.capacity() * std::mem::size_of::<FrameId>() + c.subs.heap_bytes() + c.queued;
            n += c.partial.as_ref().map_or(0, |p| std::mem::size_of::<Vec<u8>>() + p.capacity());
        }
        n += self.frames.memory_bytes();
        for ins in &self.instruments {
            let lists = ins.subscribers.capacity() + ins.top_subs.capacity() + ins.trade_subs.capacity() + ins.candle_subs.capacity();
            n += lists * std::mem::size_of::<ConnId>();
        }
        n
    }

    /// Distinct frames held for connections' queues, plus the current heartbeat (a leak check:
    /// with every queue drained or closed it is 1).
    pub fn frames_held(&self) -> usize {
        self.frames.live()
    }

    /// Connections open in the hub.
    pub fn open_conns(&self) -> usize {
        self.stats.open as usize
    }

    /// Queues a frame that bypasses the budget and conflation (handshake answers, pongs, closes).
    fn push_control(&mut self, id: ConnId, f: Bytes) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        c.unflag_heartbeat(&mut self.frames, self.hb_id);
        c.queued += f.len();
        c.out.push_back(self.frames.insert(f));
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Starts closing with a WebSocket close code (sent unless `code` is 0).
    fn begin_close(&mut self, id: ConnId, code: u16) {
        let tick = self.tick;
        if code != 0 {
            self.push_control(id, Bytes::from(ws::close_frame(code)));
        }
        if let Some(c) = self.conn_mut(id) {
            c.state = State::Closing;
            c.since_tick = tick;
            c.partial = None;
            if c.out.is_empty() && !c.hb {
                self.to_close.push(id);
            }
        }
    }

    /// Whether some connection has something new to write ([`Hub::take_dirty`] would give it).
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Takes the connections whose write queues changed (to flush) — the backend calls
    /// [`Hub::flush`] for each.
    pub fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        out.clear();
        std::mem::swap(out, &mut self.dirty);
        let conns = &mut self.conns;
        out.retain(|&id| {
            let Some(c) = conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return true };
            c.in_dirty = false;
            // Marked again after a mid-pass poll but written since: nothing to do.
            c.state != State::Open || !c.out.is_empty() || c.hb || c.conflated
        });
    }

    /// Takes the connections to close now (closing finished, protocol errors, lingerers).
    pub fn take_to_close(&mut self, out: &mut Vec<ConnId>) {
        out.clear();
        std::mem::swap(out, &mut self.to_close);
    }

    /// Writes what is queued for `id` with one vectored write (`write` gets up to 64 slices and
    /// returns the bytes written, like `writev`). Loops only while the kernel takes everything.
    pub fn flush(&mut self, id: ConnId, write: &mut dyn FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> Flush {
        loop {
            let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return Flush::Close };
            // Queueing anything turns a flagged heartbeat into the queue's first entry (so one
            // vectored write carries both): the flag is only ever set on an empty queue.
            debug_assert!(!c.hb || c.out.is_empty());
            if c.hb {
                // The shared heartbeat, queued without an entry (`out` is empty).
                let hb = self.frames.get(self.hb_id);
                match write(&[IoSlice::new(hb)]) {
                    Ok(0) => return Flush::Close,
                    Ok(w) => {
                        self.stats.bytes_written += w as u64;
                        c.queued -= w.min(c.queued);
                        c.hb = false;
                        if w < hb.len() {
                            // Short write: the rest becomes an ordinary queue entry.
                            self.frames.retain(self.hb_id);
                            c.out.push_back(self.hb_id);
                            c.head_off = w as u32;
                            return Flush::Blocked;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Flush::Close,
                }
            }
            if c.out.is_empty() {
                if c.state == State::Closing {
                    return Flush::Close;
                }
                if c.conflated && c.state == State::Open {
                    // Drained: resynchronise every subscription with a fresh snapshot.
                    c.conflated = false;
                    let subs = c.subs.clone();
                    for &x in subs.as_slice() {
                        self.push_views(id, sub_index(x), sub_mask(x));
                    }
                    continue;
                }
                if c.out.capacity() > OUT_KEEP_MAX || (!c.busy && c.out.capacity() > 0) {
                    // Give back the memory of a burst, and of an idle connection's queue (a
                    // connection with market data since the last tick keeps it for the next
                    // pass: regrowing it every pass cost more than the writes' bookkeeping).
                    c.out = VecDeque::new();
                }
                return Flush::Done;
            }
            let mut slices: [IoSlice<'_>; 64] = std::array::from_fn(|_| IoSlice::new(&[]));
            let mut n = 0;
            for (k, &f) in c.out.iter().take(64).enumerate() {
                let f = self.frames.get(f);
                let start = if k == 0 { c.head_off as usize } else { 0 };
                slices[n] = IoSlice::new(&f[start.min(f.len())..]);
                n += 1;
            }
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            match write(&slices[..n]) {
                Ok(0) => return Flush::Close,
                Ok(written) => {
                    let mut w = written;
                    self.stats.bytes_written += w as u64;
                    c.queued -= w.min(c.queued);
                    while w > 0 {
                        let Some(&front) = c.out.front() else { break };
                        let rest = self.frames.get(front).len() - c.head_off as usize;
                        if w >= rest {
                            w -= rest;
                            c.out.pop_front();
                            self.frames.release(front);
                            c.head_off = 0;
                        } else {
                            c.head_off += w as u32;
                            w = 0;
                        }
                    }
                    if written < total {
                        // Short write: the socket is full.
                        return Flush::Blocked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Flush::Close,
            }
        }
    }

    /// Bytes read from a connection. `data` is the shared scratch buffer (modified: frames are
    /// unmasked in place). Anything to write is queued; closes are reported by
    /// [`Hub::take_to_close`].
    pub fn on_read(&mut self, id: ConnId, data: &mut [u8]) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.state == State::Closing {
            return; // ignore input while closing
        }
        if let Some(mut p) = c.partial.take() {
            p.extend_from_slice(data);
            let consumed = self.consume(id, &mut p);
            if consumed < p.len() {
                p.drain(..consumed);
                if let Some(c) = self.conn_mut(id) {
                    if c.state != State::Closing {
                        c.partial = Some(p);
                    }
                }
            }
        } else {
            let consumed = self.consume(id, data);
            if consumed < data.len() {
                let rest = data[consumed..].to_vec();
                if let Some(c) = self.conn_mut(id) {
                    if c.state != State::Closing {
                        c.partial = Some(Box::new(rest));
                    }
                }
            }
        }
    }

    /// Processes as much of `buf` as is complete; returns the bytes consumed.
    fn consume(&mut self, id: ConnId, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        loop {
            let Some(state) = self.conn(id).map(|c| c.state) else { return buf.len() };
            match state {
                State::Closing => return buf.len(),
                State::Handshake => match ws::parse_handshake(&buf[pos..], &self.cfg.read_keys) {
                    ws::Handshake::Partial => {
                        if buf.len() - pos > self.cfg.max_handshake {
                            self.stats.handshake_failures += 1;
                            self.push_control(id, Bytes::from(http::too_large()));
                            self.begin_close(id, 0);
                            return buf.len();
                        }
                        return pos;
                    }
                    ws::Handshake::Http { method, target, consumed } => {
                        self.stats.http_requests += 1;
                        let r = if consumed > self.cfg.max_handshake {
                            http::too_large()
                        } else {
                            self.http_answer(&method, &target)
                        };
                        self.push_control(id, Bytes::from(r));
                        self.begin_close(id, 0);
                        return buf.len();
                    }
                    ws::Handshake::Reject { response } => {
                        self.stats.handshake_failures += 1;
                        self.push_control(id, Bytes::from(response));
                        self.begin_close(id, 0);
                        return buf.len();
                    }
                    ws::Handshake::Upgrade { consumed, .. } if consumed > self.cfg.max_handshake => {
                        // The limit holds however the request arrived (in one read or several).
                        self.stats.handshake_failures += 1;
                        self.push_control(id, Bytes::from(http::too_large()));
                        self.begin_close(id, 0);
                        return buf.len();
                    }
                    ws::Handshake::Upgrade { response, consumed } => {
                        pos += consumed;
                        self.push_control(id, Bytes::from(response));
                        if let Some(c) = self.conn_mut(id) {
                            c.state = State::Open;
                        }
                    }
                },
                State::Open => match ws::parse_client_frame(&mut buf[pos..], self.cfg.max_client_payload) {
                    Ok(None) => return pos,
                    Err(code) => {
                        self.stats.protocol_errors += 1;
                        self.begin_close(id, code);
                        return buf.len();
                    }
                    Ok(Some(fr)) => {
                        let (a, b) = (pos + fr.payload.0, pos + fr.payload.1);
                        pos += fr.consumed;
                        if matches!(fr.opcode, ws::OP_BINARY | ws::OP_PING) && self.queued(id) > self.cfg.budget_bytes {
                            // A request from a client that leaves more than its budget unread:
                            // answering would queue without bound (replies are not conflated),
                            // so it ends as a slow consumer, whatever the slow policy.
                            self.slow_close(id);
                            return buf.len();
                        }
                        match fr.opcode {
                            ws::OP_BINARY => self.on_client_msg(id, &buf[a..b]),
                            ws::OP_PING => {
                                self.push_control(id, Bytes::from(ws::server_frame(ws::OP_PONG, &buf[a..b])));
                            }
                            ws::OP_CLOSE => {
                                let code = ws::close_reply_code(&buf[a..b]).unwrap_or_else(|e| e);
                                self.begin_close(id, code);
                                return buf.len();
                            }
                            _ => {} // pong
                        }
                    }
                },
            }
        }
    }

    fn send_error(&mut self, id: ConnId, code: ErrorCode, instrument: InstrumentId, detail: u64) {
        self.push(id, error_frame(ErrorMsg::new(code, instrument, detail)), Class::Exempt);
    }

    fn on_client_msg(&mut self, id: ConnId, payload: &[u8]) {
        let msg = match ClientMsg::decode(payload) {
            Ok(m) => m,
            Err(DecodeError::Version(v)) => return self.send_error(id, ErrorCode::UnsupportedVersion, 0, v as u64),
            Err(_) => {
                let first = payload.first().copied().unwrap_or(0);
                return self.send_error(id, ErrorCode::Malformed, 0, first as u64);
            }
        };
        match msg {
            ClientMsg::Ping { nonce } => {
                let mut p = Vec::with_capacity(md::HEARTBEAT_SIZE);
                md::Heartbeat { nonce, server_ns: now_ns() }.encode(&mut p);
                self.push(id, ws_frame(&p), Class::Exempt);
            }
            ClientMsg::Subscribe { instrument } => self.on_subscribe(id, instrument, 0),
            ClientMsg::SubscribeChannels { instrument, channels } => self.on_subscribe(id, instrument, channels),
            ClientMsg::Resume { instrument, last_seq } => {
                let Some((i, _)) = self.subscribe(id, instrument, CH_BOOK) else { return };
                let ins = &self.instruments[i];
                if last_seq == ins.seq {
                    return;
                }
                let start = if last_seq < ins.seq {
                    ins.replay.iter().position(|&(first, _, _)| first == last_seq + 1)
                } else {
                    None
                };
                match start {
                    Some(k) => {
                        self.stats.resumes_replayed += 1;
                        let frames: Vec<Bytes> = ins.replay.iter().skip(k).map(|(_, _, f)| f.clone()).collect();
                        for f in frames {
                            self.push(id, f, Class::Exempt);
                        }
                    }
                    None => {
                        self.stats.resumes_snapshot += 1;
                        self.send_error(id, ErrorCode::ResumeUnavailable, instrument, last_seq);
                        let s = self.snapshot(i);
                        self.push(id, s, Class::Exempt);
                    }
                }
            }
            ClientMsg::Unsubscribe { instrument } => {
                let i = self.index.get(&instrument).copied();
                let Some(c) = self.conn_mut(id) else { return };
                let Some(p) = i.and_then(|i| c.subs.as_slice().iter().position(|&x| sub_index(x) == i)) else {
                    return self.send_error(id, ErrorCode::NotSubscribed, instrument, 0);
                };
                let x = c.subs.swap_remove(p);
                self.instruments[sub_index(x)].set_channels(id, sub_mask(x), 0);
            }
        }
    }

    /// Subscribe with a channel mask: the channels added get their first message (Snapshot for
    /// the book, the current view for top-N; trades and candles start with the next one).
    fn on_subscribe(&mut self, id: ConnId, instrument: InstrumentId, mask: u16) {
        let Some((i, added)) = self.subscribe(id, instrument, mask) else { return };
        if added == 0 {
            return self.send_error(id, ErrorCode::AlreadySubscribed, instrument, 0);
        }
        self.push_views(id, i, added);
    }

    /// Adds channels (`mask`, 0 = book) to a subscription; `Some((instrument index, channels
    /// added))`, or `None` after an error.
    fn subscribe(&mut self, id: ConnId, instrument: InstrumentId, mask: u16) -> Option<(usize, u16)> {
        let Some(&i) = self.index.get(&instrument) else {
            self.send_error(id, ErrorCode::UnknownInstrument, instrument, 0);
            return None;
        };
        let max = self.cfg.max_subs;
        let c = self.conn_mut(id)?;
        let pos = c.subs.as_slice().iter().position(|&x| sub_index(x) == i);
        let old = pos.map_or(0, |p| sub_mask(c.subs.as_slice()[p]));
        if pos.is_none() && c.subs.len() >= max {
            self.send_error(id, ErrorCode::TooManySubscriptions, instrument, max as u64);
            return None;
        }
        let new = md::effective_channels(old | md::effective_channels(mask));
        match pos {
            Some(p) => c.subs.as_mut_slice()[p] = sub_entry(i, new),
            None => c.subs.push(sub_entry(i, new)),
        }
        self.instruments[i].set_channels(id, old, new);
        Some((i, new & !old))
    }

    /// Answers a plain HTTP request (bounded work: see [`http`]).
    fn http_answer(&mut self, method: &str, target: &str) -> Vec<u8> {
        let route = match http::route(method, target) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        match route {
            http::Route::Snapshot { instrument, depth } => {
                let Some(&i) = self.index.get(&instrument) else { return http::unknown_instrument() };
                let ins = &self.instruments[i];
                let (bids, asks) = &mut self.levels;
                ins.book.depth(Side::Buy, depth, bids);
                ins.book.depth(Side::Sell, depth, asks);
                let body = http::snapshot_json(ins.id, ins.seq, ins.book.halted, ins.book.crc(), bids, asks);
                http::response("200 OK", "", &body)
            }
            http::Route::Candles { instrument, interval, from, to } => {
                let Some(&i) = self.index.get(&instrument) else { return http::unknown_instrument() };
                let series = self.instruments[i].candles.series(interval);
                let body = http::candles_json(instrument, interval, from, to, series.range(from, to));
                http::response("200 OK", "", &body)
            }
            http::Route::Stats => {
                let id = [("pid", u64::from(self.cfg.pid)), ("shard", u64::from(self.cfg.shard))];
                let fields: Vec<_> = id.into_iter().chain(self.stats.fields()).collect();
                http::response("200 OK", "", &http::stats_json(&fields))
            }
        }
    }

    /// [`Hub::on_tick_at`] with the wall clock.
    pub fn on_tick(&mut self, heartbeat: bool) {
        self.on_tick_at(heartbeat, now_ns())
    }

    /// Periodic work (call about once a second) at wall-clock time `now_ns` (ns since the Unix
    /// epoch, comparable with engine timestamps): candle buckets ended at least
    /// `candle_grace_ns` before `now_ns` are closed and sent, a heartbeat goes to every open
    /// connection, and connections stuck in the handshake or closing too long are reported to
    /// close.
    pub fn on_tick_at(&mut self, heartbeat: bool, now_ns: u64) {
        self.now_ns = now_ns;
        self.tick = self.tick.wrapping_add(1);
        self.stats.ticks += 1;
        let mut bars = std::mem::take(&mut self.bars);
        for i in 0..self.instruments.len() {
            let ins = &mut self.instruments[i];
            if !ins.candles.has_open() {
                continue;
            }
            ins.candles.on_time(now_ns, self.cfg.candle_grace_ns, &mut bars);
            if !bars.is_empty() {
                Self::encode_candles(&mut self.stats, ins, &mut bars);
                self.fan_out(i, CH_CANDLES);
            }
        }
        self.bars = bars;
        let hb = heartbeat.then(|| {
            let mut p = Vec::with_capacity(md::HEARTBEAT_SIZE);
            md::Heartbeat { nonce: 0, server_ns: now_ns }.encode(&mut p);
            ws_frame(&p)
        });
        if let Some(h) = &hb {
            // Connections still holding the previous heartbeat by flag get it as an entry.
            for id in 0..self.conns.len() as ConnId {
                if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) {
                    c.unflag_heartbeat(&mut self.frames, self.hb_id);
                }
            }
            let old = std::mem::replace(&mut self.hb_id, self.frames.insert(h.clone()));
            self.frames.release(old);
        }
        self.frames.trim();
        for id in 0..self.conns.len() as ConnId {
            let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { continue };
            if !c.busy && c.out.is_empty() && c.out.capacity() > 0 {
                // No market data for a whole tick: the kept queue goes back.
                c.out = VecDeque::new();
            }
            c.busy = false;
            let age = self.tick.wrapping_sub(c.since_tick);
            match c.state {
                State::Open => {
                    if hb.is_some() {
                        self.push_heartbeat(id);
                    }
                }
                State::Handshake | State::Closing => {
                    if age >= self.cfg.linger_ticks {
                        self.to_close.push(id);
                    }
                }
            }
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's fixed cost in the hub (its slot), plus 8 bytes per subscription in
    /// its list and 4 per channel in the instrument's subscriber lists. The mio stream adds a 4-byte fd slot.
    #[test]
    fn idle_connection_is_small() {
        let slot = std::mem::size_of::<Option<Conn>>();
        assert!(slot <= 128, "{slot} bytes");
    }
}
