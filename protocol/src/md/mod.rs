//! The market-data protocol, sans IO. `docs/market-data.md` describes every message byte by byte.
//!
//! Each message is the payload of one binary WebSocket message, little-endian, with a fixed layout
//! (Snapshot and DeltaBatch end with an array of fixed 24-byte level entries). Every message starts
//! with the same 8 bytes: `type u8, version u8, (type-specific u16), instrument u32`.
//!
//! Sequencing: each instrument has its own gapless sequence. A DeltaBatch of `n` level updates
//! covers `n` sequence numbers (`first_seq ..= last_seq`); a Trade and an InstrumentStatus
//! take one each; a Snapshot takes none: its `seq` is the last sequence whose effect it contains,
//! and the next message of the instrument starts at `seq + 1`. Heartbeat and Error are not
//! sequenced. Other channels ([`CH_TOP`], [`CH_TRADES`], [`CH_CANDLES`]) number their messages
//! with their own per-instrument counters (see `docs/market-data.md`, Channels).
//!
//! - [`ServerMsg::decode`] / [`ClientMsg::decode`]: validate and read in place (no allocation;
//!   level arrays are read lazily through [`Levels`]). No input makes them panic.
//! - `encode_*` / `*::encode`: append to a `Vec<u8>`; `*_len` give the size beforehand so a server
//!   can write the WebSocket header first.
//! - [`book::MdBook`]: an aggregated book with the checksum ([`book::MdBook::crc`]).
//! - [`sync::InstrumentSync`]: the client side: applies messages, checks sequences and checksums.

pub mod book;
mod crc;
pub mod sync;

pub use crc::crc32;
use tickwire_core::engine::Level;
use tickwire_core::{InstrumentId, Price, Qty, Seq, Side};

/// Protocol version carried in byte 1 of every message.
pub const VERSION: u8 = 1;

/// Server → client: full book of one instrument.
pub const MSG_SNAPSHOT: u8 = 1;
/// Server → client: level updates of one instrument.
pub const MSG_DELTA_BATCH: u8 = 2;
/// Server → client: a public trade.
pub const MSG_TRADE: u8 = 3;
/// Server → client: an OHLCV candle.
pub const MSG_CANDLE: u8 = 4;
/// Server → client: the instrument was halted or resumed.
pub const MSG_STATUS: u8 = 5;
/// Server → client: liveness (periodic, or the answer to a Ping).
pub const MSG_HEARTBEAT: u8 = 6;
/// Server → client: a request could not be served.
pub const MSG_ERROR: u8 = 7;
/// Client → server: subscribe to an instrument (answered by a Snapshot).
pub const MSG_SUBSCRIBE: u8 = 0x81;
/// Client → server: stop receiving an instrument.
pub const MSG_UNSUBSCRIBE: u8 = 0x82;
/// Client → server: subscribe, replaying what followed `last_seq` if the server still has it.
pub const MSG_RESUME: u8 = 0x83;
/// Client → server: asks for a Heartbeat carrying `nonce`.
pub const MSG_PING: u8 = 0x84;

/// Levels per side hashed by the checksum.
pub const CRC_DEPTH: usize = 10;
/// Size of one level entry in a Snapshot or DeltaBatch.
pub const LEVEL_SIZE: usize = 24;
/// Snapshot size before its level entries.
pub const SNAPSHOT_HEADER: usize = 32;
/// DeltaBatch size before its level entries.
pub const DELTA_HEADER: usize = 40;
/// Trade size.
pub const TRADE_SIZE: usize = 48;
/// Candle size.
pub const CANDLE_SIZE: usize = 72;
/// InstrumentStatus size.
pub const STATUS_SIZE: usize = 24;
/// Heartbeat size.
pub const HEARTBEAT_SIZE: usize = 24;
/// Error size.
pub const ERROR_SIZE: usize = 16;
/// Subscribe / Unsubscribe size.
pub const SUBSCRIBE_SIZE: usize = 8;
/// Resume / Ping size.
pub const RESUME_SIZE: usize = 16;
/// Most updates one DeltaBatch carries (its count is a u16).
pub const MAX_BATCH_UPDATES: usize = u16::MAX as usize;

