//! The order-entry event loop: one thread, mio (epoll, edge-triggered), a sans-IO
//! [`Session`] per connection.
//!
//! Per turn:
//! 1. `epoll_wait` (timeout below); accept new connections (per-source-address rate limit,
//!    connection cap, `TCP_NODELAY`); read readable connections into one scratch buffer, at most
//!    `read_budget` bytes per connection per turn (a connection with more is revisited next
//!    turn, so one busy client cannot starve the others) and hand the bytes to its session.
//! 2. Commands the sessions produced go to the core through the pipeline's multi-producer
//!    [`CommandProducer`] as soon as they are produced.
//! 3. Engine events come back from an [`EventConsumer`] gated on the journal's durable sequence
//!    (nothing is acknowledged before its command is journaled): each event goes to the
//!    [`Hub`], which numbers and stores the execution reports, and the live session of every key
//!    concerned writes them; the same batch is handed to the market-data feed.
//! 4. Session timers (`poll_timeout`: logon timeout, heartbeats, long replays) that are due.
//! 5. The gateway reject log is `fdatasync`ed if a reject was appended this turn, and only then
//!    is the turn's output written to the sockets (partial writes continue on `WRITABLE`). Each
//!    connection's unsent output is bounded (`max_outbound_bytes`). Execution reports are
//!    flow-controlled: while more than half of that is unsent, a session's stored reports wait
//!    in the replay store (a long replay goes out as the client reads). A client whose output
//!    makes no progress for `slow_consumer_ms`, or that would exceed the bound, is disconnected
//!    as a slow consumer (logged with the reason; cancel-on-disconnect applies).
//!
//! **How engine events reach the loop (latency choice).** Every command comes from this loop, so
//! events can only be pending while a command sent by it has not yet seen its last event
//! (`last_in_command`). While such commands are in flight the loop polls epoll with a zero
//! timeout. A turn that finds nothing yields the CPU (`yield_now`) and looks at the consumer
//! again; after [`EMPTY_TURNS_BEFORE_PARK`] such turns in a row the loop parks on the event
//! consumer's [`Doorbell`]: it announces the park, checks the consumer once more, and then
//! blocks in `epoll_wait` (up to [`IN_FLIGHT_PARK_MAX`]). The engine rings that doorbell after publishing events and the
//! journaler after making commands durable; a ring that finds the loop parked writes its
//! [`Waker`] (an eventfd), so the loop wakes as soon as the acknowledgement is releasable. The
//! engine and the journaler make that system call only when the loop is parked, never while it
//! is busy. With nothing in flight the loop blocks in epoll until a socket, a session timer or
//! the shutdown [`Waker`] wakes it, using no CPU.
//!
//! With the `spin` wait profile ([`EventLoop::set_in_flight_spin`], `[server] wait = "spin"`),
//! a turn that found nothing while commands are in flight first spins on the event consumer
//! (`spin_loop`, the consumer checked on every iteration) for up to the spin budget, counted
//! from the first empty turn and reset by any work; it goes back to epoll (zero timeout) at
//! least every [`SPIN_CHUNK`] so sockets are still served. After the budget it yields for
//! [`YIELD_PHASE`], then parks as above. Every phase is bounded; nothing spins while no command
//! is in flight.
//!
//! Connections that end are closed gracefully: pending output is written, the write side is shut
//! down, and input is read and dropped until EOF (at most one second), so the peer receives a
//! final SessionReject/Logout instead of a reset.

