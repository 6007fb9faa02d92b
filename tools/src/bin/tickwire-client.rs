//! `tickwire-client`: a small trading client for the Tickwire order-entry protocol
//! (docs/protocol.md).
//!
//! ```text
//! tickwire-client buy BTC-USD 5 @ 30000          # limit GTC buy, prints the execution reports
//! tickwire-client sell BTC-USD 2 @ 29990 ioc
//! tickwire-client buy ETH-USD 1 market
//! tickwire-client cancel BTC-USD 1700000000123
//! tickwire-client replace BTC-USD 1700000000123 3 @ 30010
//! tickwire-client mass-cancel [BTC-USD]
//! tickwire-client                                 # interactive: one command per line on stdin
//! ```
//!
//! Logs on with the demo trade key (id 1) unless `--key/--secret` are given.

use clap::Parser;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tickwire_core::{CancelReason, OrderType, RejectReason, Side};
use tickwire_protocol::{
    Cancel, ClientMsg, Decoded, DisconnectReason, ExecReport, ExecType, Heartbeat, Logon, Logout,
    MassCancel, NewOrder, Replace, ServerMsg, SessionRejectReason, EXEC_GATEWAY, EXEC_MAKER, MAX_FRAME,
};

#[derive(Parser, Debug)]
#[command(
    name = "tickwire-client",
    about = "Tickwire trading client: one-shot orders or an interactive prompt",
    after_help = "COMMANDS (one-shot arguments, or lines in interactive mode):\n  \
        buy|sell SYMBOL QTY [@ PRICE] [gtc|ioc|fok|post|market] [id=N] [stp=MODE]\n  \
        cancel SYMBOL ID\n  replace SYMBOL ID QTY [@ PRICE]\n  mass-cancel [SYMBOL]\n  \
        quit (interactive)\nSYMBOL: BTC-USD (1), ETH-USD (2), or an instrument id. Prices and quantities are\n\
        integers in the instrument's units (docs/server.md)."
)]
struct Args {
    /// Server order-entry address.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: String,
    /// API key id (default: the demo trade key).
    #[arg(long, default_value_t = 1)]
    key: u64,
    /// API key secret (default: the demo trade key's; required with another --key).
    #[arg(long)]
    secret: Option<String>,
    /// Account to trade (default: the demo key's account: 2 for key 3, else 1).
    #[arg(long)]
    account: Option<u32>,
    /// Last session sequence already seen; reports after it are resent at logon (default: none resent).
    #[arg(long)]
    last_seq: Option<u64>,
    /// Ask the server to cancel this key's resting orders if the connection drops.
    #[arg(long)]
    cancel_on_disconnect: bool,
    /// One-shot: keep printing reports until none came for this long (ms).
    #[arg(long, default_value_t = 500)]
    wait_ms: u64,
    /// The command (see below); none = interactive.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

const DEMO_SECRETS: [(u64, &str); 3] =
    [(1, "tickwire-demo-trade-secret"), (2, "tickwire-demo-read-secret"), (3, "tickwire-demo-trade2-secret")];

fn main() {
    let a = Args::parse();
    match run(a) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tickwire-client: {e}");
            std::process::exit(1);
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn instrument(s: &str) -> Result<(u32, String), String> {
    let known = [("BTC-USD", 1u32), ("ETH-USD", 2)];
    if let Some((n, id)) = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        return Ok((*id, n.to_string()));
    }
    s.parse::<u32>().map(|id| (id, symbol(id))).map_err(|_| format!("unknown instrument {s:?} (BTC-USD, ETH-USD or an id)"))
}

fn symbol(id: u32) -> String {
    match id {
        1 => "BTC-USD".into(),
        2 => "ETH-USD".into(),
        0 => "*".into(),
        n => format!("#{n}"),
    }
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what} {s:?}"))
}

/// Splits "@30000" into "@", "30000" so both spellings work.
fn tokens<S: AsRef<str>>(words: &[S]) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        for part in w.as_ref().split_whitespace() {
            if let Some(rest) = part.strip_prefix('@').filter(|r| !r.is_empty()) {
                out.push("@".into());
                out.push(rest.into());
            } else {
                out.push(part.into());
            }
        }
    }
    out
}

