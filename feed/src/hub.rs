//! The sans-IO heart of a feed shard: instruments (book, sequence, replay window), connections
//! (handshake, client frames, subscriptions, outbound queue with budget) and fan-out. No sockets:
//! the shard's event loop hands it bytes read and a write function; tests drive it directly.

use crate::ws;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use tickwire_core::engine::Level;
use tickwire_core::{Event, EventView, InstrumentId, Seq, Side};
use tickwire_protocol::md::book::MdBook;
use tickwire_protocol::md::{self, ClientMsg, DecodeError, ErrorCode, ErrorMsg, LevelUpdate};

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
}

impl HubConfig {
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
    /// Connections currently open.
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
    /// Resumes served from the replay window.
    pub resumes_replayed: u64,
    /// Resumes answered with a snapshot.
    pub resumes_snapshot: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    /// Close after the queue is written (or after the linger).
    Closing,
}

/// One connection. Idle and caught up, it holds no heap memory but its subscription list.
struct Conn {
    state: State,
    /// Set while over budget under `Conflate`: nothing is queued, snapshots follow the drain.
    conflated: bool,
    in_dirty: bool,
    /// Bytes of `out[0]` already written.
    head_off: u32,
    /// Tick at which it entered its current state (handshake / closing linger).
    since_tick: u32,
    /// Queued bytes not yet written.
    queued: usize,
    out: VecDeque<Bytes>,
    subs: Vec<InstrumentId>,
    /// Only while a handshake or a client frame spans reads. Boxed: 8 bytes when absent
    /// instead of 24, for every idle connection.
    #[allow(clippy::box_collection)]
    partial: Option<Box<Vec<u8>>>,
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
    subscribers: Vec<ConnId>,
    snapshot: Option<Bytes>,
    in_touched: bool,
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
    tick: u32,
    scratch: Vec<u8>,
    levels: (Vec<Level>, Vec<Level>),
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
            tick: 0,
            scratch: Vec::new(),
            levels: (Vec::new(), Vec::new()),
            stats: HubStats::default(),
        }
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

    // ---- engine side --------------------------------------------------------------------

    /// Consumes engine events: books change, trades and status are encoded. Call
    /// [`Hub::publish`] after a batch (one wake-up) to emit delta batches and fan out.
    pub fn on_events(&mut self, evs: &[Event]) {
        for ev in evs {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: &Event) {
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
                let mut p = Vec::with_capacity(md::TRADE_SIZE);
                md::Trade { instrument: ins.id, seq: ins.seq, trade_id, price, qty, aggressor, ts_ns }.encode(&mut p);
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

    /// Ends a wake-up: encodes each touched instrument's delta batch once, then queues every new
    /// frame to its subscribers. Returns the connections that have something to write.
    pub fn publish(&mut self) -> &[ConnId] {
        let touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            let ins = &mut self.instruments[i];
            ins.in_touched = false;
            Self::encode_pending(&self.cfg, &mut self.stats, &mut self.scratch, ins);
            let fresh = std::mem::take(&mut ins.fresh);
            let subs = std::mem::take(&mut ins.subscribers);
            for &c in &subs {
                for f in &fresh {
                    self.push(c, f.clone(), true);
                }
            }
            let ins = &mut self.instruments[i];
            ins.subscribers = subs;
            ins.fresh = fresh;
            ins.fresh.clear();
        }
        self.touched = touched;
        self.touched.clear();
        &self.dirty
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
            head_off: 0,
            since_tick: self.tick,
            queued: 0,
            out: VecDeque::new(),
            subs: Vec::new(),
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
        for ins_id in c.subs {
            if let Some(&i) = self.index.get(&ins_id) {
                let s = &mut self.instruments[i].subscribers;
                if let Some(p) = s.iter().position(|&x| x == id) {
                    s.swap_remove(p);
                }
            }
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

    /// Queues a frame. `budgeted` frames are subject to the outbound budget.
    fn push(&mut self, id: ConnId, f: Bytes, budgeted: bool) {
        let budget = self.cfg.budget_bytes;
        let policy = self.cfg.slow_policy;
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_mut()) else { return };
        if c.state != State::Open || (budgeted && c.conflated) {
            return;
        }
        if budgeted && !c.out.is_empty() && c.queued + f.len() > budget {
            // Keep a frame already partly written: the WebSocket stream must stay well-formed.
            let keep = if c.head_off > 0 { c.out.pop_front() } else { None };
            c.out.clear();
            c.queued = 0;
            if let Some(h) = keep {
                c.queued = h.len() - c.head_off as usize;
                c.out.push_back(h);
            } else {
                c.head_off = 0;
            }
            match policy {
                SlowPolicy::Conflate => {
                    c.conflated = true;
                    self.stats.conflations += 1;
                }
                SlowPolicy::Disconnect => {
                    for fr in [error_frame(ErrorMsg::new(ErrorCode::SlowConsumer, 0, 0)), Bytes::from(ws::close_frame(ws::CLOSE_POLICY))] {
                        c.queued += fr.len();
                        c.out.push_back(fr);
                    }
                    c.state = State::Closing;
                    c.since_tick = self.tick;
                    self.stats.slow_disconnects += 1;
                }
            }
        } else {
            c.queued += f.len();
            c.out.push_back(f);
            self.stats.frames_queued += 1;
        }
        if !c.in_dirty {
            c.in_dirty = true;
            self.dirty.push(id);
        }
    }

    /// Queues a frame that bypasses the budget and conflation (handshake answers, pongs, closes).
    fn push_control(&mut self, id: ConnId, f: Bytes) {
        let Some(c) = self.conn_mut(id) else { return };
        c.queued += f.len();
        c.out.push_back(f);
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
            if c.out.is_empty() {
                self.to_close.push(id);
            }
        }
    }

    /// Takes the connections whose write queues changed (to flush) — the backend calls
    /// [`Hub::flush`] for each.
    pub fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        out.clear();
        std::mem::swap(out, &mut self.dirty);
        for &id in out.iter() {
            if let Some(c) = self.conn_mut(id) {
                c.in_dirty = false;
            }
        }
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
            if c.out.is_empty() {
                if c.state == State::Closing {
                    return Flush::Close;
                }
                if c.conflated && c.state == State::Open {
                    // Drained: resynchronise every subscription with a fresh snapshot.
                    c.conflated = false;
                    let subs = c.subs.clone();
                    for ins_id in subs {
                        if let Some(&i) = self.index.get(&ins_id) {
                            let s = self.snapshot(i);
                            self.push(id, s, false);
                        }
                    }
                    continue;
                }
                if c.out.capacity() > 16 {
                    c.out = VecDeque::new(); // give back a burst's memory when idle
                }
                return Flush::Done;
            }
            let mut slices: [IoSlice<'_>; 64] = std::array::from_fn(|_| IoSlice::new(&[]));
            let mut n = 0;
            for (k, f) in c.out.iter().take(64).enumerate() {
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
                        let Some(front) = c.out.front() else { break };
                        let rest = front.len() - c.head_off as usize;
                        if w >= rest {
                            w -= rest;
                            c.out.pop_front();
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
                State::Handshake => match ws::parse_handshake(&buf[pos..]) {
                    ws::Handshake::Partial => {
                        if buf.len() - pos > self.cfg.max_handshake {
                            self.stats.handshake_failures += 1;
                            let r = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                            self.push_control(id, Bytes::from_static(r));
                            self.begin_close(id, 0);
                            return buf.len();
                        }
                        return pos;
                    }
                    ws::Handshake::Reject { response } => {
                        self.stats.handshake_failures += 1;
                        self.push_control(id, Bytes::from(response));
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
                        match fr.opcode {
                            ws::OP_BINARY => self.on_client_msg(id, &buf[a..b]),
                            ws::OP_PING => {
                                if self.queued(id) > self.cfg.budget_bytes {
                                    self.stats.slow_disconnects += 1;
                                    self.begin_close(id, ws::CLOSE_POLICY);
                                    return buf.len();
                                }
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
        self.push(id, error_frame(ErrorMsg::new(code, instrument, detail)), false);
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
                self.push(id, ws_frame(&p), false);
            }
            ClientMsg::Subscribe { instrument } => {
                let Some(i) = self.subscribe(id, instrument) else { return };
                if !i.1 {
                    return self.send_error(id, ErrorCode::AlreadySubscribed, instrument, 0);
                }
                let s = self.snapshot(i.0);
                self.push(id, s, false);
            }
            ClientMsg::Resume { instrument, last_seq } => {
                let Some((i, _)) = self.subscribe(id, instrument) else { return };
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
                            self.push(id, f, false);
                        }
                    }
                    None => {
                        self.stats.resumes_snapshot += 1;
                        self.send_error(id, ErrorCode::ResumeUnavailable, instrument, last_seq);
                        let s = self.snapshot(i);
                        self.push(id, s, false);
                    }
                }
            }
            ClientMsg::Unsubscribe { instrument } => {
                let Some(c) = self.conn_mut(id) else { return };
                let Some(p) = c.subs.iter().position(|&x| x == instrument) else {
                    return self.send_error(id, ErrorCode::NotSubscribed, instrument, 0);
                };
                c.subs.swap_remove(p);
                if c.subs.is_empty() {
                    c.subs = Vec::new();
                }
                if let Some(&i) = self.index.get(&instrument) {
                    let s = &mut self.instruments[i].subscribers;
                    if let Some(p) = s.iter().position(|&x| x == id) {
                        s.swap_remove(p);
                    }
                }
            }
        }
    }

    /// Adds a subscription; `Some((instrument index, newly added))`, or `None` after an error.
    fn subscribe(&mut self, id: ConnId, instrument: InstrumentId) -> Option<(usize, bool)> {
        let Some(&i) = self.index.get(&instrument) else {
            self.send_error(id, ErrorCode::UnknownInstrument, instrument, 0);
            return None;
        };
        let max = self.cfg.max_subs;
        let c = self.conn_mut(id)?;
        if c.subs.contains(&instrument) {
            return Some((i, false));
        }
        if c.subs.len() >= max {
            self.send_error(id, ErrorCode::TooManySubscriptions, instrument, max as u64);
            return None;
        }
        c.subs.push(instrument);
        self.instruments[i].subscribers.push(id);
        Some((i, true))
    }

    /// Periodic work (call about once a second): a heartbeat to every open connection, and
    /// connections stuck in the handshake or closing too long are reported to close.
    pub fn on_tick(&mut self, heartbeat: bool) {
        self.tick = self.tick.wrapping_add(1);
        let hb = heartbeat.then(|| {
            let mut p = Vec::with_capacity(md::HEARTBEAT_SIZE);
            md::Heartbeat { nonce: 0, server_ns: now_ns() }.encode(&mut p);
            ws_frame(&p)
        });
        for id in 0..self.conns.len() as ConnId {
            let Some(c) = self.conn(id) else { continue };
            let age = self.tick.wrapping_sub(c.since_tick);
            match c.state {
                State::Open => {
                    if let Some(h) = &hb {
                        self.push(id, h.clone(), true);
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

    /// An idle connection's fixed cost in the hub (its slot), plus 4 bytes per subscription in
    /// its list and 4 in the instrument's subscriber list. The mio stream adds a 4-byte fd slot.
    #[test]
    fn idle_connection_is_small() {
        let slot = std::mem::size_of::<Option<Conn>>();
        assert!(slot <= 128, "{slot} bytes");
    }
}