use crate::config::NetLimits;
use crate::replay_journal::RejectLog;
use crate::session::{Effects, Hub, KeyId, Session, SessionState};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tickwire_core::pipeline::{CommandProducer, EventConsumer};
use tickwire_core::ring::Doorbell;
use tickwire_core::{Event, Seq};
use tickwire_feed::FeedSender;
use tickwire_protocol::DisconnectReason;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
const LINGER_NS: u64 = 1_000_000_000;
const EVENTS_PER_POLL: usize = 4096;
const BACKLOG_RECHECK_NS: u64 = 50_000_000;
/// Longest stretch of the in-flight spin before the loop polls its sockets again.
pub const SPIN_CHUNK: Duration = Duration::from_micros(20);
/// During the in-flight spin, one iteration in this many yields instead of spinning.
const SPIN_YIELD_EVERY: u32 = 16;
/// How long the loop yields after its spin budget, before it parks.
pub const YIELD_PHASE: Duration = Duration::from_micros(50);
/// Longest park in `epoll_wait` while commands are in flight (a bound only: the engine's and the
/// journaler's rings end it as soon as events are releasable).
pub const IN_FLIGHT_PARK_MAX: Duration = Duration::from_millis(1);
/// Empty turns (each a zero-timeout `epoll_wait`, then a `yield_now` and a look at the event
/// consumer) the loop makes with commands in flight before it parks, in the default profile.
/// Near saturation the next engine batch is usually this close, and catching it without a park
/// saves the engine an eventfd write and the loop a wake-up per batch.
pub const EMPTY_TURNS_BEFORE_PARK: u32 = 3;

/// Wall clock, ns since the Unix epoch (compared with the Logon's timestamp).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Opens the non-blocking order-entry listener: `SO_REUSEADDR`, `TCP_NODELAY` (inherited by
/// accepted sockets, and set again on each), the given backlog.
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    s.set_nonblocking(true)?;
    Ok(TcpListener::from_std(s.into()))
}

fn log(msg: &str) {
    eprintln!("tickwire-gateway: {msg}");
}

/// Counters of the loop (printed at shutdown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections closed at once: over the per-address rate.
    pub refused_rate: u64,
    /// Connections closed at once: over `max_connections`.
    pub refused_full: u64,
    /// Connections closed as slow consumers.
    pub slow_disconnects: u64,
    /// Commands sent to the core.
    pub commands: u64,
    /// Engine events handled.
    pub events: u64,
}

#[derive(PartialEq, Eq)]
enum ConnState {
    Open,
    /// Writing what is left, then shutdown(Write), then draining input until EOF or `until_ns`.
    Closing { until_ns: u64, shut: bool },
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
    out: Vec<u8>,
    out_pos: usize,
    deadline: Option<u64>,
    state: ConnState,
    key: Option<KeyId>,
    /// Output pending since this time without any byte written (slow-consumer timer).
    stalled_since: Option<u64>,
}

impl Conn {
    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Shutdown handle of a running loop: sets the flag and wakes the loop.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to stop (drain and close every session).
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// The order-entry event loop. Single-threaded (the hub and sessions are `Rc`).
pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    hub: Hub,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    key_conn: HashMap<KeyId, usize>,
    producer: CommandProducer,
    consumer: EventConsumer,
    feed: Vec<FeedSender>,
    rejlog: Rc<RefCell<RejectLog>>,
    limits: NetLimits,
    ip_window: (u64, HashMap<IpAddr, u32>),
    last_sent: Seq,
    last_done: Seq,
    fx: Effects,
    scratch: Vec<u8>,
    evbuf: Vec<Event>,
    parked: Vec<Event>,
    keys: Vec<KeyId>,
    dirty: Vec<usize>,
    read_more: Vec<usize>,
    stats: LoopStats,
    verbose: bool,
    /// Spin budget while commands are in flight (zero: park after a few empty turns).
    in_flight_spin: Duration,
    /// Start of the current run of empty turns with commands in flight.
    idle_since: Option<Instant>,
    /// Empty turns in that run so far (bounded by [`EMPTY_TURNS_BEFORE_PARK`] before a park).
    empty_turns: u32,
    /// The event consumer's doorbell (its waker writes `waker`).
    bell: Arc<Doorbell>,
    /// Parked on `bell`: the next `epoll_wait` blocks (bounded) instead of polling.
    parking: bool,
}