/// Snapshot flag: the instrument is halted.
pub const SNAP_HALTED: u16 = 1;
/// Snapshot flag: a top-N view sent on the [`CH_TOP`] channel (only the best N levels per side;
/// `crc` covers those levels; bytes 28..32 carry the channel's update number).
pub const SNAP_TOP: u16 = 2;

/// Subscribe channel bit: the full-depth book stream on the instrument sequence (Snapshot, then
/// DeltaBatch, Trade, InstrumentStatus). A channel mask of 0 means this channel alone.
pub const CH_BOOK: u16 = 1;
/// Subscribe channel bit: top-N depth, conflated (Snapshots with [`SNAP_TOP`], at most one per
/// interval), numbered by their own update counter.
pub const CH_TOP: u16 = 2;
/// Subscribe channel bit: Trades numbered by a per-instrument trade sequence (ignored together
/// with [`CH_BOOK`], whose stream already carries the trades).
pub const CH_TRADES: u16 = 4;
/// Subscribe channel bit: Candles (1 s and 1 min) numbered by a per-instrument candle sequence.
pub const CH_CANDLES: u16 = 8;
/// Every channel bit defined.
pub const CH_ALL: u16 = CH_BOOK | CH_TOP | CH_TRADES | CH_CANDLES;

/// The channels a Subscribe mask selects: 0 means [`CH_BOOK`]; [`CH_TRADES`] is dropped when
/// [`CH_BOOK`] is present (the book stream already carries the trades).
pub const fn effective_channels(mask: u16) -> u16 {
    let m = if mask == 0 { CH_BOOK } else { mask & CH_ALL };
    if m & CH_BOOK != 0 {
        m & !CH_TRADES
    } else {
        m
    }
}

/// Size of a Snapshot with `bids + asks` levels.
pub const fn snapshot_len(bids: usize, asks: usize) -> usize {
    SNAPSHOT_HEADER + LEVEL_SIZE * (bids + asks)
}

/// Size of a DeltaBatch with `n` updates.
pub const fn delta_batch_len(n: usize) -> usize {
    DELTA_HEADER + LEVEL_SIZE * n
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its type's fixed part.
    Short,
    /// Byte 1 is not [`VERSION`].
    Version(u8),
    /// Byte 0 names no message of this direction.
    UnknownType(u8),
    /// The length does not match the type (and its counts).
    BadLength,
    /// A field holds an impossible value (side, sequence range, reserved byte not zero).
    BadField,
}

/// Error codes of the Error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The instrument is not served by this feed.
    UnknownInstrument = 1,
    /// The client message did not decode; `detail` is its first byte.
    Malformed = 2,
    /// The client message has another version; `detail` is that version.
    UnsupportedVersion = 3,
    /// Subscribing would exceed the per-connection limit; `detail` is the limit.
    TooManySubscriptions = 4,
    /// Already subscribed (the request is ignored).
    AlreadySubscribed = 5,
    /// Unsubscribe of an instrument not subscribed.
    NotSubscribed = 6,
    /// The connection fell behind its budget and is being closed.
    SlowConsumer = 7,
    /// A Resume could not be served from the replay window; a Snapshot follows. `detail` is the
    /// `last_seq` asked for.
    ResumeUnavailable = 8,
    /// The feed lost engine events and resynchronised; a Snapshot follows.
    FeedReset = 9,
}

impl ErrorCode {
    /// Decodes a wire value.
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match v {
            1 => UnknownInstrument,
            2 => Malformed,
            3 => UnsupportedVersion,
            4 => TooManySubscriptions,
            5 => AlreadySubscribed,
            6 => NotSubscribed,
            7 => SlowConsumer,
            8 => ResumeUnavailable,
            9 => FeedReset,
            _ => return None,
        })
    }
}

