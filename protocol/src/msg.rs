//! Message types, their fixed layouts, and the frame codec. The layouts are documented byte by
//! byte in docs/protocol.md; `protocol/tests/doc_examples.rs` checks that document against this
//! encoder.

use crate::wire::{Reader, Writer};
use tickwire_core::{ClientOrderId, InstrumentId, Price, Qty, Seq};

/// Bytes of the frame header: `length u16, msg_type u8, version u8`.
pub const HEADER_LEN: usize = 4;
/// The protocol version this crate speaks (the header's `version` byte).
pub const PROTOCOL_VERSION: u8 = 1;
/// Default maximum frame length accepted by a decoder (every message of version 1 is smaller).
pub const MAX_FRAME: usize = 256;

macro_rules! proto_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v = $n),+ }
        impl $name {
            /// Every variant, in wire-value order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// Decodes a wire value; `None` for a value no variant has.
            #[inline]
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v { $($n => Some($name::$v),)+ _ => None }
            }
            /// The variant's snake_case name (docs, logs).
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
        }
    };
}

proto_enum! {
    /// The header's `msg_type` byte. Client → server types are below 0x40, server → client types
    /// from 0x40; Heartbeat and Logout go both ways.
    MsgType {
        /// C→S: authenticate and open the session.
        Logon = 0x01 => "logon",
        /// Both ways: keep-alive carrying a session sequence.
        Heartbeat = 0x02 => "heartbeat",
        /// C→S: enter an order.
        NewOrder = 0x03 => "new_order",
        /// C→S: cancel an order.
        Cancel = 0x04 => "cancel",
        /// C→S: change an order's price and/or open quantity.
        Replace = 0x05 => "replace",
        /// C→S: cancel every resting order of an account.
        MassCancel = 0x06 => "mass_cancel",
        /// Both ways: orderly end of the session.
        Logout = 0x07 => "logout",
        /// S→C: logon accepted.
        LogonAccepted = 0x41 => "logon_accepted",
        /// S→C: logon refused; the server closes the connection.
        LogonRejected = 0x42 => "logon_rejected",
        /// S→C: an order's state changed (sequenced).
        ExecutionReport = 0x43 => "execution_report",
        /// S→C: a frame could not be accepted; the server closes the connection.
        SessionReject = 0x44 => "session_reject",
    }
}

proto_enum! {
    /// Why a frame was refused (SessionReject `reason`). Decoding errors use 1..=5.
    SessionRejectReason {
        /// The header's length is below the header size or is not the message type's size.
        BadLength = 1 => "bad_length",
        /// The header's length is above the maximum frame size.
        Oversize = 2 => "oversize",
        /// No message has this type (in this direction).
        UnknownType = 3 => "unknown_type",
        /// Unsupported protocol version.
        BadVersion = 4 => "bad_version",
        /// A field's value is not allowed (reserved bits or bytes not zero, unknown enum value).
        InvalidField = 5 => "invalid_field",
        /// A message other than Logon before the logon was accepted.
        NotLoggedOn = 6 => "not_logged_on",
        /// A second Logon on a logged-on session.
        AlreadyLoggedOn = 7 => "already_logged_on",
        /// Reserved; this server never sends it (a server-only message type from a client gets
        /// `unknown_type`, a second Logon `already_logged_on`).
        UnexpectedMessage = 8 => "unexpected_message",
    }
}

proto_enum! {
    /// Why a logon was refused (LogonRejected `reason`).
    LogonRejectReason {
        /// No key has this id.
        UnknownKey = 1 => "unknown_key",
        /// The HMAC signature does not verify.
        BadSignature = 2 => "bad_signature",
        /// The timestamp is outside the server's freshness window.
        StaleTimestamp = 3 => "stale_timestamp",
        /// This nonce was already used by this key within the freshness window.
        NonceReused = 4 => "nonce_reused",
        /// Another connection is logged on with this key.
        AlreadyLoggedOn = 5 => "already_logged_on",
    }
}