impl EventLoop {
    /// A loop serving `listener` with sessions on `hub`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: TcpListener,
        hub: Hub,
        producer: CommandProducer,
        consumer: EventConsumer,
        feed: Vec<FeedSender>,
        rejlog: Rc<RefCell<RejectLog>>,
        limits: NetLimits,
        last_cmd_seq: Seq,
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut listener = listener;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let local_addr = listener.local_addr()?;
        let bell = consumer.doorbell();
        let w = waker.clone();
        // The engine's and the journaler's rings wake the loop's epoll_wait (only when parked).
        bell.set_waker(Box::new(move || {
            let _ = w.wake();
        }));
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            hub,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            key_conn: HashMap::new(),
            producer,
            consumer,
            feed,
            rejlog,
            scratch: vec![0u8; limits.read_budget.clamp(4096, 64 << 10)],
            limits,
            ip_window: (0, HashMap::new()),
            last_sent: last_cmd_seq,
            last_done: last_cmd_seq,
            fx: Effects::new(),
            evbuf: Vec::with_capacity(EVENTS_PER_POLL),
            parked: Vec::new(),
            keys: Vec::new(),
            dirty: Vec::new(),
            read_more: Vec::new(),
            stats: LoopStats::default(),
            verbose: std::env::var_os("TICKWIRE_VERBOSE").is_some(),
            in_flight_spin: Duration::ZERO,
            idle_since: None,
            empty_turns: 0,
            bell,
            parking: false,
        })
    }

    /// The `spin` wait profile: while commands are in flight and a turn found nothing, spin on
    /// the event consumer for up to `budget` (then yield, then park). `ZERO` (the default): park
    /// after [`EMPTY_TURNS_BEFORE_PARK`] empty turns.
    pub fn set_in_flight_spin(&mut self, budget: Duration) {
        self.in_flight_spin = budget;
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the loop from another thread (or a signal watcher).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { flag: self.stop.clone(), waker: self.waker.clone() }
    }

    /// Counters so far.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }

    fn in_flight(&self) -> bool {
        self.last_done < self.last_sent
    }

    /// Runs until stopped, then drains: every session is ended with Logout `server_shutdown`
    /// (cancel-on-disconnect applies), the resulting commands are applied and their reports
    /// stored, output is flushed (up to a second), and the connections are closed.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Acquire) {
            let now = now_ns();
            let busy = self.in_flight() || !self.read_more.is_empty();
            // (next_deadline walks the connections: only asked when the loop may block.)
            let until_deadline = || self.next_deadline().map(|d| Duration::from_nanos(d.saturating_sub(now)));
            let timeout = if self.parking {
                Some(until_deadline().map_or(IN_FLIGHT_PARK_MAX, |t| t.min(IN_FLIGHT_PARK_MAX)))
            } else if busy {
                Some(Duration::ZERO)
            } else {
                until_deadline()
            };
            let polled = self.poll.poll(&mut events, timeout);
            if self.parking {
                self.bell.cancel_park();
                self.parking = false;
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // The waker's own event (a doorbell ring, or shutdown) is not work: the events it
            // announces are counted by `pump_events` below.
            let mut worked = events.iter().any(|e| e.token() != WAKER);
            let now = now_ns();
            let retry = std::mem::take(&mut self.read_more);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    Token(t) => {
                        let idx = t - FIRST_CONN;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(idx, now);
                        }
                        if ev.is_writable() {
                            self.mark_dirty(idx);
                        }
                    }
                }
            }
            for idx in retry {
                self.on_readable(idx, now);
            }
            worked |= self.pump_events(now) > 0;
            self.run_timers(now);
            self.flush_dirty(now);
            if worked || !self.in_flight() {
                self.idle_since = None;
                self.empty_turns = 0;
            } else if self.wait_in_flight() {
                // Events arrived while waiting: write their reports at once.
                self.empty_turns = 0;
                self.flush_dirty(now_ns());
            }
        }
        // Stopped with a park announced: rings during the drain need not write the eventfd.
        self.bell.cancel_park();
        self.parking = false;
        self.drain();
        Ok(())
    }

    /// Waits a little after a turn that found nothing while commands are in flight: spin (up to
    /// the budget), then yield (`YIELD_PHASE`), then park (`park_in_flight`); without a spin
    /// budget, yield for the first [`EMPTY_TURNS_BEFORE_PARK`] empty turns, then park. Returns
    /// whether it handled engine events.
    fn wait_in_flight(&mut self) -> bool {
        if self.in_flight_spin.is_zero() {
            if self.empty_turns < EMPTY_TURNS_BEFORE_PARK {
                self.empty_turns += 1;
                std::thread::yield_now();
                return self.take_events() && self.pump_events(now_ns()) > 0;
            }
            return self.park_in_flight();
        }
        let start = *self.idle_since.get_or_insert_with(Instant::now);
        let idle = start.elapsed();
        if idle < self.in_flight_spin {
            let end = Instant::now() + (self.in_flight_spin - idle).min(SPIN_CHUNK);
            let mut i = 0u32;
            loop {
                if self.take_events() {
                    return self.pump_events(now_ns()) > 0;
                }
                i = i.wrapping_add(1);
                if i.is_multiple_of(SPIN_YIELD_EVERY) {
                    // Lets a runnable thread on this CPU (the engine, the journaler, the
                    // client) run: on a box with few cores a pure spin delays them.
                    std::thread::yield_now();
                } else {
                    for _ in 0..8 {
                        std::hint::spin_loop();
                    }
                }
                if Instant::now() >= end {
                    return false;
                }
            }
        }
        if idle < self.in_flight_spin + YIELD_PHASE {
            std::thread::yield_now();
            return self.take_events() && self.pump_events(now_ns()) > 0;
        }
        self.park_in_flight()
    }

    /// Parks on the event consumer's doorbell: announces it, checks the consumer once more (an
    /// event published before the announcement rings nobody), and if still nothing, makes the
    /// next `epoll_wait` block up to [`IN_FLIGHT_PARK_MAX`]; the engine's or the journaler's ring
    /// (or a socket) ends it. Returns whether it handled engine events.
    fn park_in_flight(&mut self) -> bool {
        if !self.parked.is_empty() {
            // Events already taken off the ring (while `submit` waited for inbound space): no
            // ring will announce them.
            return self.pump_events(now_ns()) > 0;
        }
        if !self.read_more.is_empty() {
            return false; // the next turn has reading to do: no blocking
        }
        self.bell.prepare_park();
        if self.take_events() {
            self.bell.cancel_park();
            return self.pump_events(now_ns()) > 0;
        }
        self.parking = true;
        false
    }

    /// Moves the available (durable) events into `parked` (handled by the next `pump_events`);
    /// whether there were any.
    fn take_events(&mut self) -> bool {
        let parked = &mut self.parked;
        self.consumer.poll(EVENTS_PER_POLL, |e, _| parked.push(*e)) > 0
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut d: Option<u64> = None;
        for c in self.conns.iter().flatten() {
            let stall = c.stalled_since.map(|t| t.saturating_add(self.limits.slow_consumer_ms.saturating_mul(1_000_000)));
            let cd = match c.state {
                ConnState::Open => match (c.deadline, stall) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                ConnState::Closing { until_ns, .. } => Some(until_ns),
            };
            if let Some(cd) = cd {
                d = Some(d.map_or(cd, |x: u64| x.min(cd)));
            }
        }
        d
    }

    fn ip_allowed(&mut self, ip: IpAddr, now: u64) -> bool {
        let sec = now / 1_000_000_000;
        if self.ip_window.0 != sec {
            self.ip_window = (sec, HashMap::new());
        }
        let n = self.ip_window.1.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        *n <= self.limits.max_conn_per_ip_per_sec
    }

    fn accept_all(&mut self, now: u64) {
        loop {
            let Some(l) = self.listener.as_ref() else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    if !self.ip_allowed(peer.ip(), now) {
                        self.stats.refused_rate += 1;
                        if self.verbose {
                            log(&format!("{peer}: over {} connections/s, closed", self.limits.max_conn_per_ip_per_sec));
                        }
                        drop(stream);
                        continue;
                    }
                    if self.open >= self.limits.max_connections {
                        self.stats.refused_full += 1;
                        drop(stream);
                        continue;
                    }
                    self.add_conn(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next readiness.
                    log(&format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr, now: u64) {
        let _ = stream.set_nodelay(true);
        if self.limits.socket_send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(self.limits.socket_send_buffer);
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(idx + FIRST_CONN), Interest::READABLE | Interest::WRITABLE)
        {
            log(&format!("{peer}: register: {e}"));
            self.free.push(idx);
            return;
        }
        let session = Session::new(self.hub.clone(), now);
        self.conns[idx] = Some(Conn {
            stream,
            peer,
            session,
            out: Vec::new(),
            out_pos: 0,
            deadline: None,
            state: ConnState::Open,
            key: None,
            stalled_since: None,
        });
        self.open += 1;
        self.stats.accepted += 1;
        self.refresh(idx, now);
    }

    /// Calls `poll_timeout` (timers, pending replay) and applies its effects.
    fn refresh(&mut self, idx: usize, now: u64) {
        let mut fx = std::mem::take(&mut self.fx);
        let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
            self.fx = fx;
            return;
        };
        if c.state != ConnState::Open {
            self.fx = fx;
            return;
        }
        if c.pending_out() > self.limits.max_outbound_bytes / 2 {
            // Flow control: stored reports wait until the client has read half of its backlog
            // (they are in the replay store; `flush_conn` calls back here once it drained).
            c.deadline = Some(now.saturating_add(BACKLOG_RECHECK_NS));
            self.fx = fx;
            return;
        }
        c.deadline = c.session.poll_timeout(now, &mut fx);
        self.apply(idx, &mut fx, now);
        self.fx = fx;
    }

    /// Acts on a session's effects: submit commands, queue output, begin a close.
    fn apply(&mut self, idx: usize, fx: &mut Effects, now: u64) {
        for c in fx.commands.drain(..) {
            self.submit(c);
        }
        let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
            fx.clear();
            return;
        };
        match c.session.state() {
            SessionState::Active(k) if c.key.is_none() => {
                c.key = Some(k);
                self.key_conn.insert(k, idx);
            }
            _ => {}
        }
        // Unsent bytes this turn would leave (recorded before `fx` is cleared, for the log).
        let mut slow_unsent: Option<usize> = None;
        if !fx.out.is_empty() {
            if c.pending_out() + fx.out.len() > self.limits.max_outbound_bytes {
                slow_unsent = Some(c.pending_out() + fx.out.len());
            } else {
                c.out.extend_from_slice(&fx.out);
                if !self.dirty.contains(&idx) {
                    self.dirty.push(idx);
                }
            }
        }
        let close = fx.close.take();
        fx.clear();
        if let Some(unsent) = slow_unsent {
            let why = format!("{unsent} bytes unsent, limit {}", self.limits.max_outbound_bytes);
            self.slow_disconnect(idx, now, &why);
            return;
        }
        if let Some(reason) = close {
            if self.verbose {
                log(&format!("{}: session closed ({})", c.peer, reason.name()));
            }
            self.forget_key(idx);
            if let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) {
                c.state = ConnState::Closing { until_ns: now.saturating_add(LINGER_NS), shut: false };
                c.deadline = None;
            }
            self.mark_dirty(idx);
        }
    }

    /// Ends a client that does not read: cancel-on-disconnect applies, nothing more is sent.
    fn slow_disconnect(&mut self, idx: usize, now: u64, why: &str) {
        let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else { return };
        self.stats.slow_disconnects += 1;
        log(&format!("{}: slow consumer ({why}): disconnected", c.peer));
        let mut fx = Effects::new();
        c.session.handle_disconnect(now, &mut fx);
        for cmd in fx.commands.drain(..) {
            self.submit(cmd);
        }
        self.remove(idx);
    }

    fn forget_key(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) {
            if let Some(k) = c.key.take() {
                if self.key_conn.get(&k) == Some(&idx) {
                    self.key_conn.remove(&k);
                }
            }
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        if !self.dirty.contains(&idx) {
            self.dirty.push(idx);
        }
    }

    /// Drops a connection (its session must be closed already, or it is ended as transport
    /// closed first).
    fn remove(&mut self, idx: usize) {
        self.forget_key(idx);
        let Some(mut c) = self.conns.get_mut(idx).and_then(|c| c.take()) else { return };
        if !c.session.is_closed() {
            let mut fx = Effects::new();
            c.session.handle_disconnect(now_ns(), &mut fx);
            for cmd in fx.commands.drain(..) {
                self.submit(cmd);
            }
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.open -= 1;
        self.free.push(idx);
    }

    fn on_readable(&mut self, idx: usize, now: u64) {
        let mut budget = self.limits.read_budget;
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) {
            if budget == 0 {
                self.read_more.push(idx);
                break;
            }
            let n = budget.min(scratch.len());
            match c.stream.read(&mut scratch[..n]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => {
                    // EOF or a socket error: the session sees a disconnect (cancel-on-disconnect).
                    if c.state == ConnState::Open {
                        let mut fx = std::mem::take(&mut self.fx);
                        c.session.handle_disconnect(now, &mut fx);
                        fx.out.clear();
                        self.apply(idx, &mut fx, now);
                        self.fx = fx;
                    }
                    self.remove(idx);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    if c.state != ConnState::Open {
                        continue; // closing: input is dropped
                    }
                    let mut fx = std::mem::take(&mut self.fx);
                    c.session.handle_bytes(&scratch[..n], now, &mut fx);
                    c.deadline = c.session.poll_timeout(now, &mut fx);
                    self.apply(idx, &mut fx, now);
                    self.fx = fx;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Sends a command to the core. The inbound ring may be full because the engine waits for
    /// this loop to take events off a full outbound ring: while it is, the loop moves events
    /// into `parked` (handled by the next `pump_events`), so it never deadlocks with the engine.
    fn submit(&mut self, cmd: tickwire_core::Command) {
        loop {
            match self.producer.try_send(cmd) {
                Ok(seq) => {
                    self.last_sent = seq;
                    self.stats.commands += 1;
                    return;
                }
                Err(_) => {
                    let parked = &mut self.parked;
                    if self.consumer.poll(EVENTS_PER_POLL, |e, _| parked.push(*e)) == 0 {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }

    /// Hands available (durable) engine events to the hub, the sessions and the feed.
    fn pump_events(&mut self, now: u64) -> usize {
        let mut total = 0;
        loop {
            let mut evbuf = std::mem::take(&mut self.evbuf);
            evbuf.clear();
            if self.parked.is_empty() {
                self.consumer.poll(EVENTS_PER_POLL, |e, _| evbuf.push(*e));
            } else {
                // Events taken off the ring while a command waited for inbound space.
                std::mem::swap(&mut evbuf, &mut self.parked);
            }
            let n = evbuf.len();
            if n == 0 {
                self.evbuf = evbuf;
                return total;
            }
            total += n;
            self.stats.events += n as u64;
            for s in &self.feed {
                s.send(&evbuf);
            }
            let mut keys = std::mem::take(&mut self.keys);
            let mut touched: Vec<usize> = Vec::new();
            for ev in &evbuf {
                if ev.is_last_in_command() {
                    self.last_done = self.last_done.max(ev.cmd_seq);
                }
                self.hub.handle_event_keys(ev, &mut keys);
                for k in &keys {
                    if let Some(&idx) = self.key_conn.get(k) {
                        if !touched.contains(&idx) {
                            touched.push(idx);
                        }
                    }
                }
            }
            self.keys = keys;
            self.evbuf = evbuf;
            // Flush each concerned session once per batch (poll_timeout flushes its reports).
            for idx in touched {
                self.refresh(idx, now);
            }
            if n < EVENTS_PER_POLL && self.parked.is_empty() {
                return total;
            }
        }
    }

    fn run_timers(&mut self, now: u64) {
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else { continue };
            match c.state {
                ConnState::Open => {
                    let slow_ns = self.limits.slow_consumer_ms.saturating_mul(1_000_000);
                    if let Some(t) = c.stalled_since.filter(|&t| now.saturating_sub(t) >= slow_ns) {
                        let why = format!(
                            "{} bytes unread for {} ms",
                            c.pending_out(),
                            now.saturating_sub(t) / 1_000_000
                        );
                        self.slow_disconnect(idx, now, &why);
                    } else if c.deadline.is_some_and(|d| d <= now) {
                        self.refresh(idx, now);
                    }
                }
                ConnState::Closing { until_ns, .. } => {
                    if until_ns <= now {
                        self.remove(idx);
                    }
                }
            }
        }
    }

    /// Syncs the reject log if needed, then writes every connection's pending output.
    fn flush_dirty(&mut self, now: u64) {
        if self.dirty.is_empty() {
            return;
        }
        {
            let mut rl = self.rejlog.borrow_mut();
            if rl.is_dirty() {
                rl.sync();
            }
            if let Some(e) = rl.error.take() {
                drop(rl);
                log(&format!("gateway reject log: {e}"));
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for idx in dirty {
            self.flush_conn(idx, now);
        }
    }

    fn flush_conn(&mut self, idx: usize, now: u64) {
        let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else { return };
        let mut failed = false;
        let before = c.out_pos;
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            if c.out.capacity() > 64 << 10 {
                c.out.shrink_to(4096);
            }
            c.stalled_since = None;
        } else if c.out_pos > before || c.stalled_since.is_none() {
            c.stalled_since = Some(now);
        }
        let resume = c.state == ConnState::Open
            && c.pending_out() <= self.limits.max_outbound_bytes / 2
            && c.session.reports_pending();
        if failed {
            if c.state == ConnState::Open {
                let mut fx = std::mem::take(&mut self.fx);
                c.session.handle_disconnect(now, &mut fx);
                fx.out.clear();
                self.apply(idx, &mut fx, now);
                self.fx = fx;
            }
            self.remove(idx);
            return;
        }
        if let ConnState::Closing { until_ns, shut: false } = c.state {
            if c.pending_out() == 0 {
                let _ = c.stream.shutdown(Shutdown::Write);
                c.state = ConnState::Closing { until_ns, shut: true };
            }
        }
        if resume {
            self.refresh(idx, now);
        }
    }

    /// Shutdown: stop accepting, end every session, apply the resulting commands, flush.
    fn drain(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let now = now_ns();
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else { continue };
            if c.state == ConnState::Open {
                let mut fx = std::mem::take(&mut self.fx);
                c.session.disconnect(DisconnectReason::ServerShutdown, now, &mut fx);
                self.apply(idx, &mut fx, now);
                self.fx = fx;
            }
        }
        // Wait (bounded) for the engine events of every command sent, so their reports are
        // stored and the journal holds everything acknowledged.
        let t0 = Instant::now();
        while self.in_flight() && t0.elapsed() < Duration::from_secs(10) {
            if self.pump_events(now_ns()) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if self.in_flight() {
            log(&format!(
                "shutdown: commands up to {} sent but events only up to {} arrived",
                self.last_sent, self.last_done
            ));
        }
        self.flush_dirty(now_ns());
        // Let the peers read the final frames (bounded).
        let mut events = Events::with_capacity(256);
        while self.open > 0 && t0.elapsed() < Duration::from_secs(11) {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
            let now = now_ns();
            for ev in events.iter() {
                let Token(t) = ev.token();
                if t >= FIRST_CONN {
                    if ev.is_readable() || ev.is_read_closed() {
                        self.on_readable(t - FIRST_CONN, now);
                    }
                    self.mark_dirty(t - FIRST_CONN);
                }
            }
            self.flush_dirty(now);
            self.run_timers(now);
        }
        for idx in 0..self.conns.len() {
            self.remove(idx);
        }
    }

    /// Sequence of the last command sent to the core (and, after `run` returned, applied).
    pub fn last_sent(&self) -> Seq {
        self.last_sent
    }
}