/// One level entry: in a Snapshot the level's state, in a DeltaBatch its new state (`qty` 0
/// removes the level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelUpdate {
    /// Book side.
    pub side: Side,
    /// Level price.
    pub price: Price,
    /// New total quantity (0: the level is gone).
    pub qty: Qty,
    /// Orders at the level (0 when `qty` is 0).
    pub orders: u32,
}

/// Level entries read in place (validated when the message was decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels<'a> {
    bytes: &'a [u8],
}

impl<'a> Levels<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() / LEVEL_SIZE
    }
    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = LevelUpdate> + 'a {
        self.bytes.chunks_exact(LEVEL_SIZE).map(read_level)
    }
}

fn read_level(c: &[u8]) -> LevelUpdate {
    LevelUpdate {
        price: i64_at(c, 0),
        qty: u64_at(c, 8),
        orders: u32_at(c, 16),
        // Validated at decode time; Buy as a harmless fallback.
        side: Side::from_u8(c[20]).unwrap_or(Side::Buy),
    }
}

fn check_levels(b: &[u8], side: Option<Side>) -> Result<(), DecodeError> {
    for c in b.chunks_exact(LEVEL_SIZE) {
        let s = Side::from_u8(c[20]).ok_or(DecodeError::BadField)?;
        if side.is_some_and(|want| want != s) || c[21..24] != [0, 0, 0] {
            return Err(DecodeError::BadField);
        }
    }
    Ok(())
}

fn put_level(out: &mut Vec<u8>, side: Side, price: Price, qty: Qty, orders: u32) {
    out.extend_from_slice(&price.to_le_bytes());
    out.extend_from_slice(&qty.to_le_bytes());
    out.extend_from_slice(&orders.to_le_bytes());
    out.extend_from_slice(&[side as u8, 0, 0, 0]);
}

fn put_head(out: &mut Vec<u8>, ty: u8, b2: u16, instrument: InstrumentId) {
    out.push(ty);
    out.push(VERSION);
    out.extend_from_slice(&b2.to_le_bytes());
    out.extend_from_slice(&instrument.to_le_bytes());
}

#[inline]
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}
#[inline]
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
#[inline]
fn i64_at(b: &[u8], o: usize) -> i64 {
    u64_at(b, o) as i64
}

/// Appends a top-N view (a Snapshot with flag [`SNAP_TOP`]): `seq` is the instrument sequence it
/// reflects, `update` the channel's update number, `crc` the checksum of the levels carried.
#[allow(clippy::too_many_arguments)]
pub fn encode_top(
    out: &mut Vec<u8>,
    instrument: InstrumentId,
    seq: Seq,
    update: u32,
    halted: bool,
    crc: u32,
    bids: &[Level],
    asks: &[Level],
) {
    let start = out.len();
    encode_snapshot(out, instrument, seq, halted, crc, bids, asks);
    let flags = SNAP_TOP | if halted { SNAP_HALTED } else { 0 };
    out[start + 2..start + 4].copy_from_slice(&flags.to_le_bytes());
    out[start + 28..start + 32].copy_from_slice(&update.to_le_bytes());
}