proto_enum! {
    /// Why a session ended (Logout `reason`, and the gateway's close reason).
    DisconnectReason {
        /// The client sent Logout (in a client's Logout: its normal value).
        ClientLogout = 1 => "client_logout",
        /// Nothing was received for two heartbeat intervals.
        HeartbeatTimeout = 2 => "heartbeat_timeout",
        /// The client kept exceeding its message rate.
        Throttled = 3 => "throttled",
        /// A malformed or unexpected frame (a SessionReject precedes it).
        ProtocolError = 4 => "protocol_error",
        /// No Logon arrived in time after connecting.
        LogonTimeout = 5 => "logon_timeout",
        /// The Logon was refused (a LogonRejected precedes it).
        LogonRejected = 6 => "logon_rejected",
        /// The transport closed without a Logout.
        TransportClosed = 7 => "transport_closed",
        /// The server is shutting down.
        ServerShutdown = 8 => "server_shutdown",
    }
}

proto_enum! {
    /// What an ExecutionReport reports (`exec_type`).
    ExecType {
        /// The order is live (passed validation).
        Accepted = 1 => "accepted",
        /// A command was rejected (`reason` is a RejectReason); nothing changed.
        Rejected = 2 => "rejected",
        /// The order traded part of its quantity and is still open.
        PartialFill = 3 => "partial_fill",
        /// The order traded its last open quantity.
        Fill = 4 => "fill",
        /// The order (or its remainder) was cancelled (`reason` is a CancelReason).
        Cancelled = 5 => "cancelled",
        /// A Replace took effect.
        Replaced = 6 => "replaced",
        /// Self-trade prevention reduced the order, which stays open.
        Decremented = 7 => "decremented",
        /// A mass cancel finished; `qty` is the number of orders it cancelled.
        MassCancelled = 8 => "mass_cancelled",
    }
}

proto_enum! {
    /// An API key's role (LogonAccepted `role`).
    Role {
        /// May trade its own accounts.
        Trade = 1 => "trade",
        /// May only read the execution reports of its accounts.
        Read = 2 => "read",
        /// May act for any account.
        Admin = 3 => "admin",
    }
}

/// ExecutionReport flag: a Replace kept the order's time priority.
pub const EXEC_PRIORITY_KEPT: u8 = 1;
/// ExecutionReport flag: on a (partial) fill, this order was the resting (maker) side.
pub const EXEC_MAKER: u8 = 2;
/// ExecutionReport flag: `leaves_qty` and `cum_qty` hold values (otherwise both are 0, unknown).
pub const EXEC_QTYS_KNOWN: u8 = 4;
/// ExecutionReport flag: the gateway rejected the command itself (it never reached the engine;
/// `engine_seq` is 0).
pub const EXEC_GATEWAY: u8 = 8;
/// ExecutionReport flag: the last report caused by its command (copied from the engine).
pub const EXEC_LAST_IN_COMMAND: u8 = 16;
const EXEC_FLAGS_ALL: u8 = 31;

/// NewOrder/Replace flag: `price` carries a value.
pub const ORDER_HAS_PRICE: u8 = 1;
/// Logon flag: cancel the key's accounts' resting orders if the connection drops without Logout.
pub const LOGON_CANCEL_ON_DISCONNECT: u8 = 1;

/// A decoding error: the SessionReject reason and the offending frame's type byte (0 if unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Why.
    pub reason: SessionRejectReason,
    /// The header's type byte, when the header was read (else 0).
    pub msg_type: u8,
}

/// Result of decoding the front of a byte slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<M> {
    /// The slice holds no complete frame yet; the frame needs at least this many bytes in all.
    NeedMore(usize),
    /// One message, and the number of bytes (the frame length) it took from the slice front.
    Frame(M, usize),
    /// The front of the slice is not an acceptable frame; the stream cannot be resynchronised.
    Error(DecodeError),
}

/// The destination buffer is too small for the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the frame needs.
    pub needed: usize,
}

/// A message with a fixed layout.
pub trait Message: Copy + Sized {
    /// Its header type.
    const TYPE: MsgType;
    /// Its frame length in bytes, header included.
    const SIZE: usize;

    /// Writes the whole frame (header included) at the front of `buf`; returns its length.
    fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall>;

    /// Appends the whole frame to `out` (no allocation when `out` has the capacity).
    fn encode_to_vec(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + Self::SIZE, 0);
        let _ = self.encode(&mut out[start..]);
    }

    /// Reads the message from one whole frame of `SIZE` bytes whose header was already checked.
    fn decode_frame(frame: &[u8]) -> Result<Self, SessionRejectReason>;
}

