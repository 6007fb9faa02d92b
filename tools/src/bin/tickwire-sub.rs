//! tickwire-sub: subscribes to a Tickwire market-data feed (docs/market-data.md), keeps a local
//! book per instrument from snapshot + deltas, checks every sequence and checksum, and prints
//! book tops, trades and statistics. On a gap or checksum failure it sends Resume(last good seq).
//!
//! ```sh
//! tickwire-sub --instruments 1,2 --duration 10     (default URL: the `tickwire serve` feed)
//! ```

use clap::Parser;
use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tickwire_core::Side;
use tickwire_protocol::md::sync::{Applied, InstrumentSync, SyncError};
use tickwire_protocol::md::{ClientMsg, ErrorCode, ServerMsg};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

#[derive(Parser, Debug)]
#[command(name = "tickwire-sub", about = "Tickwire market-data subscriber and checker")]
struct Args {
    /// Feed URL.
    #[arg(long, default_value = "ws://127.0.0.1:9002/md")]
    url: String,
    /// Instruments to subscribe to (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    instruments: Vec<u32>,
    /// Stop after this many sequenced messages (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Print every trade.
    #[arg(long)]
    trades: bool,
    /// Print the book top after every update.
    #[arg(long)]
    book: bool,
    /// Levels shown by --book.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Seconds between statistics lines (0: only at the end).
    #[arg(long, default_value_t = 1)]
    stats_every: u64,
    /// Exit with status 2 if any gap or checksum failure was seen.
    #[arg(long)]
    strict: bool,
    /// File holding the feed's read key (its first line that is neither blank nor a `#`
    /// comment), for a feed that requires one; sent as the WebSocket subprotocol
    /// `tickwire-key.KEY`, so it shows neither in `ps` nor in the URL.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Stats {
    msgs: u64,
    sequenced: u64,
    bytes: u64,
    snapshots: u64,
    trades: u64,
    gaps: u64,
    crc_failures: u64,
    resumes: u64,
    errors: u64,
    heartbeats: u64,
    /// Engine timestamp → receive latency (ns), when the clocks are comparable (same host).
    lat_sum: u128,
    lat_n: u64,
    lat_max: u64,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn main() {
    let a = Args::parse();
    match run(&a) {
        Ok(st) => {
            if a.strict && (st.gaps > 0 || st.crc_failures > 0) {
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("tickwire-sub: {e}");
            std::process::exit(1);
        }
    }
}

fn host_port(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs are supported")?;
    Ok(rest.split(['/', '?']).next().unwrap_or(rest).to_string())
}

/// The first line of `path` that is neither blank nor a `#` comment, trimmed.
fn read_key(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--key-file {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("--key-file {}: no key in it", path.display()))
}

fn run(a: &Args) -> Result<Stats, Box<dyn std::error::Error>> {
    // The request first: a bad URL or key file is reported before anything is connected.
    let mut req = a.url.as_str().into_client_request()?;
    if let Some(p) = &a.key_file {
        let proto = format!("tickwire-key.{}", read_key(p)?);
        req.headers_mut().insert("Sec-WebSocket-Protocol", proto.parse()?);
    }
    let stream = TcpStream::connect(host_port(&a.url)?)?;
    stream.set_nodelay(true)?;
    // The handshake gets 10 s; after it, reads time out every 200 ms so the loop can check its
    // duration and print statistics.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (mut ws, _) = tungstenite::client(req, stream)?;
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
    for &i in &a.instruments {
        send(&mut ws, ClientMsg::Subscribe { instrument: i })?;
    }
    let mut books: HashMap<u32, InstrumentSync> = a.instruments.iter().map(|&i| (i, InstrumentSync::new())).collect();
    let mut st = Stats::default();
    let start = Instant::now();
    let mut last_print = Instant::now();
    let mut last_msgs = 0u64;
    loop {
        if a.duration > 0 && start.elapsed() >= Duration::from_secs(a.duration) {
            break;
        }
        if a.count > 0 && st.sequenced >= a.count {
            break;
        }
        if a.stats_every > 0 && last_print.elapsed() >= Duration::from_secs(a.stats_every) {
            let rate = (st.msgs - last_msgs) as f64 / last_print.elapsed().as_secs_f64();
            print_stats(&st, rate);
            last_print = Instant::now();
            last_msgs = st.msgs;
        }
        let m = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                continue
            }
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(e.into()),
        };
        let Message::Binary(b) = m else {
            if let Message::Close(f) = m {
                eprintln!("tickwire-sub: server closed: {f:?}");
                break;
            }
            continue;
        };
        st.msgs += 1;
        st.bytes += b.len() as u64;
        let msg = match ServerMsg::decode(&b) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("tickwire-sub: undecodable message ({e:?}), type {}", b.first().copied().unwrap_or(0));
                continue;
            }
        };
        match msg {
            ServerMsg::Heartbeat(_) => st.heartbeats += 1,
            ServerMsg::Error(e) => {
                st.errors += 1;
                eprintln!("tickwire-sub: error {:?} ({}) instrument {} detail {}", ErrorCode::from_u16(e.code), e.code, e.instrument, e.detail);
            }
            _ => {}
        }
        let inst = msg.instrument();
        let Some(sync) = books.get_mut(&inst) else { continue };
        if let ServerMsg::Trade(t) = msg {
            st.trades += 1;
            let now = now_ns();
            if t.ts_ns > 0 && now >= t.ts_ns && now - t.ts_ns < 60_000_000_000 {
                let l = now - t.ts_ns;
                st.lat_sum += l as u128;
                st.lat_n += 1;
                st.lat_max = st.lat_max.max(l);
            }
            if a.trades {
                println!("trade {} #{} {:?} {} @ {}", inst, t.trade_id, t.aggressor, t.qty, t.price);
            }
        }
        match sync.apply(&msg) {
            Ok(Applied::Snapshot) => st.snapshots += 1,
            Ok(Applied::Update) => st.sequenced += 1,
            Ok(_) => {}
            Err(e) => {
                match e {
                    SyncError::Gap { .. } | SyncError::NoSnapshot => st.gaps += 1,
                    SyncError::Checksum { .. } => st.crc_failures += 1,
                }
                eprintln!("tickwire-sub: instrument {inst}: {e:?}; resuming");
                st.resumes += 1;
                let m = match sync.last_good {
                    Some(s) => ClientMsg::Resume { instrument: inst, last_seq: s },
                    None => ClientMsg::Resume { instrument: inst, last_seq: u64::MAX },
                };
                send(&mut ws, m)?;
                continue;
            }
        }
        if a.book && matches!(msg, ServerMsg::Snapshot(_) | ServerMsg::DeltaBatch(_)) {
            let fmt = |side| {
                sync.book.levels(side).take(a.depth).map(|l| format!("{}x{}", l.qty, l.price)).collect::<Vec<_>>().join(" ")
            };
            println!(
                "book {inst} seq {} | bid {} | ask {}{}",
                sync.seq.unwrap_or(0),
                fmt(Side::Buy),
                fmt(Side::Sell),
                if sync.book.halted { " (halted)" } else { "" }
            );
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    print_stats(&st, st.msgs as f64 / secs);
    for (&i, s) in &books {
        let top = |side| s.book.best(side).map(|l| format!("{}x{}", l.qty, l.price)).unwrap_or_else(|| "-".into());
        println!("final {i} seq {} bid {} ask {} crc {:08x}", s.seq.unwrap_or(0), top(Side::Buy), top(Side::Sell), s.book.crc());
    }
    let _ = ws.close(None);
    Ok(st)
}

#[allow(clippy::result_large_err)]
fn send(ws: &mut WebSocket<TcpStream>, m: ClientMsg) -> Result<(), tungstenite::Error> {
    ws.send(Message::Binary(m.to_vec().into()))
}

fn print_stats(st: &Stats, rate: f64) {
    let lat = if st.lat_n > 0 {
        format!(" latency avg {:.1} us max {:.1} us", st.lat_sum as f64 / st.lat_n as f64 / 1e3, st.lat_max as f64 / 1e3)
    } else {
        String::new()
    };
    println!(
        "stats msgs {} ({:.0}/s) sequenced {} bytes {} snapshots {} trades {} gaps {} crc_failures {} resumes {} errors {} heartbeats {}{}",
        st.msgs, rate, st.sequenced, st.bytes, st.snapshots, st.trades, st.gaps, st.crc_failures, st.resumes, st.errors, st.heartbeats, lat
    );
}
