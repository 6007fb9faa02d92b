//! Runs an order file through the [`Engine`] in-process and writes the book after every line
//! (LOBSTER orderbook layout) and, optionally, every event. Used by `tickwire-match` and by the
//! golden tests; deterministic (no clock: the caller times the run).
//!
//! Rows: one book row per *data line* of the order file, accepted or malformed, so row `i` of the
//! book output belongs to the `i`-th line that is neither blank, a comment nor the header. A
//! malformed line repeats the current book (the engine never sees it); a command the engine
//! rejects also leaves the book unchanged. Each row is
//! `ask_price_1,ask_size_1,bid_price_1,bid_size_1,…,ask_price_N,ask_size_N,bid_price_N,bid_size_N`
//! with missing levels as LOBSTER writes them (ask price 9999999999, bid price -9999999999,
//! size 0), and there is no header line.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::time::Duration;

use tickwire_core::engine::Level;
use tickwire_core::orderfile::{ParseError, ReadError, Reader, Record};
use tickwire_core::*;

/// LOBSTER's price for a missing ask level.
pub const LOBSTER_NO_ASK: i64 = 9_999_999_999;
/// LOBSTER's price for a missing bid level.
pub const LOBSTER_NO_BID: i64 = -9_999_999_999;

/// Header line of the events CSV.
pub const EVENTS_HEADER: &str = "seq,cmd_seq,kind,side,reason,flags,instrument,account,aux32,order_id,aux64,price,qty";

/// What to run and print.
#[derive(Clone, Debug)]
pub struct MatchOptions {
    /// Levels per side in each book row (>= 1).
    pub levels: usize,
    /// Instrument whose book is printed; `None` = the first configured.
    pub instrument: Option<InstrumentId>,
}

/// Counts of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Data lines (book rows written).
    pub lines: u64,
    /// Commands handed to the engine (accepted lines).
    pub commands: u64,
    /// Events emitted.
    pub events: u64,
    /// Trades (`trade` events).
    pub trades: u64,
    /// Engine rejects by reason name.
    pub rejects: BTreeMap<&'static str, u64>,
    /// Malformed lines by error code ([`orderfile::ParseErrorKind::code`](tickwire_core::orderfile::ParseErrorKind::code)).
    pub parse_errors: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// One line: counts, then elapsed time and commands per second.
    pub fn line(&self, elapsed: Duration) -> String {
        let mut s = self.to_string();
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.commands as f64 / secs } else { 0.0 };
        s.push_str(&format!(", elapsed {:.3} ms, {:.0} commands/s", secs * 1e3, rate));
        s
    }
}

impl fmt::Display for Summary {
    /// The deterministic part of the summary (no timing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commands {}, trades {}, events {}", self.commands, self.trades, self.events)?;
        let engine: u64 = self.rejects.values().sum();
        let parse: u64 = self.parse_errors.values().sum();
        write!(f, ", rejects {}", engine + parse)?;
        if engine + parse > 0 {
            let parts: Vec<String> = self
                .rejects
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .chain(self.parse_errors.iter().map(|(k, v)| format!("parse:{k} {v}")))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Why a run stopped.
#[derive(Debug)]
pub enum MatchError {
    /// The configuration is refused by the engine.
    Config(ConfigError),
    /// `--instrument` names an instrument that is not configured.
    UnknownInstrument(InstrumentId),
    /// `levels` is 0.
    NoLevels,
    /// The order file's header is missing or unusable, or it could not be read.
    Orders(ReadError),
    /// Writing an output failed.
    Write(io::Error),
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchError::Config(e) => write!(f, "{e}"),
            MatchError::UnknownInstrument(i) => write!(f, "instrument {i} is not configured"),
            MatchError::NoLevels => write!(f, "levels must be at least 1"),
            MatchError::Orders(e) => write!(f, "orders file: {e}"),
            MatchError::Write(e) => write!(f, "write error: {e}"),
        }
    }
}

impl std::error::Error for MatchError {}

impl From<io::Error> for MatchError {
    fn from(e: io::Error) -> Self {
        MatchError::Write(e)
    }
}

/// Runs `orders` through a fresh engine built from `cfg`: [`MatchRun::new`] then
/// [`MatchRun::run`].
pub fn run_match<R: BufRead>(
    cfg: &EngineConfig,
    orders: R,
    opts: &MatchOptions,
    book: &mut dyn Write,
    events: Option<&mut dyn Write>,
    on_malformed: &mut dyn FnMut(&ParseError),
) -> Result<Summary, MatchError> {
    MatchRun::new(cfg, opts)?.run(orders, book, events, on_malformed)
}

/// An engine ready to run one order file (built, with all its capacity allocated, before the
/// run so a caller can time the run alone).
pub struct MatchRun {
    engine: Engine,
    instrument: InstrumentId,
    levels: usize,
}

impl MatchRun {
    /// Builds the engine and checks the options.
    pub fn new(cfg: &EngineConfig, opts: &MatchOptions) -> Result<MatchRun, MatchError> {
        if opts.levels == 0 {
            return Err(MatchError::NoLevels);
        }
        let instrument = match opts.instrument {
            Some(id) if cfg.instruments.iter().any(|i| i.id == id) => id,
            Some(id) => return Err(MatchError::UnknownInstrument(id)),
            None => cfg.instruments.first().map_or(0, |i| i.id),
        };
        let engine = Engine::new(cfg).map_err(MatchError::Config)?;
        Ok(MatchRun { engine, instrument, levels: opts.levels })
    }