macro_rules! message {
    ($t:ident, $ty:expr, $size:expr, |$s:ident, $w:ident| $put:block, |$r:ident| $get:block) => {
        impl $t {
            fn put(&self, $w: &mut Writer) {
                let $s = self;
                $put
            }
            fn get($r: &mut Reader) -> Result<$t, SessionRejectReason> {
                $get
            }
        }
        impl Message for $t {
            const TYPE: MsgType = $ty;
            const SIZE: usize = $size;
            fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
                let frame = buf.get_mut(..$size).ok_or(BufferTooSmall { needed: $size })?;
                let mut w = Writer::new(frame);
                w.u16($size as u16);
                w.u8($ty as u8);
                w.u8(PROTOCOL_VERSION);
                self.put(&mut w);
                Ok($size)
            }
            fn decode_frame(frame: &[u8]) -> Result<Self, SessionRejectReason> {
                let mut r = Reader::new(frame);
                r.u32(); // header, checked by the caller
                let m = $t::get(&mut r)?;
                if r.reserved_dirty {
                    return Err(SessionRejectReason::InvalidField);
                }
                Ok(m)
            }
        }
    };
}

fn invalid<T>() -> Result<T, SessionRejectReason> {
    Err(SessionRejectReason::InvalidField)
}

fn price_field(flags: u8, price: i64) -> Result<Option<Price>, SessionRejectReason> {
    match (flags & ORDER_HAS_PRICE != 0, price) {
        (true, p) => Ok(Some(p)),
        (false, 0) => Ok(None),
        (false, _) => invalid(),
    }
}

// ---------------------------------------------------------------------------------------------
// Client → server

/// C→S Logon (80 bytes). `signature` = HMAC-SHA256(secret, key_id ‖ timestamp_ns ‖ nonce), each
/// as 8 little-endian bytes (see [`crate::auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logon {
    /// Heartbeat interval the client asks for, in milliseconds (the server may clamp it).
    pub heartbeat_ms: u32,
    /// API key id.
    pub key_id: u64,
    /// Client's clock, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Single-use number (per key, within the server's freshness window).
    pub nonce: u64,
    /// Highest ExecutionReport `session_seq` the client has processed (0 = none).
    pub last_seq_seen: Seq,
    /// Cancel the key's accounts' resting orders if the connection drops without Logout.
    pub cancel_on_disconnect: bool,
    /// HMAC-SHA256 signature.
    pub signature: [u8; 32],
}

impl Logon {
    /// A Logon signed with `secret` (see [`crate::auth::sign`]).
    pub fn signed(
        secret: &[u8],
        key_id: u64,
        timestamp_ns: u64,
        nonce: u64,
        last_seq_seen: Seq,
        heartbeat_ms: u32,
        cancel_on_disconnect: bool,
    ) -> Logon {
        Logon {
            heartbeat_ms,
            key_id,
            timestamp_ns,
            nonce,
            last_seq_seen,
            cancel_on_disconnect,
            signature: crate::auth::sign(secret, key_id, timestamp_ns, nonce),
        }
    }
}

message!(Logon, MsgType::Logon, 80, |s, w| {
    w.u32(s.heartbeat_ms);
    w.u64(s.key_id);
    w.u64(s.timestamp_ns);
    w.u64(s.nonce);
    w.u64(s.last_seq_seen);
    w.u8(if s.cancel_on_disconnect { LOGON_CANCEL_ON_DISCONNECT } else { 0 });
    w.zero(7);
    w.bytes(&s.signature);
}, |r| {
    let heartbeat_ms = r.u32();
    let key_id = r.u64();
    let timestamp_ns = r.u64();
    let nonce = r.u64();
    let last_seq_seen = r.u64();
    let flags = r.u8();
    r.zero(7);
    let signature = r.bytes32();
    if flags & !LOGON_CANCEL_ON_DISCONNECT != 0 {
        return invalid();
    }
    Ok(Logon {
        heartbeat_ms,
        key_id,
        timestamp_ns,
        nonce,
        last_seq_seen,
        cancel_on_disconnect: flags & LOGON_CANCEL_ON_DISCONNECT != 0,
        signature,
    })
});

/// Heartbeat, both ways (16 bytes). From the server: the highest session sequence assigned to
/// the key so far; from the client: the highest it has processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Session sequence (see above).
    pub seq: Seq,
}

message!(Heartbeat, MsgType::Heartbeat, 16, |s, w| {
    w.zero(4);
    w.u64(s.seq);
}, |r| {
    r.zero(4);
    Ok(Heartbeat { seq: r.u64() })
});

