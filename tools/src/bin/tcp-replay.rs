//! `tcp-replay`: replays an order file (docs/orderfile.md, or a journal exported with
//! `tickwire-journal export`) over TCP against a running gateway (docs/protocol.md) and measures
//! every command's ack latency.
//!
//! ```text
//! tcp-replay --orders FILE --to 127.0.0.1:9001                   recorded pace (ts_ns) or as fast as possible
//! tcp-replay --orders FILE --speed 10                            recorded pace, 10x faster
//! tcp-replay --orders FILE --rate 200000                         fixed rate, commands/s over all sessions
//! tcp-replay --orders FILE --keys tickwire.toml --json           keys of a server configuration
//! tcp-replay --orders FILE --key 5 --secret 00ff.. --accounts 1,2   keys from flags (repeatable)
//! ```
//!
//! - **Sessions.** One session (connection) per API key. Each file account goes to the first
//!   trade key listing it, else to the keys given without `--accounts` (and admin keys of a
//!   `--keys` file), spread by account. Without keys: the server's demo trade keys (id 1 →
//!   account 1, id 3 → account 2, docs/server.md); other accounts then go to key 1 and are
//!   rejected `not_authorised` by the server (counted, with a warning).
//! - **Open loop.** Per session a sender thread writes each command at its *intended* time
//!   (from the file's `ts_ns`, `--speed`, or `--rate`), whatever the answers, and a receiver
//!   thread reads the reports. A slow server shows as latency, not as a slower sender. As fast
//!   as possible (`--afap`, the default without `ts_ns`), the intended time is the send time.
//! - **Latency** of a command = intended send time → the report that answers it (NewOrder:
//!   accepted/rejected; Cancel: cancelled by user/rejected; Replace: replaced/rejected;
//!   MassCancel: mass_cancelled/rejected), matched by account + client order id in send order,
//!   into an HDR histogram.
//! - **Checks.** Every command must be answered exactly once and every session's report
//!   sequence (`session_seq`) must be gapless: lost and duplicated answers/reports are counted
//!   (and make the exit status 3).

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tickwire_core::orderfile::{ReadError, Reader, Record};
use tickwire_core::{CancelReason, CommandKind, RejectReason};
use tickwire_protocol::{
    Cancel, ClientMsg, Decoded, ExecReport, ExecType, Heartbeat, Logon, Logout, MassCancel,
    NewOrder, Replace, ServerMsg, EXEC_GATEWAY, EXEC_MAKER, MAX_FRAME,
};

/// Intended times start this long after the sessions are up.
const START_DELAY_NS: u64 = 20_000_000;

const DEMO_KEYS: [(u64, &str, u32); 2] = [(1, "tickwire-demo-trade-secret", 1), (3, "tickwire-demo-trade2-secret", 2)];