    /// The instrument whose book is written.
    pub fn instrument(&self) -> InstrumentId {
        self.instrument
    }

    /// The engine (its state after a run).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs `orders`. Writes one book row per data line to `book`, every event to `events`
    /// (header first) if given, and calls `on_malformed` for every malformed line. Outputs are
    /// flushed before returning. On an unusable header nothing but the events header is written.
    pub fn run<R: BufRead>(
        &mut self,
        orders: R,
        book: &mut dyn Write,
        mut events: Option<&mut dyn Write>,
        on_malformed: &mut dyn FnMut(&ParseError),
    ) -> Result<Summary, MatchError> {
        let (engine, instrument, levels) = (&mut self.engine, self.instrument, self.levels);
        if let Some(ev) = events.as_deref_mut() {
            writeln!(ev, "{EVENTS_HEADER}")?;
        }
        let mut summary = Summary::default();
        let mut out: Vec<Event> = Vec::with_capacity(64);
        let (mut asks, mut bids): (Vec<Level>, Vec<Level>) = (Vec::new(), Vec::new());
        let mut row = String::with_capacity(levels * 48);
        for rec in Reader::new(orders) {
            match rec.map_err(MatchError::Orders)? {
                Record::Command { cmd, .. } => {
                    summary.commands += 1;
                    out.clear();
                    engine.handle(&cmd, &mut out);
                    for e in &out {
                        summary.events += 1;
                        match e.kind() {
                            Some(EventKind::Trade) => summary.trades += 1,
                            Some(EventKind::Rejected) => {
                                let name = RejectReason::from_u8(e.reason).map_or("unknown_reason", |r| r.name());
                                *summary.rejects.entry(name).or_default() += 1;
                            }
                            _ => {}
                        }
                        if let Some(ev) = events.as_deref_mut() {
                            write_event(ev, e)?;
                        }
                    }
                    engine.depth(instrument, Side::Sell, levels, &mut asks);
                    engine.depth(instrument, Side::Buy, levels, &mut bids);
                    row.clear();
                    format_book_row(&asks, &bids, levels, &mut row);
                }
                Record::Malformed(err) => {
                    *summary.parse_errors.entry(err.kind.code()).or_default() += 1;
                    on_malformed(&err);
                    if row.is_empty() {
                        format_book_row(&asks, &bids, levels, &mut row);
                    }
                }
            }
            summary.lines += 1;
            book.write_all(row.as_bytes())?;
        }
        book.flush()?;
        if let Some(ev) = events {
            ev.flush()?;
        }
        Ok(summary)
    }
}

/// Appends one LOBSTER orderbook row (with its `\n`) for `levels` levels per side.
pub fn format_book_row(asks: &[Level], bids: &[Level], levels: usize, row: &mut String) {
    use fmt::Write as _;
    for i in 0..levels {
        if i > 0 {
            row.push(',');
        }
        let (ap, aq) = asks.get(i).map_or((LOBSTER_NO_ASK, 0), |l| (l.price, l.qty));
        let (bp, bq) = bids.get(i).map_or((LOBSTER_NO_BID, 0), |l| (l.price, l.qty));
        let _ = write!(row, "{ap},{aq},{bp},{bq}");
    }
    row.push('\n');
}

/// Name of an event's `reason` field: a reject reason, a cancel reason, or empty when 0.
fn reason_name(e: &Event) -> ReasonName {
    if e.reason == 0 {
        return ReasonName::Empty;
    }
    let name = match e.kind() {
        Some(EventKind::Rejected) => RejectReason::from_u8(e.reason).map(|r| r.name()),
        Some(EventKind::Cancelled | EventKind::Decremented | EventKind::MassCancelled) => {
            CancelReason::from_u8(e.reason).map(|r| r.name())
        }
        _ => None,
    };
    name.map_or(ReasonName::Raw(e.reason), ReasonName::Name)
}

enum ReasonName {
    Empty,
    Name(&'static str),
    Raw(u8),
}

impl fmt::Display for ReasonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReasonName::Empty => Ok(()),
            ReasonName::Name(n) => f.write_str(n),
            ReasonName::Raw(v) => write!(f, "{v}"),
        }
    }
}

/// A wire enum value as its name, the raw number if it has none, or empty for 0.
struct EnumName(u8, Option<&'static str>);

impl fmt::Display for EnumName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (_, Some(n)) => f.write_str(n),
            (0, None) => Ok(()),
            (v, None) => write!(f, "{v}"),
        }
    }
}

/// Writes one event as a CSV line in the [`EVENTS_HEADER`] layout.
pub fn write_event(w: &mut dyn Write, e: &Event) -> io::Result<()> {
    writeln!(
        w,
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        e.seq,
        e.cmd_seq,
        EnumName(e.kind, EventKind::from_u8(e.kind).map(|k| k.name())),
        EnumName(e.side, Side::from_u8(e.side).map(|s| s.name())),
        reason_name(e),
        e.flags,
        e.instrument,
        e.account,
        e.aux32,
        e.order_id,
        e.aux64,
        e.price,
        e.qty
    )
}