/// C→S NewOrder (40 bytes). `side`, `order_type` and `stp` are the core's wire values (stp 0 =
/// the account's default); the engine validates them and rejects bad values with an
/// ExecutionReport, not a SessionReject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// `Side` wire value.
    pub side: u8,
    /// `OrderType` wire value.
    pub order_type: u8,
    /// `StpMode` wire value, 0 = default.
    pub stp: u8,
    /// Client order id, unique per account for the trading session.
    pub client_order_id: ClientOrderId,
    /// Account.
    pub account: u32,
    /// Instrument.
    pub instrument: InstrumentId,
    /// Limit price, or a market order's protection price; `None` = absent.
    pub price: Option<Price>,
    /// Quantity.
    pub qty: Qty,
}

message!(NewOrder, MsgType::NewOrder, 40, |s, w| {
    w.u8(s.side);
    w.u8(s.order_type);
    w.u8(s.stp);
    w.u8(if s.price.is_some() { ORDER_HAS_PRICE } else { 0 });
    w.u64(s.client_order_id);
    w.u32(s.account);
    w.u32(s.instrument);
    w.i64(s.price.unwrap_or(0));
    w.u64(s.qty);
}, |r| {
    let side = r.u8();
    let order_type = r.u8();
    let stp = r.u8();
    let flags = r.u8();
    let client_order_id = r.u64();
    let account = r.u32();
    let instrument = r.u32();
    let price = r.i64();
    let qty = r.u64();
    if flags & !ORDER_HAS_PRICE != 0 {
        return invalid();
    }
    Ok(NewOrder { side, order_type, stp, client_order_id, account, instrument, price: price_field(flags, price)?, qty })
});

/// C→S Cancel (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// Account.
    pub account: u32,
    /// The order's client order id.
    pub client_order_id: ClientOrderId,
    /// The order's instrument.
    pub instrument: InstrumentId,
}

message!(Cancel, MsgType::Cancel, 24, |s, w| {
    w.u32(s.account);
    w.u64(s.client_order_id);
    w.u32(s.instrument);
    w.zero(4);
}, |r| {
    let account = r.u32();
    let client_order_id = r.u64();
    let instrument = r.u32();
    r.zero(4);
    Ok(Cancel { account, client_order_id, instrument })
});

/// C→S Replace (40 bytes): new open quantity, and a new price if present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replace {
    /// The order's client order id (kept by the replace).
    pub client_order_id: ClientOrderId,
    /// Account.
    pub account: u32,
    /// The order's instrument.
    pub instrument: InstrumentId,
    /// New price; `None` keeps the price.
    pub price: Option<Price>,
    /// New open quantity.
    pub qty: Qty,
}

message!(Replace, MsgType::Replace, 40, |s, w| {
    w.u8(if s.price.is_some() { ORDER_HAS_PRICE } else { 0 });
    w.zero(3);
    w.u64(s.client_order_id);
    w.u32(s.account);
    w.u32(s.instrument);
    w.i64(s.price.unwrap_or(0));
    w.u64(s.qty);
}, |r| {
    let flags = r.u8();
    r.zero(3);
    let client_order_id = r.u64();
    let account = r.u32();
    let instrument = r.u32();
    let price = r.i64();
    let qty = r.u64();
    if flags & !ORDER_HAS_PRICE != 0 {
        return invalid();
    }
    Ok(Replace { client_order_id, account, instrument, price: price_field(flags, price)?, qty })
});

/// C→S MassCancel (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MassCancel {
    /// Account whose resting orders are cancelled.
    pub account: u32,
    /// Instrument, 0 = all instruments.
    pub instrument: InstrumentId,
}

message!(MassCancel, MsgType::MassCancel, 16, |s, w| {
    w.u32(s.account);
    w.u32(s.instrument);
    w.zero(4);
}, |r| {
    let account = r.u32();
    let instrument = r.u32();
    r.zero(4);
    Ok(MassCancel { account, instrument })
});

/// Logout, both ways (8 bytes). `reason` is a [`DisconnectReason`] value (a client sends
/// `ClientLogout`); any value is accepted from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logout {
    /// [`DisconnectReason`] wire value.
    pub reason: u8,
}

message!(Logout, MsgType::Logout, 8, |s, w| {
    w.u8(s.reason);
    w.zero(3);
}, |r| {
    let reason = r.u8();
    r.zero(3);
    Ok(Logout { reason })
});

// ---------------------------------------------------------------------------------------------
// Server → client

