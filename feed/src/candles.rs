//! OHLCV candles (1 s and 1 min) built from an instrument's trades, sans IO and without a clock.
//!
//! - A trade belongs to the bucket `[s, s + len)` with `s = ts_ns - ts_ns % len`, `ts_ns` being the
//!   engine timestamp the Trade event carries (not the feed's clock).
//! - A bucket is **closed** (its candle emitted and kept in the history) by the first of:
//!   1. a trade of the instrument in a later bucket, or
//!   2. a tick whose `now` (the shard's wall clock, handed in by the caller) is at or past the
//!      bucket's end plus a grace delay (so a quiet market still gets its candle).
//! - Buckets without trades produce no candle.
//! - A trade older than a bucket already closed (possible only when a tick closed it first, or
//!   when engine timestamps go backwards) is never put into a closed candle: it counts in the
//!   earliest bucket still open (counted in [`Series::late_trades`]).
//! - The history keeps the last `cap` closed candles per interval (bounded memory, served by the
//!   HTTP `/candles` endpoint).

use std::collections::VecDeque;
use tickwire_core::{Price, Qty};
use tickwire_protocol::md::CandleInterval;

/// One candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Start of the bucket (engine ns, a multiple of the interval).
    pub start_ns: u64,
    /// First trade price.
    pub open: Price,
    /// Highest trade price.
    pub high: Price,
    /// Lowest trade price.
    pub low: Price,
    /// Last trade price.
    pub close: Price,
    /// Sum of traded quantities (saturating).
    pub volume: Qty,
    /// Number of trades (saturating).
    pub trades: u32,
}

impl Bar {
    fn new(start_ns: u64, price: Price, qty: Qty) -> Bar {
        Bar { start_ns, open: price, high: price, low: price, close: price, volume: qty, trades: 1 }
    }

    fn add(&mut self, price: Price, qty: Qty) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume = self.volume.saturating_add(qty);
        self.trades = self.trades.saturating_add(1);
    }
}

/// The candles of one instrument for one interval.
#[derive(Clone, Debug)]
pub struct Series {
    interval: CandleInterval,
    len: u64,
    open: Option<Bar>,
    /// End of the last closed bucket: no trade goes before it any more.
    floor: u64,
    history: VecDeque<Bar>,
    cap: usize,
    /// Trades counted in a later bucket than their timestamp's (see the module doc).
    pub late_trades: u64,
}

impl Series {
    /// An empty series keeping at most `cap` closed candles.
    pub fn new(interval: CandleInterval, cap: usize) -> Series {
        Series {
            interval,
            len: interval.ns(),
            open: None,
            floor: 0,
            history: VecDeque::new(),
            cap: cap.max(1),
            late_trades: 0,
        }
    }

    /// The interval.
    pub fn interval(&self) -> CandleInterval {
        self.interval
    }

    /// Adds a trade; returns the candle it closed (when it belongs to a later bucket).
    pub fn on_trade(&mut self, ts_ns: u64, price: Price, qty: Qty) -> Option<Bar> {
        let mut start = ts_ns - ts_ns % self.len;
        if start < self.floor {
            start = self.floor;
            self.late_trades += 1;
        }
        match &mut self.open {
            Some(b) if start == b.start_ns => {
                b.add(price, qty);
                None
            }
            Some(b) if start < b.start_ns => {
                self.late_trades += 1;
                b.add(price, qty);
                None
            }
            Some(_) => {
                let closed = self.close();
                self.open = Some(Bar::new(start, price, qty));
                closed
            }
            None => {
                self.open = Some(Bar::new(start, price, qty));
                None
            }
        }
    }

    /// A tick: closes the open bucket if `now_ns >= end + grace_ns`.
    pub fn on_time(&mut self, now_ns: u64, grace_ns: u64) -> Option<Bar> {
        let b = self.open?;
        if now_ns >= b.start_ns.saturating_add(self.len).saturating_add(grace_ns) {
            self.close()
        } else {
            None
        }
    }

    fn close(&mut self) -> Option<Bar> {
        let b = self.open.take()?;
        self.floor = b.start_ns.saturating_add(self.len);
        if self.history.len() >= self.cap {
            self.history.pop_front();
        }
        self.history.push_back(b);
        Some(b)
    }

    /// The bucket still open, if any.
    pub fn current(&self) -> Option<&Bar> {
        self.open.as_ref()
    }

    /// Closed candles kept, oldest first.
    pub fn closed(&self) -> impl Iterator<Item = &Bar> {
        self.history.iter()
    }

    /// Candles with `from <= start_ns < to`, oldest first, each with whether it is closed (the
    /// open bucket comes last). At most `cap + 1` items.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (Bar, bool)> + '_ {
        let lo = self.history.partition_point(|b| b.start_ns < from);
        let hi = self.history.partition_point(|b| b.start_ns < to).max(lo);
        let closed = self.history.range(lo..hi).map(|b| (*b, true));
        let open = self.open.filter(|b| b.start_ns >= from && b.start_ns < to).map(|b| (b, false));
        closed.chain(open)
    }
}

/// Both intervals of one instrument.
#[derive(Clone, Debug)]
pub struct Candles {
    /// 1-second candles.
    pub sec: Series,
    /// 1-minute candles.
    pub min: Series,
}

impl Candles {
    /// Empty series keeping `cap` closed candles each.
    pub fn new(cap: usize) -> Candles {
        Candles { sec: Series::new(CandleInterval::Sec1, cap), min: Series::new(CandleInterval::Min1, cap) }
    }

    /// The series of `interval`.
    pub fn series(&self, interval: CandleInterval) -> &Series {
        match interval {
            CandleInterval::Sec1 => &self.sec,
            CandleInterval::Min1 => &self.min,
        }
    }

    /// Adds a trade; closed candles are appended to `out` (1 s first).
    pub fn on_trade(&mut self, ts_ns: u64, price: Price, qty: Qty, out: &mut Vec<(CandleInterval, Bar)>) {
        for s in [&mut self.sec, &mut self.min] {
            if let Some(b) = s.on_trade(ts_ns, price, qty) {
                out.push((s.interval, b));
            }
        }
    }

    /// A tick at `now_ns`; closed candles are appended to `out` (1 s first).
    pub fn on_time(&mut self, now_ns: u64, grace_ns: u64, out: &mut Vec<(CandleInterval, Bar)>) {
        for s in [&mut self.sec, &mut self.min] {
            if let Some(b) = s.on_time(now_ns, grace_ns) {
                out.push((s.interval, b));
            }
        }
    }

    /// Whether a bucket is open (a tick may close it).
    pub fn has_open(&self) -> bool {
        self.sec.open.is_some() || self.min.open.is_some()
    }
}