/// Appends a Snapshot: `bids` and `asks` best first.
pub fn encode_snapshot(
    out: &mut Vec<u8>,
    instrument: InstrumentId,
    seq: Seq,
    halted: bool,
    crc: u32,
    bids: &[Level],
    asks: &[Level],
) {
    out.reserve(snapshot_len(bids.len(), asks.len()));
    put_head(out, MSG_SNAPSHOT, if halted { SNAP_HALTED } else { 0 }, instrument);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(bids.len() as u32).to_le_bytes());
    out.extend_from_slice(&(asks.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for l in bids {
        put_level(out, Side::Buy, l.price, l.qty, l.orders);
    }
    for l in asks {
        put_level(out, Side::Sell, l.price, l.qty, l.orders);
    }
}

/// Appends a DeltaBatch covering `first_seq ..= first_seq + updates.len() - 1`. `updates` must hold
/// 1..=[`MAX_BATCH_UPDATES`] entries; `crc` is the book's checksum after applying all of them.
pub fn encode_delta_batch(
    out: &mut Vec<u8>,
    instrument: InstrumentId,
    first_seq: Seq,
    ts_ns: u64,
    crc: u32,
    updates: &[LevelUpdate],
) {
    debug_assert!(!updates.is_empty() && updates.len() <= MAX_BATCH_UPDATES);
    let n = updates.len().min(MAX_BATCH_UPDATES);
    out.reserve(delta_batch_len(n));
    put_head(out, MSG_DELTA_BATCH, n as u16, instrument);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&(first_seq + n as u64 - 1).to_le_bytes());
    out.extend_from_slice(&ts_ns.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for u in &updates[..n] {
        put_level(out, u.side, u.price, u.qty, u.orders);
    }
}

/// A decoded Snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot<'a> {
    /// Instrument.
    pub instrument: InstrumentId,
    /// Last sequence whose effect the book contains (0: nothing happened yet).
    pub seq: Seq,
    /// Whether the instrument is halted.
    pub halted: bool,
    /// Checksum of the book (same definition as DeltaBatch's; of the levels carried for a top-N
    /// view).
    pub crc: u32,
    /// A top-N view of the [`CH_TOP`] channel (flag [`SNAP_TOP`]) rather than the whole book.
    pub top: bool,
    /// Top-N views: the channel's update number (gapless per instrument, from 1; a jump means
    /// views were lost). 0 for a full Snapshot.
    pub update: u32,
    /// Bid levels, best (highest) first.
    pub bids: Levels<'a>,
    /// Ask levels, best (lowest) first.
    pub asks: Levels<'a>,
}

/// A decoded DeltaBatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBatch<'a> {
    /// Instrument.
    pub instrument: InstrumentId,
    /// Sequence of the first update.
    pub first_seq: Seq,
    /// Sequence of the last update (`first_seq + updates.len() - 1`).
    pub last_seq: Seq,
    /// Engine timestamp (ns) of the command that caused the last update.
    pub ts_ns: u64,
    /// Checksum of the book after applying every update.
    pub crc: u32,
    /// The updates, to apply in order.
    pub updates: Levels<'a>,
}

/// A public trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Instrument.
    pub instrument: InstrumentId,
    /// Instrument sequence.
    pub seq: Seq,
    /// Trade id (the engine's fill sequence; unique, increasing).
    pub trade_id: u64,
    /// Execution price.
    pub price: Price,
    /// Executed quantity.
    pub qty: Qty,
    /// The taker's side.
    pub aggressor: Side,
    /// Engine timestamp (ns) of the command that traded.
    pub ts_ns: u64,
}

impl Trade {
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_head(out, MSG_TRADE, self.aggressor as u16, self.instrument);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.trade_id.to_le_bytes());
        out.extend_from_slice(&self.price.to_le_bytes());
        out.extend_from_slice(&self.qty.to_le_bytes());
        out.extend_from_slice(&self.ts_ns.to_le_bytes());
    }
}

/// Candle interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CandleInterval {
    /// One second.
    Sec1 = 1,
    /// One minute.
    Min1 = 2,
}

/// An OHLCV candle of a closed interval (channel [`CH_CANDLES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candle {
    /// Instrument.
    pub instrument: InstrumentId,
    /// Candle sequence of the instrument (its own, gapless from 1, both intervals counted).
    pub seq: Seq,
    /// Interval.
    pub interval: CandleInterval,
    /// Start of the interval (engine ns).
    pub start_ns: u64,
    /// First trade price.
    pub open: Price,
    /// Highest trade price.
    pub high: Price,
    /// Lowest trade price.
    pub low: Price,
    /// Last trade price.
    pub close: Price,
    /// Sum of traded quantities.
    pub volume: Qty,
    /// Number of trades.
    pub trades: u32,
}

