//! CSV order files: the text form of a command stream, shared by tests, tools and benchmarks.
//!
//! Format (full description in `docs/orderfile.md`):
//!
//! ```text
//! action,account,instrument,order_id,side,type,price,qty
//! # a comment
//! new,7,1,1001,buy,limit_gtc,1000500,100
//! replace,7,1,1001,,,1000400,50
//! cancel,7,1,1001,,,,
//! mass_cancel,7,,,,,,
//! ```
//!
//! - The first line that is neither blank nor a comment is the header. It must name the eight
//!   columns above, in any order, and may add `stp` and `ts_ns`; any other name is an error.
//! - `action` is `new`, `cancel`, `replace` or `mass_cancel`; `side`, `type` and `stp` use the
//!   snake_case [`name()`](crate::types::Side::name)s of [`Side`], [`OrderType`] and [`StpMode`].
//! - A field an action does not use must be empty. `replace` with an empty `price` keeps the price;
//!   `market` with an empty `price` has no protection price; `mass_cancel` with an empty or `0`
//!   `instrument` covers every instrument; an empty `stp` means the account's default; an empty
//!   `ts_ns` is 0.
//! - Lines starting with `#` (after optional spaces) are comments; blank lines are skipped; fields
//!   are trimmed of spaces and tabs; a trailing `\r` is ignored.
//!
//! Parsing is sans-IO and line based ([`Parser::push_line`]); [`Reader`] wraps a [`BufRead`] and
//! [`parse_str`] a whole string. A malformed line gives a [`ParseError`] (line number and typed
//! reason) and parsing goes on with the next line. Accepted lines become [`Command`]s whose `seq`
//! is their 1-based index among accepted lines, so the engine sees a gapless sequence.
//!
//! [`Writer`] turns a [`Command`] back into a line; `parse(write(cmd)) == cmd` for every command it
//! accepts (with `seq` renumbered as above).

use crate::command::{Command, CommandKind, CMD_HAS_PRICE};
use crate::types::*;
use std::fmt;
use std::io::{self, BufRead};

/// One column of an order file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// `action`: new | cancel | replace | mass_cancel.
    Action,
    /// `account`.
    Account,
    /// `instrument`.
    Instrument,
    /// `order_id`.
    OrderId,
    /// `side`: buy | sell.
    Side,
    /// `type`: limit_gtc | limit_ioc | limit_fok | post_only | market.
    Type,
    /// `price`.
    Price,
    /// `qty`.
    Qty,
    /// `stp` (optional column): none | cancel_taker | cancel_maker | cancel_both | decrement_and_cancel.
    Stp,
    /// `ts_ns` (optional column): the recorded timestamp.
    TsNs,
}

impl Column {
    /// Every column, required ones first, in the canonical order the [`Writer`] uses.
    pub const ALL: [Column; 10] = [
        Column::Action,
        Column::Account,
        Column::Instrument,
        Column::OrderId,
        Column::Side,
        Column::Type,
        Column::Price,
        Column::Qty,
        Column::Stp,
        Column::TsNs,
    ];
    /// Columns every header must name.
    pub const REQUIRED: [Column; 8] = [
        Column::Action,
        Column::Account,
        Column::Instrument,
        Column::OrderId,
        Column::Side,
        Column::Type,
        Column::Price,
        Column::Qty,
    ];