#[derive(Parser, Debug)]
#[command(
    name = "tcp-replay",
    about = "Replay an order file over TCP against a Tickwire gateway and measure ack latency (open loop)",
    after_help = "PACING: recorded (the file's ts_ns column, scaled by --speed) when the file has non-zero ts_ns, \
else as fast as possible; --rate R sends at R commands/s in file order (all sessions together); \
--afap ignores ts_ns.\n\
KEYS: --keys FILE (a server TOML configuration: its trade and admin [[keys]]), or --key/--secret[/--accounts] \
repeated, or by default the demo trade keys of `tickwire serve` (1: account 1, 3: account 2).\n\
EXIT STATUS: 0 ok; 1 error (unreachable server, bad file, logon refused); 3 lost or duplicated reports."
)]
struct Args {
    /// Order CSV file (docs/orderfile.md), or a journal export (`tickwire-journal export`).
    #[arg(long)]
    orders: PathBuf,
    /// Gateway order-entry address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    to: String,
    /// API key id (repeatable; the i-th --secret and --accounts belong to the i-th --key).
    #[arg(long)]
    key: Vec<u64>,
    /// API key secret in hex, or `text:SECRET` for a text secret (repeatable).
    #[arg(long)]
    secret: Vec<String>,
    /// Accounts the i-th key trades, comma-separated; empty string or absent: any account no
    /// other key lists (admin keys).
    #[arg(long)]
    accounts: Vec<String>,
    /// Keys from a server configuration file (TOML; its trade and admin [[keys]]).
    #[arg(long, conflicts_with = "key")]
    keys: Option<PathBuf>,
    /// Recorded pace sped up by this factor (needs ts_ns in the file).
    #[arg(long, conflicts_with_all = ["rate", "afap"])]
    speed: Option<f64>,
    /// Fixed rate: commands per second over all sessions, in file order.
    #[arg(long, conflicts_with = "afap")]
    rate: Option<f64>,
    /// As fast as possible (latency from the actual send time).
    #[arg(long)]
    afap: bool,
    /// Seconds to wait for the last answers once everything is sent.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Heartbeat interval asked for at logon (ms).
    #[arg(long, default_value_t = 10_000)]
    heartbeat_ms: u32,
    /// Print the numbers as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Clone, Debug)]
struct KeySpec {
    id: u64,
    secret: Vec<u8>,
    /// `None`: takes accounts no other key lists.
    accounts: Option<Vec<u32>>,
}

/// One command to send.
#[derive(Clone, Copy, Debug)]
struct Cmd {
    frame: [u8; 40],
    len: u8,
    kind: CommandKind,
    account: u32,
    coid: u64,
    /// Intended send time, ns after the start.
    at_ns: u64,
}

fn main() {
    let a = Args::parse();
    match run(a) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tcp-replay: error: {e}");
            std::process::exit(1);
        }
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 || s.is_empty() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_secret(s: &str) -> Result<Vec<u8>, String> {
    if let Some(t) = s.strip_prefix("text:") {
        return Ok(t.as_bytes().to_vec());
    }
    hex(s).ok_or_else(|| format!("--secret {s:?}: not hex (use text:SECRET for a text secret)"))
}

#[derive(serde::Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<FileKey>,
}

#[derive(serde::Deserialize)]
struct FileKey {
    id: u64,
    role: String,
    secret: Option<String>,
    secret_hex: Option<String>,
    #[serde(default)]
    accounts: Vec<u32>,
}

