//! The order-entry session state machine, sans IO.
//!
//! One [`Session`] per client connection. The event loop only moves bytes and time:
//!
//! ```text
//! let hub = Hub::new(config, Box::new(MemoryReplayStore::new(100_000)))?;
//! // on accept:            sessions[id] = Session::new(hub.clone(), now)
//! // on readable:          session.handle_bytes(&buf[..n], now, &mut fx)
//! // per engine event:     hub.handle_event_keys(&ev, &mut keys);
//! //                       then session.flush_reports(now, &mut fx) for the live session of each key
//! //                       (or simply session.handle_event(&ev, now, &mut fx) for every session)
//! // on timer / each turn: deadline = session.poll_timeout(now, &mut fx)
//! // on socket EOF/error:  session.handle_disconnect(now, &mut fx)
//! // after each call:      write fx.out, submit fx.commands to the engine, close if fx.close, fx.clear()
//! ```
//!
//! `now_ns` is the caller's clock in nanoseconds since the Unix epoch: it times heartbeats and
//! throttling, and is compared with the Logon's timestamp. Nothing here reads a clock, sleeps,
//! spawns or touches a socket. `Hub` and `Session` are single-threaded (`Rc`).
//!
//! Rules (see docs/protocol.md, "Session"):
//! - Nothing but Logon is accepted before the logon; any other frame gets SessionReject
//!   `NotLoggedOn` and the connection is closed. Logon failures (unknown key, bad signature,
//!   timestamp outside the window, nonce reused, key already logged on) get LogonRejected and a
//!   close. No Logon within `logon_timeout_ns` → Logout `LogonTimeout` and close.
//! - A malformed frame (bad length, oversize, unknown type, bad version, invalid field) gets
//!   SessionReject with its reason, and the connection is closed right after it (close reason
//!   `ProtocolError`; no Logout is sent).
//! - Heartbeats: the server sends one when it has sent nothing for an interval; nothing received
//!   for two intervals → Logout `HeartbeatTimeout` and close.
//! - Throttling: a token bucket per key (`rate_per_sec`, `burst`) charges every message after
//!   the logon; an order message without a token is rejected `Throttled`. The key's throttle
//!   count goes up by one per message without a token and down by one per message with one (it
//!   restarts from 0 once the bucket has filled up again); at `throttle_disconnect_after` →
//!   Logout `Throttled` and close. Bucket and count belong to the key, not the connection, so a
//!   reconnect neither refills the bucket nor clears the count.
//! - Authorisation: `read` keys get `NotAuthorised` for every order message; `trade` keys for an
//!   account not theirs; `admin` keys may act for any account (up to [`ADMIN_ACCOUNTS_MAX`]
//!   distinct ones per key, followed from then on, across reconnects and restarts).
//! - Idempotency: a NewOrder whose client order id the account already used in this trading
//!   session (through any session of the gateway) is rejected `DuplicateOrderId` by the gateway.
//!   An id is used by the first NewOrder that passes the gateway's checks, even if the engine then
//!   rejects it, so a client that resends after a disconnect never creates a second order: it
//!   learns the first one's fate from the replayed reports.
//! - Gateway rejects are ExecutionReports with flag `EXEC_GATEWAY`, sequenced like the engine's.
//! - Cancel-on-disconnect: a session logged on with the flag that ends any way but a client Logout
//!   emits one MassCancel command (reason `CancelOnDisconnect`, all instruments) per account it
//!   trades (`trade`: its accounts; `admin`: its accounts and those it acted for). A `read` key's
//!   flag is ignored: a drop copy may not cancel anything.
//! - Sequencing and replay: every ExecutionReport carries the key's session sequence (gapless from
//!   1, kept by the [`ReplayStore`]). Reports are stored whether or not the key is connected; a
//!   Logon with `last_seq_seen = n` is answered LogonAccepted, then every stored report after `n`.

mod config;
mod hub;
mod replay;