    /// The column's name in the header.
    pub const fn name(self) -> &'static str {
        match self {
            Column::Action => "action",
            Column::Account => "account",
            Column::Instrument => "instrument",
            Column::OrderId => "order_id",
            Column::Side => "side",
            Column::Type => "type",
            Column::Price => "price",
            Column::Qty => "qty",
            Column::Stp => "stp",
            Column::TsNs => "ts_ns",
        }
    }

    /// The column with this header name.
    pub fn from_name(s: &str) -> Option<Column> {
        Column::ALL.iter().copied().find(|c| c.name() == s)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `action` of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A new order ([`CommandKind::New`]).
    New,
    /// Cancel one order ([`CommandKind::Cancel`]).
    Cancel,
    /// Replace one order ([`CommandKind::Replace`]).
    Replace,
    /// Cancel all of an account's orders ([`CommandKind::MassCancel`]).
    MassCancel,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 4] = [Action::New, Action::Cancel, Action::Replace, Action::MassCancel];

    /// The action's name in the file.
    pub const fn name(self) -> &'static str {
        match self {
            Action::New => "new",
            Action::Cancel => "cancel",
            Action::Replace => "replace",
            Action::MassCancel => "mass_cancel",
        }
    }

    /// The action with this name.
    pub fn from_name(s: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.name() == s)
    }

    /// Whether a line of this action may fill `col` (the others must be empty).
    pub const fn uses(self, col: Column) -> bool {
        match col {
            Column::Action | Column::Account | Column::TsNs => true,
            Column::Instrument => true,
            Column::OrderId => !matches!(self, Action::MassCancel),
            Column::Side | Column::Type | Column::Stp => matches!(self, Action::New),
            Column::Price | Column::Qty => matches!(self, Action::New | Action::Replace),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|&v| name(v)).collect::<Vec<_>>().join("|")
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a data line was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line does not have as many fields as the header.
    FieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// `action` is not one of the four actions.
    UnknownAction(String),
    /// `side` is not buy or sell.
    UnknownSide(String),
    /// `type` is not an order type name.
    UnknownType(String),
    /// `stp` is not an STP mode name.
    UnknownStp(String),
    /// A field the action needs is empty.
    MissingField(Column),
    /// A field the action does not use is not empty.
    UnusedField(Column, Action),
    /// A number field does not start with a digit (or `-` for `price`).
    BadNumber(Column, String),
    /// A number field has characters after its digits.
    TrailingGarbage(Column, String),
    /// A number does not fit its field.
    OutOfRange(Column, String),
}

impl ParseErrorKind {
    /// A short snake_case name of the kind of error (summaries count errors by it).
    pub const fn code(&self) -> &'static str {
        match self {
            ParseErrorKind::InvalidUtf8 => "invalid_utf8",
            ParseErrorKind::FieldCount { .. } => "field_count",
            ParseErrorKind::UnknownAction(_) => "unknown_action",
            ParseErrorKind::UnknownSide(_) => "unknown_side",
            ParseErrorKind::UnknownType(_) => "unknown_type",
            ParseErrorKind::UnknownStp(_) => "unknown_stp",
            ParseErrorKind::MissingField(_) => "missing_field",
            ParseErrorKind::UnusedField(..) => "unused_field",
            ParseErrorKind::BadNumber(..) => "bad_number",
            ParseErrorKind::TrailingGarbage(..) => "trailing_garbage",
            ParseErrorKind::OutOfRange(..) => "out_of_range",
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::InvalidUtf8 => write!(f, "not valid UTF-8"),
            ParseErrorKind::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields (as in the header), found {found}")
            }
            ParseErrorKind::UnknownAction(s) => {
                write!(f, "unknown action {s:?} (expected {})", names(&Action::ALL, Action::name))
            }
            ParseErrorKind::UnknownSide(s) => write!(f, "unknown side {s:?} (expected {})", names(Side::ALL, Side::name)),
            ParseErrorKind::UnknownType(s) => {
                write!(f, "unknown type {s:?} (expected {})", names(OrderType::ALL, OrderType::name))
            }
            ParseErrorKind::UnknownStp(s) => {
                write!(f, "unknown stp {s:?} (expected {} or empty)", names(StpMode::ALL, StpMode::name))
            }
            ParseErrorKind::MissingField(c) => write!(f, "missing required field `{c}`"),
            ParseErrorKind::UnusedField(c, a) => write!(f, "field `{c}` must be empty for action {a}"),
            ParseErrorKind::BadNumber(c, s) => write!(f, "field `{c}`: {s:?} is not a number"),
            ParseErrorKind::TrailingGarbage(c, s) => write!(f, "field `{c}`: trailing garbage after the number in {s:?}"),
            ParseErrorKind::OutOfRange(c, s) => write!(f, "field `{c}`: {s} is out of range"),
        }
    }
}

/// A malformed data line: its 1-based line number and why. Displays as `line N: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based physical line number in the file.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for ParseError {}

/// Why the header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderErrorKind {
    /// The input ended before any header line.
    Missing,
    /// The header line is not valid UTF-8.
    InvalidUtf8,
    /// A column name that is not a known column.
    UnknownColumn(String),
    /// A column named twice.
    DuplicateColumn(Column),
    /// A required column is absent.
    MissingColumn(Column),
}