impl CandleInterval {
    /// Length in nanoseconds.
    pub const fn ns(self) -> u64 {
        match self {
            CandleInterval::Sec1 => 1_000_000_000,
            CandleInterval::Min1 => 60_000_000_000,
        }
    }
    /// `"1s"` or `"1m"`.
    pub const fn name(self) -> &'static str {
        match self {
            CandleInterval::Sec1 => "1s",
            CandleInterval::Min1 => "1m",
        }
    }
}

impl Candle {
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_head(out, MSG_CANDLE, self.interval as u16, self.instrument);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.start_ns.to_le_bytes());
        for v in [self.open, self.high, self.low, self.close] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.extend_from_slice(&self.trades.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
}

/// The instrument was halted or resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Instrument.
    pub instrument: InstrumentId,
    /// Instrument sequence.
    pub seq: Seq,
    /// Halted now.
    pub halted: bool,
    /// Engine event sequence that reported it (diagnostics).
    pub engine_seq: Seq,
}

impl Status {
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_head(out, MSG_STATUS, self.halted as u16, self.instrument);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.engine_seq.to_le_bytes());
    }
}

/// Liveness, periodic (`nonce` 0) or answering a Ping (its nonce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The Ping's nonce, or 0.
    pub nonce: u64,
    /// Server wall clock, ns since the Unix epoch.
    pub server_ns: u64,
}

impl Heartbeat {
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_head(out, MSG_HEARTBEAT, 0, 0);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.server_ns.to_le_bytes());
    }
}

/// A request could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// Raw code (see [`ErrorCode`]; unknown codes are kept for forward compatibility).
    pub code: u16,
    /// Instrument concerned, or 0.
    pub instrument: InstrumentId,
    /// Code-specific detail.
    pub detail: u64,
}

impl ErrorMsg {
    /// An error with a known code.
    pub fn new(code: ErrorCode, instrument: InstrumentId, detail: u64) -> ErrorMsg {
        ErrorMsg { code: code as u16, instrument, detail }
    }
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_head(out, MSG_ERROR, self.code, self.instrument);
        out.extend_from_slice(&self.detail.to_le_bytes());
    }
}

/// A decoded server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// Full book.
    Snapshot(Snapshot<'a>),
    /// Level updates.
    DeltaBatch(DeltaBatch<'a>),
    /// Public trade.
    Trade(Trade),
    /// OHLCV candle.
    Candle(Candle),
    /// Halt / resume.
    Status(Status),
    /// Liveness.
    Heartbeat(Heartbeat),
    /// Error.
    Error(ErrorMsg),
}

fn exact(b: &[u8], n: usize) -> Result<(), DecodeError> {
    match b.len().cmp(&n) {
        std::cmp::Ordering::Less => Err(DecodeError::Short),
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(DecodeError::BadLength),
    }
}

fn head(b: &[u8]) -> Result<(u8, u16, InstrumentId), DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Short);
    }
    if b[1] != VERSION {
        return Err(DecodeError::Version(b[1]));
    }
    Ok((b[0], u16_at(b, 2), u32_at(b, 4)))
}