pub use config::{ApiKey, KeyId, SessionConfig, SessionConfigError};
pub use hub::Hub;
use hub::Token;
pub use replay::{MemoryReplayStore, ReplayStore};

use tickwire_core::command::CMD_HAS_PRICE;
use tickwire_core::{AccountId, CancelReason, Command, CommandKind, Event, RejectReason, Seq};
use tickwire_protocol::{
    ClientMsg, DecodeError, Decoded, DisconnectReason, ExecReport, ExecType, Heartbeat, Logon, LogonAccepted,
    LogonRejected, Logout, Message, Role, SessionReject, SessionRejectReason,
};

/// What a session asks its caller to do. Caller-owned and reused: the session only appends;
/// the caller acts on it, then calls [`Effects::clear`].
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// Bytes to send to the client, in order.
    pub out: Vec<u8>,
    /// Commands to submit to the engine, in order (`seq` 0: the sequencer assigns it; `ts_ns` is
    /// the gateway's `now_ns`).
    pub commands: Vec<Command>,
    /// Close the connection after sending `out`. Once set, the session is closed and ignores
    /// every later call.
    pub close: Option<DisconnectReason>,
}

impl Effects {
    /// Empty effects with room for a few frames.
    pub fn new() -> Effects {
        Effects { out: Vec::with_capacity(4096), commands: Vec::with_capacity(16), close: None }
    }

    /// Empties every buffer (keeping their capacity).
    pub fn clear(&mut self) {
        self.out.clear();
        self.commands.clear();
        self.close = None;
    }
}