impl fmt::Display for HeaderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderErrorKind::Missing => write!(f, "no header line (expected {})", names(&Column::REQUIRED, Column::name)),
            HeaderErrorKind::InvalidUtf8 => write!(f, "header is not valid UTF-8"),
            HeaderErrorKind::UnknownColumn(s) => write!(
                f,
                "unknown column {s:?} in the header (the first line that is not blank or a comment must be the \
                 header; columns: {}, optional {} and {})",
                names(&Column::REQUIRED, Column::name),
                Column::Stp,
                Column::TsNs
            ),
            HeaderErrorKind::DuplicateColumn(c) => write!(f, "column `{c}` appears twice in the header"),
            HeaderErrorKind::MissingColumn(c) => write!(f, "header lacks required column `{c}`"),
        }
    }
}

/// A header that cannot be used: the whole file is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError {
    /// 1-based line number of the header (for [`HeaderErrorKind::Missing`]: lines read).
    pub line: usize,
    /// What is wrong.
    pub kind: HeaderErrorKind,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for HeaderError {}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

/// A parsed header: which column is at which position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    columns: Vec<Column>,
    /// Position of each column (indexed by `Column as usize`).
    position: [Option<usize>; 10],
}

impl Header {
    /// Parses a header line (without its line terminator).
    pub fn parse(line: &str) -> Result<Header, HeaderErrorKind> {
        let mut columns = Vec::new();
        let mut position = [None; 10];
        for (i, raw) in line.split(',').enumerate() {
            let name = trim(raw);
            let col = Column::from_name(name).ok_or_else(|| HeaderErrorKind::UnknownColumn(name.to_string()))?;
            if position[col.index()].is_some() {
                return Err(HeaderErrorKind::DuplicateColumn(col));
            }
            position[col.index()] = Some(i);
            columns.push(col);
        }
        if let Some(&c) = Column::REQUIRED.iter().find(|c| position[c.index()].is_none()) {
            return Err(HeaderErrorKind::MissingColumn(c));
        }
        Ok(Header { columns, position })
    }

    /// The columns in file order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Whether the header has this column.
    pub fn has(&self, col: Column) -> bool {
        self.position[col.index()].is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// What one data line gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An accepted line and its command (`seq` = index among accepted lines, from 1).
    Command {
        /// 1-based line number.
        line: usize,
        /// The command.
        cmd: Command,
    },
    /// A malformed line.
    Malformed(ParseError),
}

/// Line-by-line order file parser (sans-IO). Feed it every physical line in order.
#[derive(Debug, Default)]
pub struct Parser {
    header: Option<Header>,
    failed: Option<HeaderError>,
    line: usize,
    accepted: u64,
}

fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

impl Parser {
    /// A parser expecting the header first.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Lines fed so far.
    pub fn lines(&self) -> usize {
        self.line
    }

    /// Commands accepted so far (the `seq` of the last one).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Feeds the next physical line as bytes (a final `\n`/`\r\n` is ignored). Invalid UTF-8
    /// gives a [`ParseErrorKind::InvalidUtf8`] record (or a header error before the header).
    pub fn push_bytes(&mut self, line: &[u8]) -> Result<Option<Record>, HeaderError> {
        match std::str::from_utf8(line) {
            Ok(s) => self.push_line(s),
            Err(_) => {
                if let Some(e) = &self.failed {
                    return Err(e.clone());
                }
                self.line += 1;
                if self.header.is_none() {
                    let e = HeaderError { line: self.line, kind: HeaderErrorKind::InvalidUtf8 };
                    self.failed = Some(e.clone());
                    return Err(e);
                }
                Ok(Some(Record::Malformed(ParseError { line: self.line, kind: ParseErrorKind::InvalidUtf8 })))
            }
        }
    }

    /// Feeds the next physical line (a final `\n`/`\r\n` is ignored). Returns `Ok(None)` for
    /// blank lines, comments and the header; `Err` if the header is unusable (then every later
    /// call returns the same error).
    pub fn push_line(&mut self, line: &str) -> Result<Option<Record>, HeaderError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.line += 1;
        let mut line = line.strip_suffix('\n').unwrap_or(line);
        line = line.strip_suffix('\r').unwrap_or(line);
        if self.line == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let t = trim(line);
        if t.is_empty() || t.starts_with('#') {
            return Ok(None);
        }
        let Some(header) = &self.header else {
            return match Header::parse(line) {
                Ok(h) => {
                    self.header = Some(h);
                    Ok(None)
                }
                Err(kind) => {
                    let e = HeaderError { line: self.line, kind };
                    self.failed = Some(e.clone());
                    Err(e)
                }
            };
        };
        Ok(Some(match parse_fields(header, line) {
            Ok(cmd) => {
                self.accepted += 1;
                Record::Command { line: self.line, cmd: Command { seq: self.accepted, ..cmd } }
            }
            Err(kind) => Record::Malformed(ParseError { line: self.line, kind }),
        }))
    }