/// Parses one command into a message.
fn parse(t: &[String], account: u32) -> Result<ClientMsg, String> {
    let verb = t.first().map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    match verb.as_str() {
        "buy" | "sell" => {
            let (inst, _) = instrument(t.get(1).ok_or("missing instrument")?)?;
            let qty: u64 = num(t.get(2), "quantity")?;
            let mut price = None;
            let mut order_type = None;
            let mut id = None;
            let mut stp = 0u8;
            let mut i = 3;
            while i < t.len() {
                let w = t[i].to_ascii_lowercase();
                match w.as_str() {
                    "@" => {
                        price = Some(num::<i64>(t.get(i + 1), "price")?);
                        i += 1;
                    }
                    "gtc" | "limit" => order_type = Some(OrderType::LimitGtc),
                    "ioc" => order_type = Some(OrderType::LimitIoc),
                    "fok" => order_type = Some(OrderType::LimitFok),
                    "post" | "post_only" => order_type = Some(OrderType::PostOnly),
                    "market" | "mkt" => order_type = Some(OrderType::Market),
                    _ if w.starts_with("id=") => id = Some(num::<u64>(Some(&w[3..].to_string()), "id")?),
                    _ if w.starts_with("stp=") => {
                        let m = &w[4..];
                        stp = tickwire_core::StpMode::ALL
                            .iter()
                            .find(|s| s.name() == m)
                            .map(|s| *s as u8)
                            .ok_or_else(|| format!("unknown stp mode {m:?}"))?;
                    }
                    _ => return Err(format!("unexpected {:?}", t[i])),
                }
                i += 1;
            }
            let order_type = order_type.unwrap_or(if price.is_some() { OrderType::LimitGtc } else { OrderType::Market });
            let side = if verb == "buy" { Side::Buy } else { Side::Sell };
            Ok(ClientMsg::NewOrder(NewOrder {
                side: side as u8,
                order_type: order_type as u8,
                stp,
                client_order_id: id.unwrap_or_else(|| now_ns() / 1000),
                account,
                instrument: inst,
                price,
                qty,
            }))
        }
        "cancel" => {
            let (inst, _) = instrument(t.get(1).ok_or("missing instrument")?)?;
            Ok(ClientMsg::Cancel(Cancel { account, client_order_id: num(t.get(2), "order id")?, instrument: inst }))
        }
        "replace" => {
            let (inst, _) = instrument(t.get(1).ok_or("missing instrument")?)?;
            let id: u64 = num(t.get(2), "order id")?;
            let qty: u64 = num(t.get(3), "quantity")?;
            let price = match t.get(4).map(|s| s.as_str()) {
                Some("@") => Some(num::<i64>(t.get(5), "price")?),
                None => None,
                Some(o) => return Err(format!("unexpected {o:?}")),
            };
            Ok(ClientMsg::Replace(Replace { client_order_id: id, account, instrument: inst, price, qty }))
        }
        "mass-cancel" | "mass_cancel" | "masscancel" => {
            let inst = match t.get(1) {
                Some(s) => instrument(s)?.0,
                None => 0,
            };
            Ok(ClientMsg::MassCancel(MassCancel { account, instrument: inst }))
        }
        "" => Err("empty command".into()),
        other => Err(format!("unknown command {other:?} (buy, sell, cancel, replace, mass-cancel, quit)")),
    }
}

fn name_of<T: Copy>(v: u8, f: fn(u8) -> Option<T>, n: fn(T) -> &'static str) -> String {
    f(v).map_or_else(|| format!("{v}"), |x| n(x).to_string())
}