/// S→C LogonAccepted (32 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogonAccepted {
    /// Heartbeat interval in force, milliseconds.
    pub heartbeat_ms: u32,
    /// Highest session sequence assigned to this key so far (0 = none).
    pub last_seq: Seq,
    /// First sequence the server is about to resend (0 = nothing to resend). Larger than the
    /// client's `last_seq_seen + 1` when older reports are no longer retained.
    pub replay_from: Seq,
    /// The key's role.
    pub role: Role,
}

message!(LogonAccepted, MsgType::LogonAccepted, 32, |s, w| {
    w.u32(s.heartbeat_ms);
    w.u64(s.last_seq);
    w.u64(s.replay_from);
    w.u8(s.role as u8);
    w.zero(7);
}, |r| {
    let heartbeat_ms = r.u32();
    let last_seq = r.u64();
    let replay_from = r.u64();
    let role = r.u8();
    r.zero(7);
    let Some(role) = Role::from_u8(role) else { return invalid() };
    Ok(LogonAccepted { heartbeat_ms, last_seq, replay_from, role })
});

/// S→C LogonRejected (8 bytes); the server closes the connection after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogonRejected {
    /// Why.
    pub reason: LogonRejectReason,
}

message!(LogonRejected, MsgType::LogonRejected, 8, |s, w| {
    w.u8(s.reason as u8);
    w.zero(3);
}, |r| {
    let reason = r.u8();
    r.zero(3);
    let Some(reason) = LogonRejectReason::from_u8(reason) else { return invalid() };
    Ok(LogonRejected { reason })
});

/// S→C ExecutionReport (88 bytes), sequenced by `session_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecReport {
    /// What happened.
    pub exec_type: ExecType,
    /// The order's side (`Side` value; Rejected: the command's, may be 0; MassCancelled: 0).
    pub side: u8,
    /// Rejected: `RejectReason` value. Cancelled, Decremented, MassCancelled: `CancelReason`
    /// value. Otherwise 0.
    pub reason: u8,
    /// `EXEC_*` bits.
    pub flags: u8,
    /// Session sequence: per API key, gapless from 1.
    pub session_seq: Seq,
    /// The engine event's sequence (0 for a gateway reject).
    pub engine_seq: Seq,
    /// The order's client order id (MassCancelled: 0).
    pub client_order_id: ClientOrderId,
    /// Account.
    pub account: u32,
    /// Instrument (MassCancelled: 0 = all).
    pub instrument: InstrumentId,
    /// Accepted: limit/protection price or 0. Fills: execution price. Cancelled, Replaced,
    /// Decremented: the order's price. Otherwise 0.
    pub price: Price,
    /// Accepted: order quantity. Fills: executed quantity. Cancelled: quantity removed.
    /// Replaced, Decremented: new open quantity. MassCancelled: orders cancelled. Rejected: 0.
    pub qty: Qty,
    /// Open quantity after this report (valid with `EXEC_QTYS_KNOWN`).
    pub leaves_qty: Qty,
    /// Quantity executed so far (valid with `EXEC_QTYS_KNOWN`).
    pub cum_qty: Qty,
    /// Fills: the trade id (the engine's fill event sequence). Otherwise 0.
    pub trade_id: u64,
    /// Rejected: the rejected command's kind (`CommandKind` value). Otherwise 0.
    pub cmd_kind: u8,
    /// Accepted: the order type (`OrderType` value). Otherwise 0.
    pub order_type: u8,
}

impl ExecReport {
    /// A report of the given type with every other field zero.
    pub const fn empty(exec_type: ExecType) -> ExecReport {
        ExecReport {
            exec_type,
            side: 0,
            reason: 0,
            flags: 0,
            session_seq: 0,
            engine_seq: 0,
            client_order_id: 0,
            account: 0,
            instrument: 0,
            price: 0,
            qty: 0,
            leaves_qty: 0,
            cum_qty: 0,
            trade_id: 0,
            cmd_kind: 0,
            order_type: 0,
        }
    }
}