/// A session's state, as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Connected, no Logon accepted yet.
    AwaitingLogon,
    /// Logged on with this key.
    Active(KeyId),
    /// Closed (for this reason); every later call does nothing.
    Closed(DisconnectReason),
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Distinct accounts one admin key may act for beyond its configured ones (each is followed and
/// cancelled on disconnect); beyond it, messages for a new account are rejected
/// `CapacityExhausted`.
pub const ADMIN_ACCOUNTS_MAX: usize = 4096;

/// Token bucket in nano-tokens: a message costs `NANOS_PER_SEC`; `rate` tokens per second accrue
/// as `rate` nano-tokens per nanosecond.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    level: u64,
    cap: u64,
    rate: u64,
    last_ns: u64,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_sec: u32, burst: u32, now_ns: u64) -> TokenBucket {
        let cap = (burst as u64).saturating_mul(NANOS_PER_SEC);
        TokenBucket { level: cap, cap, rate: rate_per_sec as u64, last_ns: now_ns }
    }

    /// Adds the tokens accrued since the last call; true if the bucket is full.
    pub(crate) fn refill(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.level = self.level.saturating_add(elapsed.saturating_mul(self.rate)).min(self.cap);
        self.level == self.cap
    }

    /// Takes one token if there is one (after [`TokenBucket::refill`]).
    pub(crate) fn try_take(&mut self, now_ns: u64) -> bool {
        self.refill(now_ns);
        if self.level >= NANOS_PER_SEC {
            self.level -= NANOS_PER_SEC;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Active {
    key: KeyId,
    role: Role,
    /// Accounts the key trades (`trade`) or follows; for `admin`, also those it acted for.
    accounts: Vec<AccountId>,
    heartbeat_ns: u64,
    cancel_on_disconnect: bool,
    /// Highest session sequence written to the client.
    sent_seq: Seq,
}

#[derive(Debug)]
enum State {
    AwaitingLogon { deadline_ns: u64 },
    Active(Box<Active>),
    Closed(DisconnectReason),
}

/// One client connection's session. See the module documentation.
pub struct Session {
    hub: Hub,
    state: State,
    /// The front of an incomplete frame (never more than `max_frame` bytes).
    rx: Vec<u8>,
    max_frame: usize,
    last_rx_ns: u64,
    last_tx_ns: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("state", &self.state()).field("buffered", &self.rx.len()).finish()
    }
}

impl Session {
    /// A session for a connection accepted at `now_ns`.
    pub fn new(hub: Hub, now_ns: u64) -> Session {
        let (max_frame, timeout) = {
            let h = hub.borrow();
            (h.cfg.max_frame, h.cfg.logon_timeout_ns)
        };
        Session {
            hub,
            state: State::AwaitingLogon { deadline_ns: now_ns.saturating_add(timeout) },
            rx: Vec::with_capacity(max_frame),
            max_frame,
            last_rx_ns: now_ns,
            last_tx_ns: now_ns,
        }
    }

    /// The session's state.
    pub fn state(&self) -> SessionState {
        match &self.state {
            State::AwaitingLogon { .. } => SessionState::AwaitingLogon,
            State::Active(a) => SessionState::Active(a.key),
            State::Closed(r) => SessionState::Closed(*r),
        }
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Bytes of an incomplete frame held between calls (at most the maximum frame size).
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }

    /// Bytes received from the client (any split: partial frames are kept until complete).
    pub fn handle_bytes(&mut self, bytes: &[u8], now_ns: u64, fx: &mut Effects) {
        if self.is_closed() {
            return;
        }
        let out_before = fx.out.len();
        self.last_rx_ns = self.last_rx_ns.max(now_ns);
        let mut input = bytes;
        // First complete the frame begun in an earlier call, taking only the bytes it needs.
        while !self.rx.is_empty() && !self.is_closed() {
            match ClientMsg::decode(&self.rx, self.max_frame) {
                Decoded::NeedMore(n) => {
                    if input.is_empty() {
                        break;
                    }
                    let take = n.saturating_sub(self.rx.len()).min(input.len());
                    self.rx.extend_from_slice(&input[..take]);
                    input = &input[take..];
                }
                Decoded::Frame(m, _) => {
                    self.rx.clear();
                    self.on_message(m, now_ns, fx);
                }
                Decoded::Error(e) => self.protocol_error(e, now_ns, fx),
            }
        }
        // Then decode in place.
        while self.rx.is_empty() && !self.is_closed() && !input.is_empty() {
            match ClientMsg::decode(input, self.max_frame) {
                Decoded::NeedMore(_) => {
                    self.rx.extend_from_slice(input);
                    input = &[];
                }
                Decoded::Frame(m, len) => {
                    input = &input[len..];
                    self.on_message(m, now_ns, fx);
                }
                Decoded::Error(e) => self.protocol_error(e, now_ns, fx),
            }
        }
        self.sent(out_before, now_ns, fx);
    }

    /// An engine event: recorded in the hub (if not yet) and, if it concerns this session's key,
    /// its execution reports are sent.
    pub fn handle_event(&mut self, ev: &Event, now_ns: u64, fx: &mut Effects) {
        self.hub.handle_event(ev);
        let out_before = fx.out.len();
        self.flush(fx);
        self.sent(out_before, now_ns, fx);
    }

    /// Sends any report stored for this session's key and not yet sent (the loop may call this
    /// after [`Hub::handle_event`] instead of [`Session::handle_event`]).
    pub fn flush_reports(&mut self, now_ns: u64, fx: &mut Effects) {
        let out_before = fx.out.len();
        self.flush(fx);
        self.sent(out_before, now_ns, fx);
    }

    /// Runs the timers due at `now_ns` (logon timeout, heartbeat send, heartbeat timeout), writes
    /// the next batch of a long replay, and returns the next deadline (`None` once closed; `now_ns`
    /// itself while reports are still pending, so the loop calls again once it has written `out`).
    /// Calling it before a deadline is harmless.
    pub fn poll_timeout(&mut self, now_ns: u64, fx: &mut Effects) -> Option<u64> {
        let out_before = fx.out.len();
        let next = match &self.state {
            State::Closed(_) => None,
            State::AwaitingLogon { deadline_ns } => {
                if now_ns >= *deadline_ns {
                    self.send(&Logout { reason: DisconnectReason::LogonTimeout as u8 }, fx);
                    self.close(DisconnectReason::LogonTimeout, fx);
                    None
                } else {
                    Some(*deadline_ns)
                }
            }
            State::Active(a) => {
                let hb = a.heartbeat_ns;
                let key = a.key;
                let rx_deadline = self.last_rx_ns.saturating_add(hb.saturating_mul(2));
                if now_ns >= rx_deadline {
                    self.send(&Logout { reason: DisconnectReason::HeartbeatTimeout as u8 }, fx);
                    self.close(DisconnectReason::HeartbeatTimeout, fx);
                    None
                } else {
                    self.flush(fx);
                    if fx.out.len() > out_before {
                        self.last_tx_ns = self.last_tx_ns.max(now_ns);
                    }
                    if now_ns >= self.last_tx_ns.saturating_add(hb) {
                        let seq = self.hub.last_seq(key);
                        self.send(&Heartbeat { seq }, fx);
                        self.last_tx_ns = now_ns;
                    }
                    if self.reports_pending() {
                        Some(now_ns)
                    } else {
                        Some(rx_deadline.min(self.last_tx_ns.saturating_add(hb)))
                    }
                }
            }
        };
        self.sent(out_before, now_ns, fx);
        next
    }

    /// The transport closed (EOF, error) without a close asked by the session.
    pub fn handle_disconnect(&mut self, _now_ns: u64, fx: &mut Effects) {
        if !self.is_closed() {
            self.close(DisconnectReason::TransportClosed, fx);
        }
    }

    /// Ends the session from the server side (e.g. shutdown): Logout with `reason`, then close
    /// (cancel-on-disconnect applies).
    pub fn disconnect(&mut self, reason: DisconnectReason, now_ns: u64, fx: &mut Effects) {
        if self.is_closed() {
            return;
        }
        let out_before = fx.out.len();
        self.send(&Logout { reason: reason as u8 }, fx);
        self.close(reason, fx);
        self.sent(out_before, now_ns, fx);
    }

    // ---- internals --------------------------------------------------------------------------

    fn sent(&mut self, out_before: usize, now_ns: u64, fx: &Effects) {
        if fx.out.len() > out_before {
            self.last_tx_ns = self.last_tx_ns.max(now_ns);
        }
    }

    fn send<M: Message>(&self, m: &M, fx: &mut Effects) {
        m.encode_to_vec(&mut fx.out);
    }

    fn close(&mut self, reason: DisconnectReason, fx: &mut Effects) {
        if let State::Active(a) = &self.state {
            if a.cancel_on_disconnect && reason != DisconnectReason::ClientLogout {
                for &account in &a.accounts {
                    fx.commands.push(Command::mass_cancel(account, None, CancelReason::CancelOnDisconnect));
                }
            }
            self.hub.borrow_mut().release(a.key);
        }
        self.state = State::Closed(reason);
        self.rx.clear();
        fx.close = Some(reason);
    }

    fn protocol_error(&mut self, e: DecodeError, _now_ns: u64, fx: &mut Effects) {
        self.reject_and_close(e.reason, e.msg_type, fx);
    }

    fn reject_and_close(&mut self, reason: SessionRejectReason, msg_type: u8, fx: &mut Effects) {
        self.send(&SessionReject { reason, ref_msg_type: msg_type }, fx);
        self.close(DisconnectReason::ProtocolError, fx);
    }

    fn on_message(&mut self, m: ClientMsg, now_ns: u64, fx: &mut Effects) {
        match &self.state {
            State::Closed(_) => {}
            State::AwaitingLogon { .. } => match m {
                ClientMsg::Logon(l) => self.on_logon(&l, now_ns, fx),
                other => self.reject_and_close(SessionRejectReason::NotLoggedOn, other.msg_type() as u8, fx),
            },
            State::Active(_) => match m {
                ClientMsg::Logon(_) => {
                    self.reject_and_close(SessionRejectReason::AlreadyLoggedOn, m.msg_type() as u8, fx)
                }
                ClientMsg::Logout(_) => {
                    self.send(&Logout { reason: DisconnectReason::ClientLogout as u8 }, fx);
                    self.close(DisconnectReason::ClientLogout, fx);
                }
                ClientMsg::Heartbeat(_) => {
                    // Heartbeats cost a token too, but a throttled one is just dropped.
                    self.take_token(now_ns, fx);
                }
                order => self.on_order_message(order, now_ns, fx),
            },
        }
    }

    fn on_logon(&mut self, l: &Logon, now_ns: u64, fx: &mut Effects) {
        let grant = self.hub.borrow_mut().logon(l, now_ns);
        let grant = match grant {
            Ok(g) => g,
            Err(reason) => {
                self.send(&LogonRejected { reason }, fx);
                self.close(DisconnectReason::LogonRejected, fx);
                return;
            }
        };
        let (hb_ms, last, first) = {
            let h = self.hub.borrow();
            let hb = l.heartbeat_ms.clamp(h.cfg.heartbeat_min_ms, h.cfg.heartbeat_max_ms);
            (hb, h.last_seq(l.key_id), h.first_seq(l.key_id))
        };
        // Resend from the first report after the client's last seen, or from the oldest retained.
        let (sent_seq, replay_from) = if l.last_seq_seen >= last || first == 0 {
            (last, 0)
        } else {
            let from = (l.last_seq_seen + 1).max(first);
            (from - 1, from)
        };
        self.send(&LogonAccepted { heartbeat_ms: hb_ms, last_seq: last, replay_from, role: grant.role }, fx);
        self.state = State::Active(Box::new(Active {
            key: l.key_id,
            role: grant.role,
            accounts: grant.accounts,
            heartbeat_ns: hb_ms as u64 * 1_000_000,
            // A drop copy may not cancel: its flag is ignored (docs/protocol.md).
            cancel_on_disconnect: l.cancel_on_disconnect && grant.role != Role::Read,
            sent_seq,
        }));
        self.flush(fx);
    }

    /// Charges one message to the key's bucket; false if throttled (and closes on persistent
    /// abuse).
    fn take_token(&mut self, now_ns: u64, fx: &mut Effects) -> bool {
        let State::Active(a) = &self.state else { return false };
        match self.hub.borrow_mut().take_token(a.key, now_ns) {
            Token::Taken => return true,
            Token::Throttled => return false,
            Token::Disconnect => {}
        }
        self.send(&Logout { reason: DisconnectReason::Throttled as u8 }, fx);
        self.close(DisconnectReason::Throttled, fx);
        false
    }

    fn on_order_message(&mut self, m: ClientMsg, now_ns: u64, fx: &mut Effects) {
        // The reject a gateway check would send, built from the message.
        let (kind, account, instrument, order_id, side) = match &m {
            ClientMsg::NewOrder(o) => (CommandKind::New, o.account, o.instrument, o.client_order_id, o.side),
            ClientMsg::Cancel(o) => (CommandKind::Cancel, o.account, o.instrument, o.client_order_id, 0),
            ClientMsg::Replace(o) => (CommandKind::Replace, o.account, o.instrument, o.client_order_id, 0),
            ClientMsg::MassCancel(o) => (CommandKind::MassCancel, o.account, o.instrument, 0, 0),
            _ => return,
        };
        let reject = |reason: RejectReason| ExecReport {
            side,
            reason: reason as u8,
            client_order_id: order_id,
            account,
            instrument,
            cmd_kind: kind as u8,
            ..ExecReport::empty(ExecType::Rejected)
        };
        let throttled = !self.take_token(now_ns, fx);
        let State::Active(a) = &mut self.state else { return };
        let key = a.key;
        let verdict = if throttled {
            Err(RejectReason::Throttled)
        } else {
            match a.role {
                Role::Read => Err(RejectReason::NotAuthorised),
                Role::Trade if !a.accounts.contains(&account) => Err(RejectReason::NotAuthorised),
                Role::Trade => Ok(()),
                Role::Admin => {
                    if a.accounts.contains(&account) {
                        Ok(())
                    } else {
                        let followed = self.hub.borrow_mut().follow(key, account);
                        if followed.is_ok() {
                            a.accounts.push(account);
                        }
                        followed
                    }
                }
            }
        };
        let verdict = verdict.and_then(|()| match &m {
            ClientMsg::NewOrder(o) => self.hub.borrow_mut().use_order_id(o.account, o.client_order_id),
            _ => Ok(()),
        });
        match verdict {
            Err(reason) => self.hub.borrow_mut().gateway_reject(key, reject(reason)),
            Ok(()) => {
                let cmd = match m {
                    // Side, type and stp pass as sent: the engine validates them.
                    ClientMsg::NewOrder(o) => Command {
                        kind: CommandKind::New as u8,
                        side: o.side,
                        order_type: o.order_type,
                        stp: o.stp,
                        instrument: o.instrument,
                        account: o.account,
                        flags: if o.price.is_some() { CMD_HAS_PRICE } else { 0 },
                        order_id: o.client_order_id,
                        price: o.price.unwrap_or(0),
                        qty: o.qty,
                        ..Command::default()
                    },
                    ClientMsg::Cancel(o) => Command::cancel(o.account, o.instrument, o.client_order_id),
                    ClientMsg::Replace(o) => Command::replace(o.account, o.instrument, o.client_order_id, o.price, o.qty),
                    ClientMsg::MassCancel(o) => Command::mass_cancel(
                        o.account,
                        (o.instrument != 0).then_some(o.instrument),
                        CancelReason::MassCancel,
                    ),
                    _ => return,
                };
                fx.commands.push(cmd.with_seq(0, now_ns));
            }
        }
        self.flush(fx);
    }

    /// Writes the stored reports of this key not yet sent, in sequence order, at most
    /// `max_reports_per_flush` of them.
    fn flush(&mut self, fx: &mut Effects) {
        let State::Active(a) = &mut self.state else { return };
        let h = self.hub.borrow();
        let last = h.last_seq(a.key);
        let mut budget = h.cfg.max_reports_per_flush;
        while a.sent_seq < last && budget > 0 {
            let seq = a.sent_seq + 1;
            match h.get(a.key, seq) {
                Some(r) => {
                    r.encode_to_vec(&mut fx.out);
                    budget -= 1;
                }
                None => {
                    // No longer retained: go on from the oldest retained one.
                    let first = h.first_seq(a.key);
                    if first > seq {
                        a.sent_seq = first - 1;
                        continue;
                    }
                }
            }
            a.sent_seq = seq;
        }
    }

    /// Whether stored reports wait to be written (a replay longer than one flush).
    pub fn reports_pending(&self) -> bool {
        match &self.state {
            State::Active(a) => a.sent_seq < self.hub.last_seq(a.key),
            _ => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session dropped without a close still frees its key (no cancel-on-disconnect: that
        // needs `handle_disconnect`, whose commands the loop submits).
        if let State::Active(a) = &self.state {
            if let Ok(mut h) = self.hub.0.try_borrow_mut() {
                h.release(a.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_at_its_rate_and_survives_clock_jumps() {
        let mut b = TokenBucket::new(2, 3, 1000);
        assert!((0..3).all(|_| b.try_take(1000)));
        assert!(!b.try_take(1000));
        assert!(!b.try_take(1000 + NANOS_PER_SEC / 2 - 1));
        assert!(b.try_take(1000 + NANOS_PER_SEC / 2));
        // Backwards: no refill, no panic. Huge jump: capped at the burst.
        assert!(!b.try_take(0));
        assert!((0..3).all(|_| b.try_take(u64::MAX)));
        assert!(!b.try_take(u64::MAX));
        let mut big = TokenBucket::new(u32::MAX, u32::MAX, 0);
        assert!(big.try_take(u64::MAX));
    }
}