    /// Call at the end of input: an error if no header was ever read.
    pub fn finish(&self) -> Result<(), HeaderError> {
        match (&self.failed, &self.header) {
            (Some(e), _) => Err(e.clone()),
            (None, None) => Err(HeaderError { line: self.line, kind: HeaderErrorKind::Missing }),
            (None, Some(_)) => Ok(()),
        }
    }
}

/// Parses one data line against `header` into a command with `seq` 0.
fn parse_fields(header: &Header, line: &str) -> Result<Command, ParseErrorKind> {
    let n = header.columns.len();
    let mut by_pos: [&str; 10] = [""; 10];
    let mut found = 0;
    for f in line.split(',') {
        if found < n {
            by_pos[found] = trim(f);
        }
        found += 1;
    }
    if found != n {
        return Err(ParseErrorKind::FieldCount { expected: n, found });
    }
    let field = |c: Column| header.position[c.index()].map_or("", |p| by_pos[p]);

    let action_s = field(Column::Action);
    if action_s.is_empty() {
        return Err(ParseErrorKind::MissingField(Column::Action));
    }
    let action = Action::from_name(action_s).ok_or_else(|| ParseErrorKind::UnknownAction(action_s.to_string()))?;
    for &c in &Column::ALL {
        if !action.uses(c) && !field(c).is_empty() {
            return Err(ParseErrorKind::UnusedField(c, action));
        }
    }
    let required = |c: Column| {
        let s = field(c);
        if s.is_empty() {
            Err(ParseErrorKind::MissingField(c))
        } else {
            Ok(s)
        }
    };
    let opt = |c: Column| Some(field(c)).filter(|s| !s.is_empty());
    let u64_of = |c: Column, s: &str| parse_num(c, s, false).map(|v| v as u64);
    let u32_of = |c: Column, s: &str| {
        let v = parse_num(c, s, false)?;
        u32::try_from(v).map_err(|_| ParseErrorKind::OutOfRange(c, s.to_string()))
    };
    let price_of = |s: &str| {
        let v = parse_num(Column::Price, s, true)?;
        i64::try_from(v).map_err(|_| ParseErrorKind::OutOfRange(Column::Price, s.to_string()))
    };

    let account = u32_of(Column::Account, required(Column::Account)?)?;
    let ts_ns = match opt(Column::TsNs) {
        Some(s) => u64_of(Column::TsNs, s)?,
        None => 0,
    };
    let cmd = match action {
        Action::New => {
            let instrument = u32_of(Column::Instrument, required(Column::Instrument)?)?;
            let order_id = u64_of(Column::OrderId, required(Column::OrderId)?)?;
            let side_s = required(Column::Side)?;
            let side = Side::ALL
                .iter()
                .copied()
                .find(|s| s.name() == side_s)
                .ok_or_else(|| ParseErrorKind::UnknownSide(side_s.to_string()))?;
            let type_s = required(Column::Type)?;
            let order_type = OrderType::ALL
                .iter()
                .copied()
                .find(|t| t.name() == type_s)
                .ok_or_else(|| ParseErrorKind::UnknownType(type_s.to_string()))?;
            let price = match (opt(Column::Price), order_type) {
                (Some(s), _) => Some(price_of(s)?),
                (None, OrderType::Market) => None,
                (None, _) => return Err(ParseErrorKind::MissingField(Column::Price)),
            };
            let qty = u64_of(Column::Qty, required(Column::Qty)?)?;
            let stp = match opt(Column::Stp) {
                Some(s) => Some(
                    StpMode::ALL
                        .iter()
                        .copied()
                        .find(|m| m.name() == s)
                        .ok_or_else(|| ParseErrorKind::UnknownStp(s.to_string()))?,
                ),
                None => None,
            };
            Command::new_order(account, instrument, order_id, side, order_type, price, qty, stp)
        }
        Action::Cancel => {
            let instrument = u32_of(Column::Instrument, required(Column::Instrument)?)?;
            let order_id = u64_of(Column::OrderId, required(Column::OrderId)?)?;
            Command::cancel(account, instrument, order_id)
        }
        Action::Replace => {
            let instrument = u32_of(Column::Instrument, required(Column::Instrument)?)?;
            let order_id = u64_of(Column::OrderId, required(Column::OrderId)?)?;
            let price = opt(Column::Price).map(price_of).transpose()?;
            let qty = u64_of(Column::Qty, required(Column::Qty)?)?;
            Command::replace(account, instrument, order_id, price, qty)
        }
        Action::MassCancel => {
            let instrument = match opt(Column::Instrument) {
                Some(s) => Some(u32_of(Column::Instrument, s)?).filter(|&i| i != 0),
                None => None,
            };
            Command::mass_cancel(account, instrument, CancelReason::MassCancel)
        }
    };
    Ok(cmd.with_seq(0, ts_ns))
}