message!(ExecReport, MsgType::ExecutionReport, 88, |s, w| {
    w.u8(s.exec_type as u8);
    w.u8(s.side);
    w.u8(s.reason);
    w.u8(s.flags);
    w.u64(s.session_seq);
    w.u64(s.engine_seq);
    w.u64(s.client_order_id);
    w.u32(s.account);
    w.u32(s.instrument);
    w.i64(s.price);
    w.u64(s.qty);
    w.u64(s.leaves_qty);
    w.u64(s.cum_qty);
    w.u64(s.trade_id);
    w.u8(s.cmd_kind);
    w.u8(s.order_type);
    w.zero(6);
}, |r| {
    let exec_type = r.u8();
    let side = r.u8();
    let reason = r.u8();
    let flags = r.u8();
    let Some(exec_type) = ExecType::from_u8(exec_type) else { return invalid() };
    if flags & !EXEC_FLAGS_ALL != 0 {
        return invalid();
    }
    let m = ExecReport {
        exec_type,
        side,
        reason,
        flags,
        session_seq: r.u64(),
        engine_seq: r.u64(),
        client_order_id: r.u64(),
        account: r.u32(),
        instrument: r.u32(),
        price: r.i64(),
        qty: r.u64(),
        leaves_qty: r.u64(),
        cum_qty: r.u64(),
        trade_id: r.u64(),
        cmd_kind: r.u8(),
        order_type: r.u8(),
    };
    r.zero(6);
    Ok(m)
});

/// S→C SessionReject (8 bytes); the server closes the connection after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionReject {
    /// Why.
    pub reason: SessionRejectReason,
    /// The offending frame's type byte (0 if it could not be read).
    pub ref_msg_type: u8,
}

message!(SessionReject, MsgType::SessionReject, 8, |s, w| {
    w.u8(s.reason as u8);
    w.u8(s.ref_msg_type);
    w.zero(2);
}, |r| {
    let reason = r.u8();
    let ref_msg_type = r.u8();
    r.zero(2);
    let Some(reason) = SessionRejectReason::from_u8(reason) else { return invalid() };
    Ok(SessionReject { reason, ref_msg_type })
});

// ---------------------------------------------------------------------------------------------
// Frame decoding

/// Checks the header at the front of `buf`: `Ok(Some((type, len)))` when a whole frame of a type
/// allowed by `size_of` is present, `Ok(None)` with the bytes still needed otherwise.
fn check_header(
    buf: &[u8],
    max_frame: usize,
    size_of: fn(MsgType) -> Option<usize>,
) -> Result<Result<(MsgType, usize), usize>, DecodeError> {
    let Some(h) = buf.get(..HEADER_LEN) else { return Ok(Err(HEADER_LEN)) };
    let len = u16::from_le_bytes([h[0], h[1]]) as usize;
    let ty = h[2];
    let err = |reason| Err(DecodeError { reason, msg_type: ty });
    if len < HEADER_LEN {
        return err(SessionRejectReason::BadLength);
    }
    if len > max_frame {
        return err(SessionRejectReason::Oversize);
    }
    if h[3] != PROTOCOL_VERSION {
        return err(SessionRejectReason::BadVersion);
    }
    let Some(mt) = MsgType::from_u8(ty) else { return err(SessionRejectReason::UnknownType) };
    let Some(size) = size_of(mt) else { return err(SessionRejectReason::UnknownType) };
    if len != size {
        return err(SessionRejectReason::BadLength);
    }
    if buf.len() < len {
        return Ok(Err(len));
    }
    Ok(Ok((mt, len)))
}

fn decode_with<M>(
    buf: &[u8],
    max_frame: usize,
    size_of: fn(MsgType) -> Option<usize>,
    body: fn(MsgType, &[u8]) -> Result<M, SessionRejectReason>,
) -> Decoded<M> {
    match check_header(buf, max_frame, size_of) {
        Err(e) => Decoded::Error(e),
        Ok(Err(need)) => Decoded::NeedMore(need),
        Ok(Ok((mt, len))) => match body(mt, &buf[..len]) {
            Ok(m) => Decoded::Frame(m, len),
            Err(reason) => Decoded::Error(DecodeError { reason, msg_type: mt as u8 }),
        },
    }
}

/// A message a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// See [`Logon`].
    Logon(Logon),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`NewOrder`].
    NewOrder(NewOrder),
    /// See [`Cancel`].
    Cancel(Cancel),
    /// See [`Replace`].
    Replace(Replace),
    /// See [`MassCancel`].
    MassCancel(MassCancel),
    /// See [`Logout`].
    Logout(Logout),
}

impl ClientMsg {
    fn size_of(t: MsgType) -> Option<usize> {
        Some(match t {
            MsgType::Logon => Logon::SIZE,
            MsgType::Heartbeat => Heartbeat::SIZE,
            MsgType::NewOrder => NewOrder::SIZE,
            MsgType::Cancel => Cancel::SIZE,
            MsgType::Replace => Replace::SIZE,
            MsgType::MassCancel => MassCancel::SIZE,
            MsgType::Logout => Logout::SIZE,
            _ => return None,
        })
    }

