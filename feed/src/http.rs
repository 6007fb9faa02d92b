//! The HTTP side of the feed's port, sans IO: a request that is not a WebSocket upgrade is
//! answered here, once, and the connection is closed (`Connection: close`).
//!
//! - `GET /snapshot?instrument=ID[&depth=N]`: the instrument's book (N levels per side, default
//!   and maximum [`MAX_DEPTH`]).
//! - `GET /candles?instrument=ID&interval=1s|1m[&from=NS][&to=NS]`: the candles kept in memory with
//!   `from <= start_ns < to` (defaults: everything), oldest first; the bucket still open comes last
//!   with `"closed": false`.
//! - `GET /stats`: the counters of the shard that answered, one JSON object of integers
//!   (`HubStats`) led by `pid` and `shard`, which name it: with several shards on a port,
//!   SO_REUSEPORT picks the shard; a process's total is `Feed::stats()`.
//!
//! Errors are JSON `{"error": CODE, "detail": TEXT}` with 400 (bad parameter), 404 (unknown path or
//! instrument), 405 (method other than GET), 431 (request over the size limit). The texts are
//! fixed strings: nothing the client sent is echoed, so no escaping is needed. Work per request
//! is bounded: the request is at most `HubConfig::max_handshake` bytes, a snapshot at most
//! [`MAX_DEPTH`] levels per side, a candle answer at most the history size plus one.

use std::fmt::Write as _;
use tickwire_core::engine::Level;
use tickwire_core::InstrumentId;
use tickwire_protocol::md::CandleInterval;

use super::candles::Bar;

/// Most levels per side a `/snapshot` answer carries (`depth` is clamped to it).
pub const MAX_DEPTH: usize = 1000;

/// What a valid request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /snapshot`.
    Snapshot {
        /// Instrument.
        instrument: InstrumentId,
        /// Levels per side (1..=[`MAX_DEPTH`]).
        depth: usize,
    },
    /// `GET /candles`.
    Candles {
        /// Instrument.
        instrument: InstrumentId,
        /// Interval.
        interval: CandleInterval,
        /// Smallest start_ns.
        from: u64,
        /// Start_ns bound (exclusive).
        to: u64,
    },
    /// `GET /stats`.
    Stats,
}

/// A whole response: status line, headers, JSON body.
pub fn response(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An error response with a JSON body (`code` and `detail` are fixed strings of this crate).
pub fn error(status: &str, code: &str, detail: &str) -> Vec<u8> {
    response(status, "", &format!("{{\"error\":\"{code}\",\"detail\":\"{detail}\"}}"))
}

/// 400 with `detail`.
pub fn bad_request(detail: &str) -> Vec<u8> {
    error("400 Bad Request", "bad_parameter", detail)
}

/// 404 for an instrument this feed does not serve.
pub fn unknown_instrument() -> Vec<u8> {
    error("404 Not Found", "unknown_instrument", "instrument not served by this feed")
}

/// 431: the request is over the size limit.
pub fn too_large() -> Vec<u8> {
    error("431 Request Header Fields Too Large", "request_too_large", "request over the size limit")
}

fn parse_u64(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses the method and request target; `Err` is the response to send.
pub fn route(method: &str, target: &str) -> Result<Route, Vec<u8>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let snapshot = match path {
        "/snapshot" => true,
        "/candles" | "/stats" => false,
        _ => return Err(error("404 Not Found", "not_found", "paths: /snapshot, /candles, /stats")),
    };
    if method != "GET" {
        return Err(response(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "{\"error\":\"method_not_allowed\",\"detail\":\"only GET\"}",
        ));
    }
    if path == "/stats" {
        // Parameters are ignored, like unknown ones elsewhere.
        return Ok(Route::Stats);
    }
    let (mut instrument, mut depth, mut interval, mut from, mut to) = (None, None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else { return Err(bad_request("parameter without a value")) };
        let slot = match k {
            "instrument" => &mut instrument,
            "depth" if snapshot => &mut depth,
            "interval" if !snapshot => &mut interval,
            "from" if !snapshot => &mut from,
            "to" if !snapshot => &mut to,
            _ => continue, // unknown parameters are ignored
        };
        if slot.is_some() {
            return Err(bad_request("parameter given twice"));
        }
        *slot = Some(v);
    }
    let instrument = match instrument {
        None => return Err(bad_request("instrument is required")),
        Some(v) => match parse_u64(v).and_then(|n| InstrumentId::try_from(n).ok()) {
            Some(i) => i,
            None => return Err(bad_request("instrument must be a u32")),
        },
    };
    if snapshot {
        let depth = match depth {
            None => MAX_DEPTH,
            Some(v) => match parse_u64(v) {
                Some(d) if d >= 1 => (d.min(MAX_DEPTH as u64)) as usize,
                _ => return Err(bad_request("depth must be an integer >= 1")),
            },
        };
        return Ok(Route::Snapshot { instrument, depth });
    }
    let interval = match interval {
        Some("1s") => CandleInterval::Sec1,
        Some("1m") => CandleInterval::Min1,
        None => return Err(bad_request("interval is required (1s or 1m)")),
        Some(_) => return Err(bad_request("interval must be 1s or 1m")),
    };
    let bound = |v: Option<&str>, default: u64| match v {
        None => Ok(default),
        Some(v) => parse_u64(v).ok_or_else(|| bad_request("from and to must be u64 nanoseconds")),
    };
    let from = bound(from, 0)?;
    let to = bound(to, u64::MAX)?;
    if from > to {
        return Err(bad_request("from must not be after to"));
    }
    Ok(Route::Candles { instrument, interval, from, to })
}

fn levels_json(out: &mut String, ls: &[Level]) {
    out.push('[');
    for (k, l) in ls.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"price\":{},\"qty\":{},\"orders\":{}}}", l.price, l.qty, l.orders);
    }
    out.push(']');
}