fn describe(r: &ExecReport) -> String {
    let side = name_of(r.side, Side::from_u8, Side::name).to_uppercase();
    let sym = symbol(r.instrument);
    let mut s = format!("#{} {:<15}", r.session_seq, r.exec_type.name());
    match r.exec_type {
        ExecType::Accepted => {
            let ot = name_of(r.order_type, OrderType::from_u8, OrderType::name);
            s += &format!("{side} {sym} id={} qty={} @ {} ({ot})", r.client_order_id, r.qty, r.price);
        }
        ExecType::Rejected => {
            let why = name_of(r.reason, RejectReason::from_u8, RejectReason::name);
            s += &format!("{sym} id={} reason={why}", r.client_order_id);
            if r.flags & EXEC_GATEWAY != 0 {
                s += " (by the gateway)";
            }
        }
        ExecType::PartialFill | ExecType::Fill => {
            s += &format!(
                "{side} {sym} id={} {} @ {} trade={} leaves={} cum={}{}",
                r.client_order_id,
                r.qty,
                r.price,
                r.trade_id,
                r.leaves_qty,
                r.cum_qty,
                if r.flags & EXEC_MAKER != 0 { " (maker)" } else { "" }
            );
        }
        ExecType::Cancelled | ExecType::Decremented => {
            let why = name_of(r.reason, CancelReason::from_u8, CancelReason::name);
            s += &format!("{side} {sym} id={} qty={} @ {} reason={why}", r.client_order_id, r.qty, r.price);
        }
        ExecType::Replaced => {
            s += &format!("{side} {sym} id={} open qty={} @ {}", r.client_order_id, r.qty, r.price);
        }
        ExecType::MassCancelled => {
            let why = name_of(r.reason, CancelReason::from_u8, CancelReason::name);
            s += &format!("account {} {sym}: {} orders cancelled ({why})", r.account, r.qty);
        }
    }
    s
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Got {
    Msg(ServerMsg),
    Nothing,
    Closed,
}

impl Conn {
    fn send(&mut self, m: &ClientMsg) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(80);
        m.encode_to_vec(&mut b);
        self.stream.write_all(&b)
    }

    /// Next frame, waiting at most `wait`.
    fn recv(&mut self, wait: Duration) -> Result<Got, String> {
        let deadline = Instant::now() + wait;
        loop {
            match ServerMsg::decode(&self.buf, MAX_FRAME) {
                Decoded::Frame(m, n) => {
                    self.buf.drain(..n);
                    return Ok(Got::Msg(m));
                }
                Decoded::Error(e) => return Err(format!("bad frame from the server: {e:?}")),
                Decoded::NeedMore(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Got::Nothing);
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
            let mut tmp = [0u8; 4096];
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(Got::Closed),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection lost: {e}")),
            }
        }
    }
}

/// Prints a server message; returns false if the server ends the session with it.
fn show(m: &ServerMsg) -> bool {
    match m {
        ServerMsg::ExecReport(r) => {
            println!("{}", describe(r));
            true
        }
        ServerMsg::Heartbeat(_) => true,
        ServerMsg::LogonAccepted(a) => {
            println!("logged on: role {}, last_seq {}, replay_from {}, heartbeat {} ms", a.role.name(), a.last_seq, a.replay_from, a.heartbeat_ms);
            true
        }
        ServerMsg::LogonRejected(r) => {
            println!("logon rejected: {}", r.reason.name());
            false
        }
        ServerMsg::SessionReject(r) => {
            let why = SessionRejectReason::from_u8(r.reason as u8).map_or("?", |x| x.name());
            println!("session reject: {why}");
            false
        }
        ServerMsg::Logout(l) => {
            println!("logout: {}", DisconnectReason::from_u8(l.reason).map_or("?", |x| x.name()));
            false
        }
    }
}

fn connect(a: &Args) -> Result<Conn, String> {
    let addrs: Vec<SocketAddr> =
        a.addr.to_socket_addrs().map_err(|e| format!("bad address {}: {e}", a.addr))?.collect();
    let mut last = String::new();
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(3)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(Conn { stream: s, buf: Vec::new() });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot connect to the server at {}: {last} (is `tickwire serve` running?)", a.addr))
}