impl<'a> ServerMsg<'a> {
    /// Decodes one whole message (one WebSocket binary message's payload).
    pub fn decode(b: &'a [u8]) -> Result<ServerMsg<'a>, DecodeError> {
        let (ty, b2, instrument) = head(b)?;
        Ok(match ty {
            MSG_SNAPSHOT => {
                if b.len() < SNAPSHOT_HEADER {
                    return Err(DecodeError::Short);
                }
                let nb = u32_at(b, 16) as usize;
                let na = u32_at(b, 20) as usize;
                let total = nb.checked_add(na).and_then(|n| n.checked_mul(LEVEL_SIZE));
                if total.and_then(|t| t.checked_add(SNAPSHOT_HEADER)) != Some(b.len()) {
                    return Err(DecodeError::BadLength);
                }
                let top = b2 & SNAP_TOP != 0;
                if b2 & !(SNAP_HALTED | SNAP_TOP) != 0 || (!top && u32_at(b, 28) != 0) {
                    return Err(DecodeError::BadField);
                }
                let split = SNAPSHOT_HEADER + nb * LEVEL_SIZE;
                let (bids, asks) = (&b[SNAPSHOT_HEADER..split], &b[split..]);
                check_levels(bids, Some(Side::Buy))?;
                check_levels(asks, Some(Side::Sell))?;
                ServerMsg::Snapshot(Snapshot {
                    instrument,
                    seq: u64_at(b, 8),
                    halted: b2 & SNAP_HALTED != 0,
                    crc: u32_at(b, 24),
                    top,
                    update: u32_at(b, 28),
                    bids: Levels { bytes: bids },
                    asks: Levels { bytes: asks },
                })
            }
            MSG_DELTA_BATCH => {
                let n = b2 as usize;
                if b.len() < DELTA_HEADER {
                    return Err(DecodeError::Short);
                }
                if b.len() != delta_batch_len(n) {
                    return Err(DecodeError::BadLength);
                }
                let (first, last) = (u64_at(b, 8), u64_at(b, 16));
                if n == 0 || last.checked_sub(first) != Some(n as u64 - 1) || u32_at(b, 36) != 0 {
                    return Err(DecodeError::BadField);
                }
                let ups = &b[DELTA_HEADER..];
                check_levels(ups, None)?;
                ServerMsg::DeltaBatch(DeltaBatch {
                    instrument,
                    first_seq: first,
                    last_seq: last,
                    ts_ns: u64_at(b, 24),
                    crc: u32_at(b, 32),
                    updates: Levels { bytes: ups },
                })
            }
            MSG_TRADE => {
                exact(b, TRADE_SIZE)?;
                let aggressor = u8::try_from(b2).ok().and_then(Side::from_u8).ok_or(DecodeError::BadField)?;
                ServerMsg::Trade(Trade {
                    instrument,
                    seq: u64_at(b, 8),
                    trade_id: u64_at(b, 16),
                    price: i64_at(b, 24),
                    qty: u64_at(b, 32),
                    aggressor,
                    ts_ns: u64_at(b, 40),
                })
            }
            MSG_CANDLE => {
                exact(b, CANDLE_SIZE)?;
                let interval = match b2 {
                    1 => CandleInterval::Sec1,
                    2 => CandleInterval::Min1,
                    _ => return Err(DecodeError::BadField),
                };
                ServerMsg::Candle(Candle {
                    instrument,
                    seq: u64_at(b, 8),
                    interval,
                    start_ns: u64_at(b, 16),
                    open: i64_at(b, 24),
                    high: i64_at(b, 32),
                    low: i64_at(b, 40),
                    close: i64_at(b, 48),
                    volume: u64_at(b, 56),
                    trades: u32_at(b, 64),
                })
            }
            MSG_STATUS => {
                exact(b, STATUS_SIZE)?;
                if b2 > 1 {
                    return Err(DecodeError::BadField);
                }
                ServerMsg::Status(Status { instrument, seq: u64_at(b, 8), halted: b2 == 1, engine_seq: u64_at(b, 16) })
            }
            MSG_HEARTBEAT => {
                exact(b, HEARTBEAT_SIZE)?;
                ServerMsg::Heartbeat(Heartbeat { nonce: u64_at(b, 8), server_ns: u64_at(b, 16) })
            }
            MSG_ERROR => {
                exact(b, ERROR_SIZE)?;
                ServerMsg::Error(ErrorMsg { code: b2, instrument, detail: u64_at(b, 8) })
            }
            t => return Err(DecodeError::UnknownType(t)),
        })
    }

    /// The instrument the message is about (0 for Heartbeat).
    pub fn instrument(&self) -> InstrumentId {
        match self {
            ServerMsg::Snapshot(m) => m.instrument,
            ServerMsg::DeltaBatch(m) => m.instrument,
            ServerMsg::Trade(m) => m.instrument,
            ServerMsg::Candle(m) => m.instrument,
            ServerMsg::Status(m) => m.instrument,
            ServerMsg::Heartbeat(_) => 0,
            ServerMsg::Error(m) => m.instrument,
        }
    }

    /// The sequence range the message takes on its channel (`None` for unsequenced messages and
    /// Snapshots). Trades received on [`CH_TRADES`] and Candles are numbered by their channel's
    /// own sequence, not the instrument's.
    pub fn seq_range(&self) -> Option<(Seq, Seq)> {
        match self {
            ServerMsg::DeltaBatch(m) => Some((m.first_seq, m.last_seq)),
            ServerMsg::Trade(m) => Some((m.seq, m.seq)),
            ServerMsg::Candle(m) => Some((m.seq, m.seq)),
            ServerMsg::Status(m) => Some((m.seq, m.seq)),
            _ => None,
        }
    }
}

/// A client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// Receive the instrument: a Snapshot, then every later message (channel mask 0: [`CH_BOOK`]).
    Subscribe {
        /// Instrument.
        instrument: InstrumentId,
    },
    /// Receive some channels of the instrument (`channels`: `CH_*` bits, not 0; see
    /// [`effective_channels`]). Subscribing again adds channels.
    SubscribeChannels {
        /// Instrument.
        instrument: InstrumentId,
        /// `CH_*` bits.
        channels: u16,
    },
    /// Stop receiving the instrument.
    Unsubscribe {
        /// Instrument.
        instrument: InstrumentId,
    },
    /// Subscribe, starting right after `last_seq` when the replay window still holds it (else a
    /// Snapshot, preceded by Error `resume_unavailable`).
    Resume {
        /// Instrument.
        instrument: InstrumentId,
        /// Last sequence the client applied.
        last_seq: Seq,
    },
    /// Ask for a Heartbeat echoing `nonce`.
    Ping {
        /// Any value.
        nonce: u64,
    },
}