/// The `/snapshot` body.
pub fn snapshot_json(
    instrument: InstrumentId,
    seq: u64,
    halted: bool,
    crc: u32,
    bids: &[Level],
    asks: &[Level],
) -> String {
    let mut s = String::with_capacity(128 + 64 * (bids.len() + asks.len()));
    let _ = write!(s, "{{\"instrument\":{instrument},\"seq\":{seq},\"halted\":{halted},\"crc\":{crc},\"bids\":");
    levels_json(&mut s, bids);
    s.push_str(",\"asks\":");
    levels_json(&mut s, asks);
    s.push('}');
    s
}

/// The `/stats` body: `{"name":value,...}` in the given order.
pub fn stats_json(fields: &[(&'static str, u64)]) -> String {
    let mut s = String::with_capacity(32 * fields.len());
    s.push('{');
    for (k, (name, v)) in fields.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{name}\":{v}");
    }
    s.push('}');
    s
}

/// The `/candles` body.
pub fn candles_json(
    instrument: InstrumentId,
    interval: CandleInterval,
    from: u64,
    to: u64,
    bars: impl Iterator<Item = (Bar, bool)>,
) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{{\"instrument\":{instrument},\"interval\":\"{}\",\"from\":{from},\"to\":{to},\"candles\":[",
        interval.name()
    );
    for (k, (b, closed)) in bars.enumerate() {
        if k > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"start_ns\":{},\"open\":{},\"high\":{},\"low\":{},\"close\":{},\"volume\":{},\"trades\":{},\"closed\":{}}}",
            b.start_ns, b.open, b.high, b.low, b.close, b.volume, b.trades, closed
        );
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/snapshot?instrument=3"), Ok(Route::Snapshot { instrument: 3, depth: MAX_DEPTH }));
        assert_eq!(route("GET", "/snapshot?depth=5&instrument=3&x=y"), Ok(Route::Snapshot { instrument: 3, depth: 5 }));
        assert_eq!(
            route("GET", "/candles?instrument=1&interval=1m&from=10&to=20"),
            Ok(Route::Candles { instrument: 1, interval: CandleInterval::Min1, from: 10, to: 20 })
        );
        let status = |r: Result<Route, Vec<u8>>| String::from_utf8(r.unwrap_err()).unwrap()[9..12].to_string();
        assert_eq!(status(route("POST", "/snapshot?instrument=3")), "405");
        assert_eq!(status(route("GET", "/nope")), "404");
        assert_eq!(route("GET", "/stats"), Ok(Route::Stats));
        assert_eq!(route("GET", "/stats?x=1"), Ok(Route::Stats));
        assert_eq!(status(route("POST", "/stats")), "405");
        assert_eq!(stats_json(&[("a", 1), ("b", 22)]), "{\"a\":1,\"b\":22}");
        assert_eq!(status(route("GET", "/snapshot")), "400");
        assert_eq!(status(route("GET", "/snapshot?instrument=-1")), "400");
        assert_eq!(status(route("GET", "/snapshot?instrument=4294967296")), "400");
        assert_eq!(status(route("GET", "/snapshot?instrument=1&depth=0")), "400");
        assert_eq!(status(route("GET", "/snapshot?instrument=1&instrument=2")), "400");
        assert_eq!(status(route("GET", "/candles?instrument=1")), "400");
        assert_eq!(status(route("GET", "/candles?instrument=1&interval=5m")), "400");
        assert_eq!(status(route("GET", "/candles?instrument=1&interval=1s&from=9&to=3")), "400");
        assert_eq!(status(route("GET", "/candles?instrument=1&interval=1s&from")), "400");
    }
}