fn run(a: Args) -> Result<i32, String> {
    let secret = match &a.secret {
        Some(s) => s.clone(),
        None => DEMO_SECRETS
            .iter()
            .find(|(id, _)| *id == a.key)
            .map(|(_, s)| s.to_string())
            .ok_or("--secret is required with a key that is not a demo key")?,
    };
    let account = a.account.unwrap_or(if a.key == 3 { 2 } else { 1 });
    let toks = tokens(&a.command);
    // Check the command before connecting.
    let oneshot = if toks.is_empty() { None } else { Some(parse(&toks, account)?) };
    let mut c = connect(&a)?;
    let nonce = now_ns() ^ (std::process::id() as u64).rotate_left(32);
    let hb_ms = 5000u32;
    let logon = Logon::signed(
        secret.as_bytes(),
        a.key,
        now_ns(),
        nonce,
        a.last_seq.unwrap_or(u64::MAX),
        hb_ms,
        a.cancel_on_disconnect,
    );
    c.send(&ClientMsg::Logon(logon)).map_err(|e| format!("send: {e}"))?;
    match c.recv(Duration::from_secs(5))? {
        Got::Msg(m @ ServerMsg::LogonAccepted(_)) => {
            show(&m);
        }
        Got::Msg(m) => {
            show(&m);
            return Ok(2);
        }
        Got::Nothing => return Err("no answer to the logon within 5 s".into()),
        Got::Closed => return Err("the server closed the connection during logon".into()),
    }
    match oneshot {
        Some(msg) => {
            if let ClientMsg::NewOrder(o) = &msg {
                println!("sending {} (client order id {})", toks.join(" "), o.client_order_id);
            }
            c.send(&msg).map_err(|e| format!("send: {e}"))?;
            let mut got_any = false;
            let first_wait = Instant::now() + Duration::from_secs(5);
            loop {
                let wait = if got_any {
                    Duration::from_millis(a.wait_ms)
                } else {
                    first_wait.saturating_duration_since(Instant::now())
                };
                match c.recv(wait)? {
                    Got::Msg(m) => {
                        if matches!(m, ServerMsg::ExecReport(_)) {
                            got_any = true;
                        }
                        if !show(&m) {
                            return Ok(2);
                        }
                    }
                    Got::Nothing => break,
                    Got::Closed => return Err("the server closed the connection".into()),
                }
            }
            if !got_any {
                eprintln!("tickwire-client: no execution report within 5 s");
            }
            let _ = c.send(&ClientMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 }));
            let _ = c.recv(Duration::from_millis(500));
            Ok(if got_any { 0 } else { 3 })
        }
        None => interactive(c, account, hb_ms),
    }
}

fn interactive(mut c: Conn, account: u32, hb_ms: u32) -> Result<i32, String> {
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    println!("type commands (buy BTC-USD 5 @ 30000, cancel BTC-USD ID, replace ..., mass-cancel, quit)");
    let mut last_tx = Instant::now();
    let mut last_seq = 0u64;
    loop {
        match rx.try_recv() {
            Ok(Some(line)) => {
                let t = tokens(&[line.trim()]);
                if t.is_empty() {
                    continue;
                }
                if matches!(t[0].as_str(), "quit" | "exit" | "logout") {
                    let _ = c.send(&ClientMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 }));
                    if let Ok(Got::Msg(m)) = c.recv(Duration::from_millis(500)) {
                        show(&m);
                    }
                    return Ok(0);
                }
                match parse(&t, account) {
                    Ok(m) => {
                        if let ClientMsg::NewOrder(o) = &m {
                            println!("sending id={}", o.client_order_id);
                        }
                        c.send(&m).map_err(|e| format!("send: {e}"))?;
                        last_tx = Instant::now();
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            Ok(None) | Err(mpsc::TryRecvError::Disconnected) => {
                let _ = c.send(&ClientMsg::Logout(Logout { reason: DisconnectReason::ClientLogout as u8 }));
                let _ = c.recv(Duration::from_millis(500));
                return Ok(0);
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if last_tx.elapsed() >= Duration::from_millis(hb_ms as u64 / 2) {
            c.send(&ClientMsg::Heartbeat(Heartbeat { seq: last_seq })).map_err(|e| format!("send: {e}"))?;
            last_tx = Instant::now();
        }
        match c.recv(Duration::from_millis(50))? {
            Got::Msg(m) => {
                if let ServerMsg::ExecReport(r) = &m {
                    last_seq = r.session_seq;
                }
                if !show(&m) {
                    return Ok(2);
                }
            }
            Got::Nothing => {}
            Got::Closed => return Err("the server closed the connection".into()),
        }
    }
}