/// Strict decimal: optional `-` (only if `signed`), then ASCII digits, nothing else. The result
/// is in i128 so both u64 and i64 ranges are checked by the caller.
fn parse_num(col: Column, s: &str, signed: bool) -> Result<i128, ParseErrorKind> {
    let b = s.as_bytes();
    let (neg, digits) = match b.first() {
        Some(b'-') if signed => (true, &b[1..]),
        _ => (false, b),
    };
    if !digits.first().is_some_and(u8::is_ascii_digit) {
        return Err(ParseErrorKind::BadNumber(col, s.to_string()));
    }
    let mut v: i128 = 0;
    for (i, &c) in digits.iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(ParseErrorKind::TrailingGarbage(col, s.to_string()));
        }
        v = v * 10 + (c - b'0') as i128;
        if v > u64::MAX as i128 + 1 {
            // Keep scanning for garbage first so "99999999999999999999x" reports the garbage.
            if digits[i..].iter().all(u8::is_ascii_digit) {
                return Err(ParseErrorKind::OutOfRange(col, s.to_string()));
            }
            return Err(ParseErrorKind::TrailingGarbage(col, s.to_string()));
        }
    }
    let v = if neg { -v } else { v };
    if !signed && v > u64::MAX as i128 {
        return Err(ParseErrorKind::OutOfRange(col, s.to_string()));
    }
    Ok(v)
}

/// Parses a whole order file held in memory: every data line's record, in order.
pub fn parse_str(text: &str) -> Result<Vec<Record>, HeaderError> {
    let mut p = Parser::new();
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(r) = p.push_line(line)? {
            out.push(r);
        }
    }
    p.finish()?;
    Ok(out)
}

/// Error of a [`Reader`]: reading failed, or the header is unusable.
#[derive(Debug)]
pub enum ReadError {
    /// The underlying reader failed.
    Io(io::Error),
    /// The header is missing or invalid.
    Header(HeaderError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "read error: {e}"),
            ReadError::Header(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Iterator over the records of an order file read from a [`BufRead`]. Yields `Err` once (an I/O
/// error or an unusable or missing header) and then ends.
pub struct Reader<R> {
    input: R,
    parser: Parser,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    /// Reads from `input`.
    pub fn new(input: R) -> Reader<R> {
        Reader { input, parser: Parser::new(), buf: Vec::new(), done: false }
    }

    /// The parser (line count, header).
    pub fn parser(&self) -> &Parser {
        &self.parser
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Io(e)));
                }
                Ok(0) => {
                    self.done = true;
                    return self.parser.finish().err().map(|e| Err(ReadError::Header(e)));
                }
                Ok(_) => match self.parser.push_bytes(&self.buf) {
                    Ok(Some(r)) => return Some(Ok(r)),
                    Ok(None) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(ReadError::Header(e)));
                    }
                },
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Why a command has no order file line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Only new, cancel, replace and mass_cancel have a line (the `kind` value is given).
    UnsupportedKind(u8),
    /// `side` is not a [`Side`] (new order).
    InvalidSide(u8),
    /// `order_type` is not an [`OrderType`] (new order).
    InvalidOrderType(u8),
    /// `stp` is neither 0 nor an [`StpMode`] (new order).
    InvalidStp(u8),
    /// The command names an STP mode but the writer has no `stp` column.
    NoStpColumn,
    /// A limit order without price (the parser requires one).
    LimitWithoutPrice,
    /// A mass cancel whose reason is not `mass_cancel` (the file has no reason column).
    MassCancelReason(u8),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::UnsupportedKind(k) => {
                write!(f, "command kind {k} has no order file action (only new, cancel, replace, mass_cancel)")
            }
            WriteError::InvalidSide(v) => write!(f, "invalid side value {v}"),
            WriteError::InvalidOrderType(v) => write!(f, "invalid order type value {v}"),
            WriteError::InvalidStp(v) => write!(f, "invalid stp value {v}"),
            WriteError::NoStpColumn => write!(f, "order names an stp mode but the file has no stp column"),
            WriteError::LimitWithoutPrice => write!(f, "limit order without a price"),
            WriteError::MassCancelReason(r) => {
                write!(f, "mass cancel reason {r} cannot be written (the file only has reason mass_cancel)")
            }
        }
    }
}