impl ClientMsg {
    /// Appends the message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            ClientMsg::Subscribe { instrument } => put_head(out, MSG_SUBSCRIBE, 0, instrument),
            ClientMsg::SubscribeChannels { instrument, channels } => put_head(out, MSG_SUBSCRIBE, channels, instrument),
            ClientMsg::Unsubscribe { instrument } => put_head(out, MSG_UNSUBSCRIBE, 0, instrument),
            ClientMsg::Resume { instrument, last_seq } => {
                put_head(out, MSG_RESUME, 0, instrument);
                out.extend_from_slice(&last_seq.to_le_bytes());
            }
            ClientMsg::Ping { nonce } => {
                put_head(out, MSG_PING, 0, 0);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
        }
    }

    /// The encoded bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RESUME_SIZE);
        self.encode(&mut v);
        v
    }

    /// Decodes one whole message.
    pub fn decode(b: &[u8]) -> Result<ClientMsg, DecodeError> {
        let (ty, b2, instrument) = head(b)?;
        if ty == MSG_SUBSCRIBE && b2 != 0 {
            if b2 & !CH_ALL != 0 {
                return Err(DecodeError::BadField);
            }
            return exact(b, SUBSCRIBE_SIZE).map(|_| ClientMsg::SubscribeChannels { instrument, channels: b2 });
        }
        if b2 != 0 {
            return Err(DecodeError::BadField);
        }
        match ty {
            MSG_SUBSCRIBE => exact(b, SUBSCRIBE_SIZE).map(|_| ClientMsg::Subscribe { instrument }),
            MSG_UNSUBSCRIBE => exact(b, SUBSCRIBE_SIZE).map(|_| ClientMsg::Unsubscribe { instrument }),
            MSG_RESUME => exact(b, RESUME_SIZE).map(|_| ClientMsg::Resume { instrument, last_seq: u64_at(b, 8) }),
            MSG_PING => exact(b, RESUME_SIZE).map(|_| ClientMsg::Ping { nonce: u64_at(b, 8) }),
            t => Err(DecodeError::UnknownType(t)),
        }
    }
}

#[cfg(test)]
mod tests;