    fn body(t: MsgType, f: &[u8]) -> Result<ClientMsg, SessionRejectReason> {
        Ok(match t {
            MsgType::Logon => ClientMsg::Logon(Logon::decode_frame(f)?),
            MsgType::Heartbeat => ClientMsg::Heartbeat(Heartbeat::decode_frame(f)?),
            MsgType::NewOrder => ClientMsg::NewOrder(NewOrder::decode_frame(f)?),
            MsgType::Cancel => ClientMsg::Cancel(Cancel::decode_frame(f)?),
            MsgType::Replace => ClientMsg::Replace(Replace::decode_frame(f)?),
            MsgType::MassCancel => ClientMsg::MassCancel(MassCancel::decode_frame(f)?),
            MsgType::Logout => ClientMsg::Logout(Logout::decode_frame(f)?),
            _ => return Err(SessionRejectReason::UnknownType),
        })
    }

    /// Decodes the frame at the front of `buf`, accepting frames of at most `max_frame` bytes
    /// (the length is checked from the header before the body is awaited or read).
    pub fn decode(buf: &[u8], max_frame: usize) -> Decoded<ClientMsg> {
        decode_with(buf, max_frame, Self::size_of, Self::body)
    }

    /// The message's type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            ClientMsg::Logon(_) => MsgType::Logon,
            ClientMsg::Heartbeat(_) => MsgType::Heartbeat,
            ClientMsg::NewOrder(_) => MsgType::NewOrder,
            ClientMsg::Cancel(_) => MsgType::Cancel,
            ClientMsg::Replace(_) => MsgType::Replace,
            ClientMsg::MassCancel(_) => MsgType::MassCancel,
            ClientMsg::Logout(_) => MsgType::Logout,
        }
    }

    /// Writes the frame at the front of `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            ClientMsg::Logon(m) => m.encode(buf),
            ClientMsg::Heartbeat(m) => m.encode(buf),
            ClientMsg::NewOrder(m) => m.encode(buf),
            ClientMsg::Cancel(m) => m.encode(buf),
            ClientMsg::Replace(m) => m.encode(buf),
            ClientMsg::MassCancel(m) => m.encode(buf),
            ClientMsg::Logout(m) => m.encode(buf),
        }
    }

    /// Appends the frame to `out`.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) {
        match self {
            ClientMsg::Logon(m) => m.encode_to_vec(out),
            ClientMsg::Heartbeat(m) => m.encode_to_vec(out),
            ClientMsg::NewOrder(m) => m.encode_to_vec(out),
            ClientMsg::Cancel(m) => m.encode_to_vec(out),
            ClientMsg::Replace(m) => m.encode_to_vec(out),
            ClientMsg::MassCancel(m) => m.encode_to_vec(out),
            ClientMsg::Logout(m) => m.encode_to_vec(out),
        }
    }
}

/// A message a server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    /// See [`LogonAccepted`].
    LogonAccepted(LogonAccepted),
    /// See [`LogonRejected`].
    LogonRejected(LogonRejected),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`ExecReport`].
    ExecReport(ExecReport),
    /// See [`SessionReject`].
    SessionReject(SessionReject),
    /// See [`Logout`].
    Logout(Logout),
}

impl ServerMsg {
    fn size_of(t: MsgType) -> Option<usize> {
        Some(match t {
            MsgType::LogonAccepted => LogonAccepted::SIZE,
            MsgType::LogonRejected => LogonRejected::SIZE,
            MsgType::Heartbeat => Heartbeat::SIZE,
            MsgType::ExecutionReport => ExecReport::SIZE,
            MsgType::SessionReject => SessionReject::SIZE,
            MsgType::Logout => Logout::SIZE,
            _ => return None,
        })
    }

    fn body(t: MsgType, f: &[u8]) -> Result<ServerMsg, SessionRejectReason> {
        Ok(match t {
            MsgType::LogonAccepted => ServerMsg::LogonAccepted(LogonAccepted::decode_frame(f)?),
            MsgType::LogonRejected => ServerMsg::LogonRejected(LogonRejected::decode_frame(f)?),
            MsgType::Heartbeat => ServerMsg::Heartbeat(Heartbeat::decode_frame(f)?),
            MsgType::ExecutionReport => ServerMsg::ExecReport(ExecReport::decode_frame(f)?),
            MsgType::SessionReject => ServerMsg::SessionReject(SessionReject::decode_frame(f)?),
            MsgType::Logout => ServerMsg::Logout(Logout::decode_frame(f)?),
            _ => return Err(SessionRejectReason::UnknownType),
        })
    }