impl std::error::Error for WriteError {}

/// Writes commands as order file lines, with the eight required columns and, if chosen, `stp`
/// and `ts_ns` (in that order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    stp: bool,
    ts_ns: bool,
}

impl Writer {
    /// A writer with the optional `stp` and/or `ts_ns` columns. Without `ts_ns`, commands'
    /// timestamps are not written (they read back as 0).
    pub fn new(stp: bool, ts_ns: bool) -> Writer {
        Writer { stp, ts_ns }
    }

    /// The header line, with its `\n`.
    pub fn header(&self) -> String {
        let mut s = Column::REQUIRED.iter().map(|c| c.name()).collect::<Vec<_>>().join(",");
        if self.stp {
            s.push_str(",stp");
        }
        if self.ts_ns {
            s.push_str(",ts_ns");
        }
        s.push('\n');
        s
    }

    /// The line (with its `\n`) of one command.
    pub fn line(&self, cmd: &Command) -> Result<String, WriteError> {
        let mut s = String::with_capacity(64);
        self.write(cmd, &mut s)?;
        Ok(s)
    }

    /// Appends the line (with its `\n`) of one command to `out`. Nothing is written on error.
    /// Fields the command's kind does not use are not written.
    pub fn write<W: fmt::Write>(&self, cmd: &Command, out: &mut W) -> Result<(), WriteError> {
        use fmt::Write as _;
        let kind = CommandKind::from_u8(cmd.kind).ok_or(WriteError::UnsupportedKind(cmd.kind))?;
        let price = (cmd.flags & CMD_HAS_PRICE != 0).then_some(cmd.price);
        let mut s = String::with_capacity(64);
        let mut stp_s = "";
        match kind {
            CommandKind::New => {
                let side = Side::from_u8(cmd.side).ok_or(WriteError::InvalidSide(cmd.side))?;
                let ty = OrderType::from_u8(cmd.order_type).ok_or(WriteError::InvalidOrderType(cmd.order_type))?;
                if cmd.stp != 0 {
                    stp_s = StpMode::from_u8(cmd.stp).ok_or(WriteError::InvalidStp(cmd.stp))?.name();
                    if !self.stp {
                        return Err(WriteError::NoStpColumn);
                    }
                }
                if price.is_none() && ty != OrderType::Market {
                    return Err(WriteError::LimitWithoutPrice);
                }
                let _ = write!(
                    s,
                    "new,{},{},{},{},{},{},{}",
                    cmd.account,
                    cmd.instrument,
                    cmd.order_id,
                    side.name(),
                    ty.name(),
                    OptNum(price),
                    cmd.qty
                );
            }
            CommandKind::Cancel => {
                let _ = write!(s, "cancel,{},{},{},,,,", cmd.account, cmd.instrument, cmd.order_id);
            }
            CommandKind::Replace => {
                let _ = write!(
                    s,
                    "replace,{},{},{},,,{},{}",
                    cmd.account,
                    cmd.instrument,
                    cmd.order_id,
                    OptNum(price),
                    cmd.qty
                );
            }
            CommandKind::MassCancel => {
                if cmd.reason != 0 && cmd.reason != CancelReason::MassCancel as u8 {
                    return Err(WriteError::MassCancelReason(cmd.reason));
                }
                let inst = (cmd.instrument != 0).then_some(cmd.instrument);
                let _ = write!(s, "mass_cancel,{},{},,,,,", cmd.account, OptNum(inst));
            }
            CommandKind::Halt | CommandKind::Resume => return Err(WriteError::UnsupportedKind(cmd.kind)),
        }
        if self.stp {
            s.push(',');
            s.push_str(stp_s);
        }
        if self.ts_ns {
            let _ = write!(s, ",{}", cmd.ts_ns);
        }
        s.push('\n');
        let _ = out.write_str(&s);
        Ok(())
    }
}

/// Formats `Some(v)` as `v` and `None` as nothing.
struct OptNum<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OptNum<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}