fn load_keys(a: &Args) -> Result<Vec<KeySpec>, String> {
    if let Some(p) = &a.keys {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        // Only [[keys]] is read; the rest of a server configuration is ignored.
        let v: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let only_keys = toml::Table::from_iter(v.get("keys").map(|k| ("keys".to_string(), k.clone())));
        let f: KeysFile = only_keys.try_into().map_err(|e| format!("{}: [[keys]]: {e}", p.display()))?;
        let mut out = Vec::new();
        for k in f.keys {
            let secret = match (&k.secret, &k.secret_hex) {
                (Some(s), None) => s.as_bytes().to_vec(),
                (None, Some(h)) => hex(h).ok_or_else(|| format!("{}: key {}: bad secret_hex", p.display(), k.id))?,
                _ => return Err(format!("{}: key {}: give one of secret, secret_hex", p.display(), k.id)),
            };
            match k.role.as_str() {
                "trade" => out.push(KeySpec { id: k.id, secret, accounts: Some(k.accounts) }),
                "admin" => out.push(KeySpec { id: k.id, secret, accounts: None }),
                _ => {}
            }
        }
        if out.is_empty() {
            return Err(format!("{}: no trade or admin key in [[keys]]", p.display()));
        }
        return Ok(out);
    }
    if a.key.is_empty() {
        if !a.secret.is_empty() || !a.accounts.is_empty() {
            return Err("--secret/--accounts need --key".into());
        }
        return Ok(DEMO_KEYS
            .iter()
            .map(|&(id, s, acc)| KeySpec { id, secret: s.as_bytes().to_vec(), accounts: Some(vec![acc]) })
            .collect());
    }
    if a.secret.len() != a.key.len() {
        return Err(format!("{} --key but {} --secret: give one secret per key", a.key.len(), a.secret.len()));
    }
    if a.accounts.len() > a.key.len() {
        return Err("more --accounts than --key".into());
    }
    let mut out = Vec::new();
    for (i, &id) in a.key.iter().enumerate() {
        let accounts = match a.accounts.get(i).map(|s| s.trim()) {
            None | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|x| x.trim().parse::<u32>().map_err(|_| format!("--accounts {list:?}: bad account {x:?}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        out.push(KeySpec { id, secret: parse_secret(&a.secret[i])?, accounts });
    }
    Ok(out)
}

/// Reads the file; every malformed line is an error (with its line number).
fn load_orders(path: &PathBuf) -> Result<Vec<tickwire_core::Command>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cmds = Vec::new();
    let mut bad = Vec::new();
    for rec in Reader::new(BufReader::new(f)) {
        match rec {
            Ok(Record::Command { cmd, .. }) => cmds.push(cmd),
            Ok(Record::Malformed(e)) => bad.push(e.to_string()),
            Err(ReadError::Header(e)) => return Err(format!("{}: {e}", path.display())),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if !bad.is_empty() {
        let mut msg = format!("{}: {} malformed line(s):", path.display(), bad.len());
        for b in bad.iter().take(10) {
            msg.push_str("\n  ");
            msg.push_str(b);
        }
        if bad.len() > 10 {
            msg.push_str("\n  …");
        }
        return Err(msg);
    }
    if cmds.is_empty() {
        return Err(format!("{}: no commands", path.display()));
    }
    Ok(cmds)
}

fn encode(c: &tickwire_core::Command) -> Result<([u8; 40], u8, CommandKind), String> {
    let kind = CommandKind::from_u8(c.kind).ok_or("unknown command kind")?;
    let price = (c.flags & tickwire_core::command::CMD_HAS_PRICE != 0).then_some(c.price);
    let m = match kind {
        CommandKind::New => ClientMsg::NewOrder(NewOrder {
            side: c.side,
            order_type: c.order_type,
            stp: c.stp,
            client_order_id: c.order_id,
            account: c.account,
            instrument: c.instrument,
            price,
            qty: c.qty,
        }),
        CommandKind::Cancel => {
            ClientMsg::Cancel(Cancel { account: c.account, client_order_id: c.order_id, instrument: c.instrument })
        }
        CommandKind::Replace => ClientMsg::Replace(Replace {
            client_order_id: c.order_id,
            account: c.account,
            instrument: c.instrument,
            price,
            qty: c.qty,
        }),
        CommandKind::MassCancel => ClientMsg::MassCancel(MassCancel { account: c.account, instrument: c.instrument }),
        k => return Err(format!("command kind {k:?} has no order-entry message")),
    };
    let mut frame = [0u8; 40];
    let n = m.encode(&mut frame).map_err(|_| "frame too large")?;
    Ok((frame, n as u8, kind))
}

fn now_wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What a report answering a command of `kind` looks like.
fn answers(kind: CommandKind, r: &ExecReport) -> bool {
    if r.flags & EXEC_MAKER != 0 {
        return false;
    }
    match r.exec_type {
        ExecType::Rejected => r.cmd_kind == kind as u8,
        ExecType::Accepted => kind == CommandKind::New,
        ExecType::Cancelled => kind == CommandKind::Cancel && r.reason == CancelReason::UserRequested as u8,
        ExecType::Replaced => kind == CommandKind::Replace,
        ExecType::MassCancelled => kind == CommandKind::MassCancel,
        _ => false,
    }
}

/// Whether a report can only be the answer to a command (so one matching no pending command is
/// a duplicate or a stray).
fn is_answer_type(r: &ExecReport) -> bool {
    match r.exec_type {
        ExecType::Rejected | ExecType::Accepted | ExecType::Replaced | ExecType::MassCancelled => true,
        ExecType::Cancelled => r.reason == CancelReason::UserRequested as u8,
        _ => false,
    }
}

#[derive(Default)]
struct SessionResult {
    reports: u64,
    answered: u64,
    lost_reports: u64,
    dup_reports: u64,
    stray_answers: u64,
    rejects: BTreeMap<String, u64>,
    ended: Option<String>,
}

struct Shared {
    /// Actual send time of each command (ns after start; 0 = not sent).
    sent: Vec<AtomicU64>,
    answered: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    stop: AtomicBool,
    afap: bool,
}

struct Session {
    key: KeySpec,
    stream: TcpStream,
    /// Global command indices, in send order.
    cmds: Vec<u32>,
    next_seq: u64,
}

fn logon(addr: SocketAddr, key: &KeySpec, hb_ms: u32) -> Result<(TcpStream, u64), String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
        format!("cannot connect to {addr}: {e} (is the gateway running? e.g. `tickwire serve`, docs/server.md)")
    })?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let nonce = now_wall_ns() ^ (u64::from(std::process::id()) << 32) ^ key.id.rotate_left(17);
    // last_seq_seen = MAX: nothing from earlier sessions is resent; we start at the current end.
    let l = Logon::signed(&key.secret, key.id, now_wall_ns(), nonce, u64::MAX, hb_ms, false);
    let mut w = &s;
    w.write_all(&ClientMsg::Logon(l).encode_to_vec_owned()).map_err(|e| format!("{addr}: logon: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 256];
    loop {
        match ServerMsg::decode(&buf, MAX_FRAME) {
            Decoded::Frame(ServerMsg::LogonAccepted(a), _) => {
                s.set_read_timeout(None).map_err(|e| e.to_string())?;
                return Ok((s, a.last_seq + 1));
            }
            Decoded::Frame(ServerMsg::LogonRejected(r), _) => {
                let why = r.reason.name();
                return Err(format!("{addr}: key {}: logon rejected: {why}", key.id));
            }
            Decoded::Frame(m, _) => return Err(format!("{addr}: key {}: unexpected {:?} before logon", key.id, m.msg_type())),
            Decoded::Error(e) => return Err(format!("{addr}: key {}: bad frame from server: {e:?}", key.id)),
            Decoded::NeedMore(_) => {}
        }
        let n = (&s).read(&mut tmp).map_err(|e| format!("{addr}: key {}: no logon answer: {e}", key.id))?;
        if n == 0 {
            return Err(format!("{addr}: key {}: connection closed during logon", key.id));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

trait EncodeOwned {
    fn encode_to_vec_owned(&self) -> Vec<u8>;
}

impl EncodeOwned for ClientMsg {
    fn encode_to_vec_owned(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_to_vec(&mut v);
        v
    }
}

fn sender(sess: &Session, cmds: &[Cmd], sh: &Shared, t0: Instant, last_seen: &AtomicU64) -> std::io::Result<()> {
    let mut w = &sess.stream;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut i = 0;
    let mut last_write = Instant::now();
    let hb_every = Duration::from_secs(1);
    while i < sess.cmds.len() {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = t0.elapsed().as_nanos() as u64;
        let due = cmds[sess.cmds[i] as usize].at_ns;
        if due > now {
            if last_write.elapsed() >= hb_every {
                let hb = ClientMsg::Heartbeat(Heartbeat { seq: last_seen.load(Ordering::Relaxed) });
                w.write_all(&hb.encode_to_vec_owned())?;
                last_write = Instant::now();
            }
            // Sleep to the next intended time (no spinning: the cores are shared with the
            // server). Commands due meanwhile go out together in one write; the latency still
            // counts from each one's intended time.
            let wait = due - now;
            if wait > 20_000 {
                std::thread::sleep(Duration::from_nanos(wait.min(200_000_000)));
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        buf.clear();
        while i < sess.cmds.len() && buf.len() < 60 * 1024 {
            let g = sess.cmds[i] as usize;
            let c = &cmds[g];
            if c.at_ns > now {
                break;
            }
            buf.extend_from_slice(&c.frame[..c.len as usize]);
            sh.sent[g].store(now.max(1), Ordering::Relaxed);
            i += 1;
        }
        w.write_all(&buf)?;
        last_write = Instant::now();
    }
    // Keep the session alive while the answers drain.
    while !sh.stop.load(Ordering::Relaxed) {
        if last_write.elapsed() >= hb_every {
            let hb = ClientMsg::Heartbeat(Heartbeat { seq: last_seen.load(Ordering::Relaxed) });
            w.write_all(&hb.encode_to_vec_owned())?;
            last_write = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn receiver(sess: &Session, cmds: &[Cmd], sh: &Shared, t0: Instant, last_seen: &AtomicU64) -> SessionResult {
    let mut res = SessionResult::default();
    let mut pending: HashMap<(u32, u64), VecDeque<u32>> = HashMap::new();
    for &g in &sess.cmds {
        let c = &cmds[g as usize];
        let coid = if c.kind == CommandKind::MassCancel { 0 } else { c.coid };
        pending.entry((c.account, coid)).or_default().push_back(g);
    }
    let mut expect = sess.next_seq;
    let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut tmp = vec![0u8; 64 * 1024];
    let mut r = &sess.stream;
    let mut local = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram bounds");
    let mut answered_local = 0u64;
    'outer: loop {
        let n = match r.read(&mut tmp) {
            Ok(0) => {
                if !sh.stop.load(Ordering::Relaxed) {
                    res.ended.get_or_insert_with(|| "connection closed by the server".into());
                }
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if sh.stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            Err(e) => {
                if !sh.stop.load(Ordering::Relaxed) {
                    res.ended.get_or_insert_with(|| format!("read error: {e}"));
                }
                break;
            }
        };
        let now = t0.elapsed().as_nanos() as u64;
        buf.extend_from_slice(&tmp[..n]);
        let mut off = 0;
        loop {
            match ServerMsg::decode(&buf[off..], MAX_FRAME) {
                Decoded::NeedMore(_) => break,
                Decoded::Error(e) => {
                    res.ended = Some(format!("undecodable frame from the server: {e:?}"));
                    break 'outer;
                }
                Decoded::Frame(m, len) => {
                    off += len;
                    match m {
                        ServerMsg::ExecReport(rep) => {
                            res.reports += 1;
                            if rep.session_seq < expect {
                                res.dup_reports += 1;
                                continue;
                            }
                            if rep.session_seq > expect {
                                res.lost_reports += rep.session_seq - expect;
                            }
                            expect = rep.session_seq + 1;
                            last_seen.store(rep.session_seq, Ordering::Relaxed);
                            let coid = if rep.exec_type == ExecType::MassCancelled { 0 } else { rep.client_order_id };
                            let q = pending.get_mut(&(rep.account, coid));
                            let head = q.as_ref().and_then(|q| q.front().copied());
                            match head {
                                Some(g) if answers(cmds[g as usize].kind, &rep) => {
                                    q.expect("head came from it").pop_front();
                                    let sent = sh.sent[g as usize].load(Ordering::Relaxed);
                                    if sent == 0 {
                                        // Answered before we sent it: cannot be ours.
                                        res.stray_answers += 1;
                                        continue;
                                    }
                                    let base = if sh.afap { sent } else { cmds[g as usize].at_ns };
                                    local.saturating_record(now.saturating_sub(base).max(1_000));
                                    answered_local += 1;
                                    res.answered += 1;
                                    if rep.exec_type == ExecType::Rejected {
                                        let name = RejectReason::from_u8(rep.reason).map_or("unknown", |r| r.name());
                                        let who = if rep.flags & EXEC_GATEWAY != 0 { "gateway" } else { "engine" };
                                        *res.rejects.entry(format!("{who}:{name}")).or_default() += 1;
                                    }
                                }
                                _ if is_answer_type(&rep) => res.stray_answers += 1,
                                _ => {}
                            }
                        }
                        ServerMsg::Logout(l) => {
                            if !sh.stop.load(Ordering::Relaxed) {
                                let why = tickwire_protocol::DisconnectReason::from_u8(l.reason).map_or("?", |r| r.name());
                                res.ended = Some(format!("server logged out: {why}"));
                            }
                            break 'outer;
                        }
                        ServerMsg::SessionReject(s) => {
                            let why = s.reason.name();
                            res.ended = Some(format!("session rejected: {why} (message type {})", s.ref_msg_type));
                            break 'outer;
                        }
                        _ => {}
                    }
                }
            }
        }
        buf.drain(..off);
        sh.answered.fetch_add(answered_local, Ordering::Relaxed);
        answered_local = 0;
    }
    sh.answered.fetch_add(answered_local, Ordering::Relaxed);
    if let Ok(mut h) = sh.hist.lock() {
        let _ = h.add(&local);
    }
    res
}

fn run(a: Args) -> Result<i32, String> {
    let keys = load_keys(&a)?;
    let addr = a
        .to
        .to_socket_addrs()
        .map_err(|e| format!("--to {}: {e}", a.to))?
        .next()
        .ok_or_else(|| format!("--to {}: no address", a.to))?;
    let raw = load_orders(&a.orders)?;
    let recorded = raw.iter().any(|c| c.ts_ns != 0);
    let (mode, afap) = match (a.rate, a.speed, a.afap) {
        (Some(r), _, _) if r > 0.0 => (format!("rate {r} commands/s"), false),
        (Some(r), _, _) => return Err(format!("--rate {r}: must be > 0")),
        (None, Some(s), _) if s <= 0.0 => return Err(format!("--speed {s}: must be > 0")),
        (None, Some(_), _) if !recorded => return Err("--speed needs a ts_ns column with values in the file".into()),
        (None, Some(s), _) => (format!("recorded x{s}"), false),
        (None, None, true) => ("as fast as possible".into(), true),
        (None, None, false) if recorded => ("recorded x1".into(), false),
        (None, None, false) => ("as fast as possible (no ts_ns in the file)".into(), true),
    };
    // Intended times.
    let mut cmds = Vec::with_capacity(raw.len());
    let ts0 = raw.iter().map(|c| c.ts_ns).find(|&t| t != 0).unwrap_or(0);
    let mut last_at = 0u64;
    for (i, c) in raw.iter().enumerate() {
        let (frame, len, kind) = encode(c).map_err(|e| format!("command {}: {e}", i + 1))?;
        let at = if afap {
            0
        } else if let Some(r) = a.rate {
            (i as f64 * 1e9 / r) as u64
        } else {
            let s = a.speed.unwrap_or(1.0);
            let t = ((c.ts_ns.max(ts0) - ts0) as f64 / s) as u64;
            t.max(last_at)
        };
        last_at = at;
        let at = at + START_DELAY_NS;
        cmds.push(Cmd { frame, len, kind, account: c.account, coid: c.order_id, at_ns: at });
    }
    // Accounts → keys.
    let mut route: HashMap<u32, usize> = HashMap::new();
    let catch_all: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].accounts.is_none()).collect();
    let mut unmapped = Vec::new();
    for c in &cmds {
        if route.contains_key(&c.account) {
            continue;
        }
        let k = keys
            .iter()
            .position(|k| k.accounts.as_ref().is_some_and(|l| l.contains(&c.account)))
            .or_else(|| (!catch_all.is_empty()).then(|| catch_all[c.account as usize % catch_all.len()]))
            .unwrap_or_else(|| {
                unmapped.push(c.account);
                0
            });
        route.insert(c.account, k);
    }
    if !unmapped.is_empty() {
        unmapped.sort_unstable();
        eprintln!(
            "tcp-replay: warning: no key trades account(s) {unmapped:?}: their commands go to key {} and the server will \
             reject them (not_authorised)",
            keys[0].id
        );
    }
    let mut per_key: Vec<Vec<u32>> = vec![Vec::new(); keys.len()];
    for (g, c) in cmds.iter().enumerate() {
        per_key[route[&c.account]].push(g as u32);
    }
    let mut sessions = Vec::new();
    for (k, list) in keys.iter().zip(per_key) {
        if list.is_empty() {
            continue;
        }
        let (stream, next_seq) = logon(addr, k, a.heartbeat_ms)?;
        sessions.push(Session { key: k.clone(), stream, cmds: list, next_seq });
    }
    let total = cmds.len() as u64;
    let sh = Shared {
        sent: (0..cmds.len()).map(|_| AtomicU64::new(0)).collect(),
        answered: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram bounds")),
        stop: AtomicBool::new(false),
        afap,
    };
    if !a.json {
        eprintln!(
            "tcp-replay: {} commands from {}, {} session(s) to {addr}, pace: {mode}",
            total,
            a.orders.display(),
            sessions.len()
        );
    }
    let bar = if a.no_progress || a.json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} answered ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    };
    let t0 = Instant::now();
    let last_seen: Vec<AtomicU64> = sessions.iter().map(|s| AtomicU64::new(s.next_seq.saturating_sub(1))).collect();
    let send_done = AtomicU64::new(0);
    let mut send_errors = Vec::new();
    let mut results = Vec::new();
    let mut finished_at = Duration::ZERO;
    std::thread::scope(|scope| {
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        for (i, s) in sessions.iter().enumerate() {
            let (sh, cmds, ls, sd) = (&sh, &cmds, &last_seen[i], &send_done);
            tx.push(scope.spawn(move || {
                let r = sender(s, cmds, sh, t0, ls);
                sd.fetch_add(1, Ordering::Relaxed);
                r.map_err(|e| format!("key {}: send: {e}", s.key.id))
            }));
            rx.push(scope.spawn(move || receiver(s, cmds, sh, t0, ls)));
        }
        // Wait: everything answered, or the drain timeout after the last send without progress,
        // or every receiver gone.
        let mut last_progress = Instant::now();
        let mut last_answered = 0;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let ans = sh.answered.load(Ordering::Relaxed);
            bar.set_position(ans);
            if ans != last_answered {
                last_answered = ans;
                last_progress = Instant::now();
            }
            let all_sent = sh.sent.iter().all(|s| s.load(Ordering::Relaxed) != 0);
            if ans >= total && all_sent {
                finished_at = t0.elapsed();
                break;
            }
            if rx.iter().all(|h| h.is_finished()) {
                finished_at = t0.elapsed();
                break;
            }
            if (send_done.load(Ordering::Relaxed) as usize) == sessions.len()
                && last_progress.elapsed().as_secs_f64() > a.drain_timeout
            {
                finished_at = t0.elapsed();
                break;
            }
        }
        sh.stop.store(true, Ordering::Relaxed);
        for s in &sessions {
            let mut w = &s.stream;
            let _ = w.write_all(&ClientMsg::Logout(Logout { reason: 1 }).encode_to_vec_owned());
            let _ = s.stream.set_read_timeout(Some(Duration::from_millis(500)));
        }
        for h in tx {
            if let Ok(Err(e)) = h.join() {
                send_errors.push(e);
            }
        }
        for h in rx {
            results.push(h.join().unwrap_or_default());
        }
    });
    bar.finish_and_clear();
    // Sums.
    let mut rejects: BTreeMap<String, u64> = BTreeMap::new();
    let (mut reports, mut answered, mut lost_reports, mut dup_reports, mut stray) = (0, 0, 0, 0, 0);
    let mut ended = Vec::new();
    for (s, r) in sessions.iter().zip(&results) {
        reports += r.reports;
        answered += r.answered;
        lost_reports += r.lost_reports;
        dup_reports += r.dup_reports;
        stray += r.stray_answers;
        for (k, v) in &r.rejects {
            *rejects.entry(k.clone()).or_default() += v;
        }
        if let Some(e) = &r.ended {
            ended.push(format!("key {}: {e}", s.key.id));
        }
    }
    let unsent = sh.sent.iter().filter(|s| s.load(Ordering::Relaxed) == 0).count() as u64;
    let lost_answers = total - answered.min(total);
    let dup = dup_reports + stray;
    let h = sh.hist.lock().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone());
    let secs = (finished_at.as_secs_f64() - START_DELAY_NS as f64 / 1e9).max(1e-9);
    let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    let send_lag_max = if afap {
        0
    } else {
        cmds.iter()
            .zip(&sh.sent)
            .map(|(c, s)| s.load(Ordering::Relaxed).saturating_sub(c.at_ns))
            .max()
            .unwrap_or(0)
    };
    if a.json {
        let rj: Vec<String> = rejects.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!(
            "{{\"commands\":{total},\"sessions\":{},\"pace\":\"{mode}\",\"answered\":{answered},\"unsent\":{unsent},\
             \"lost\":{},\"duplicated\":{dup},\"lost_reports\":{lost_reports},\"lost_answers\":{lost_answers},\
             \"reports\":{reports},\"elapsed_s\":{secs:.6},\"throughput_per_sec\":{:.1},\
             \"latency_ns\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p99_9\":{},\"max\":{}}},\"send_lag_max_ns\":{send_lag_max},\
             \"rejects\":{{{}}},\"errors\":{}}}",
            sessions.len(),
            lost_reports + lost_answers,
            answered as f64 / secs,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            h.max(),
            rj.join(","),
            json_str_list(ended.iter().chain(&send_errors)),
        );
    } else {
        let us = |v: u64| format!("{:.1} µs", v as f64 / 1e3);
        println!("commands     {total} in {} session(s), pace {mode}", sessions.len());
        println!("answered     {answered} in {secs:.3} s ({:.0} commands/s), {reports} reports", answered as f64 / secs);
        println!(
            "latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (intended send → answer)",
            us(q(0.5)),
            us(q(0.9)),
            us(q(0.99)),
            us(q(0.999)),
            us(h.max())
        );
        if !afap {
            println!("send lag     max {} behind the intended times", us(send_lag_max));
        }
        println!(
            "lost         {} (unanswered commands {lost_answers}, report sequence gaps {lost_reports}), unsent {unsent}",
            lost_reports + lost_answers
        );
        println!("duplicated   {dup} (repeated session_seq {dup_reports}, answers matching no pending command {stray})");
        if rejects.is_empty() {
            println!("rejects      0");
        } else {
            let parts: Vec<String> = rejects.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("rejects      {} ({})", rejects.values().sum::<u64>(), parts.join(", "));
        }
        for e in ended.iter().chain(&send_errors) {
            println!("session      {e}");
        }
    }
    Ok(if lost_reports + lost_answers + dup > 0 { 3 } else { 0 })
}

fn json_str_list<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = it.map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("[{}]", v.join(","))
}