    /// Decodes the frame at the front of `buf` (see [`ClientMsg::decode`]).
    pub fn decode(buf: &[u8], max_frame: usize) -> Decoded<ServerMsg> {
        decode_with(buf, max_frame, Self::size_of, Self::body)
    }

    /// The message's type.
    pub fn msg_type(&self) -> MsgType {
        match self {
            ServerMsg::LogonAccepted(_) => MsgType::LogonAccepted,
            ServerMsg::LogonRejected(_) => MsgType::LogonRejected,
            ServerMsg::Heartbeat(_) => MsgType::Heartbeat,
            ServerMsg::ExecReport(_) => MsgType::ExecutionReport,
            ServerMsg::SessionReject(_) => MsgType::SessionReject,
            ServerMsg::Logout(_) => MsgType::Logout,
        }
    }

    /// Writes the frame at the front of `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            ServerMsg::LogonAccepted(m) => m.encode(buf),
            ServerMsg::LogonRejected(m) => m.encode(buf),
            ServerMsg::Heartbeat(m) => m.encode(buf),
            ServerMsg::ExecReport(m) => m.encode(buf),
            ServerMsg::SessionReject(m) => m.encode(buf),
            ServerMsg::Logout(m) => m.encode(buf),
        }
    }

    /// Appends the frame to `out`.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) {
        match self {
            ServerMsg::LogonAccepted(m) => m.encode_to_vec(out),
            ServerMsg::LogonRejected(m) => m.encode_to_vec(out),
            ServerMsg::Heartbeat(m) => m.encode_to_vec(out),
            ServerMsg::ExecReport(m) => m.encode_to_vec(out),
            ServerMsg::SessionReject(m) => m.encode_to_vec(out),
            ServerMsg::Logout(m) => m.encode_to_vec(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sizes<M: Message + PartialEq + core::fmt::Debug>(m: M) {
        let mut buf = [0u8; 128];
        assert_eq!(m.encode(&mut buf), Ok(M::SIZE));
        assert_eq!(M::decode_frame(&buf[..M::SIZE]), Ok(m));
        assert!(M::SIZE <= MAX_FRAME);
    }

    #[test]
    fn every_message_writes_and_reads_exactly_its_size() {
        macro_rules! chk {
            ($t:ident, $v:expr) => {{
                let v: $t = $v;
                let mut buf = [0u8; 128];
                let mut w = Writer::new(&mut buf);
                w.u32(0);
                v.put(&mut w);
                assert_eq!(w.pos(), $t::SIZE, stringify!($t));
                let mut r = Reader::new(&buf[..$t::SIZE]);
                r.u32();
                let back = $t::get(&mut r).unwrap();
                assert_eq!(r.pos(), $t::SIZE, stringify!($t));
                assert_eq!(back, v);
                check_sizes(v);
            }};
        }
        chk!(Logon, Logon { heartbeat_ms: 1, key_id: 2, timestamp_ns: 3, nonce: 4, last_seq_seen: 5, cancel_on_disconnect: true, signature: [7; 32] });
        chk!(Heartbeat, Heartbeat { seq: 9 });
        chk!(NewOrder, NewOrder { side: 1, order_type: 2, stp: 3, client_order_id: 4, account: 5, instrument: 6, price: Some(-7), qty: 8 });
        chk!(Cancel, Cancel { account: 1, client_order_id: 2, instrument: 3 });
        chk!(Replace, Replace { client_order_id: 1, account: 2, instrument: 3, price: None, qty: 4 });
        chk!(MassCancel, MassCancel { account: 1, instrument: 2 });
        chk!(Logout, Logout { reason: 1 });
        chk!(LogonAccepted, LogonAccepted { heartbeat_ms: 1, last_seq: 2, replay_from: 3, role: Role::Admin });
        chk!(LogonRejected, LogonRejected { reason: LogonRejectReason::NonceReused });
        chk!(ExecReport, ExecReport { qty: 5, cmd_kind: 1, order_type: 2, ..ExecReport::empty(ExecType::Fill) });
        chk!(SessionReject, SessionReject { reason: SessionRejectReason::Oversize, ref_msg_type: 9 });
    }
}
