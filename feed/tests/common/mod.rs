//! Test helpers: a fake client for the sans-IO hub, random order flow.
#![allow(dead_code)]

use std::io::IoSlice;
use tickwire_core::{Command, Engine, EngineConfig, Event, EventKind, InstrumentConfig, OrderType, Side};
use tickwire_feed::hub::{ConnId, Flush, Hub};

pub const HANDSHAKE: &[u8] = b"GET /md HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The engine the tests run: instruments 1 ("A") and 2 ("B"), small tables.
pub fn engine() -> Engine {
    let cfg = EngineConfig {
        instruments: vec![InstrumentConfig::simple(1, "A"), InstrumentConfig::simple(2, "B")],
        orders_max: 4096,
        levels_max: 256,
        accounts_max: 64,
        ..EngineConfig::single_default()
    };
    Engine::new(&cfg).unwrap()
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let m = [0x37, 0xfa, 0x21, 0x3d];
    v.extend_from_slice(&m);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
    v
}

/// A server frame read back by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Splits complete server frames off the front of `buf` (server frames are unmasked, final).
pub fn split_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let b = &buf[pos..];
        if b.len() < 2 {
            break;
        }
        assert_eq!(b[0] & 0xF0, 0x80, "server frames are final, no RSV");
        assert_eq!(b[1] & 0x80, 0, "server frames are unmasked");
        let (len, h) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            l => (l as usize, 2),
        };
        if b.len() < h + len {
            break;
        }
        out.push(Frame { opcode: b[0] & 0x0F, payload: b[h..h + len].to_vec() });
        pos += h + len;
    }
    buf.drain(..pos);
    out
}

/// A client of the sans-IO hub.
pub struct FakeClient {
    pub id: ConnId,
    pub inbox: Vec<u8>,
    pub closed: bool,
}

impl FakeClient {
    /// Opens and upgrades; the 101 response is consumed.
    pub fn connect(hub: &mut Hub) -> FakeClient {
        let id = hub.open();
        let mut c = FakeClient { id, inbox: Vec::new(), closed: false };
        c.send_raw(hub, HANDSHAKE);
        c.drain(hub);
        let text = String::from_utf8_lossy(&c.inbox).to_string();
        let end = text.find("\r\n\r\n").expect("complete response") + 4;
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        c.inbox.drain(..end);
        c
    }

    pub fn send_raw(&mut self, hub: &mut Hub, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        hub.on_read(self.id, &mut b);
    }

    pub fn send_msg(&mut self, hub: &mut Hub, m: tickwire_protocol::md::ClientMsg) {
        self.send_raw(hub, &client_frame(2, &m.to_vec()));
    }

    /// Flushes every dirty connection of the hub into nowhere except ours (which lands in inbox).
    pub fn drain(&mut self, hub: &mut Hub) {
        let inbox = &mut self.inbox;
        let id = self.id;
        let r = hub.flush(id, &mut |bufs: &[IoSlice<'_>]| {
            let mut n = 0;
            for b in bufs {
                inbox.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        });
        if r == Flush::Close {
            self.closed = true;
            hub.close(id);
        }
    }

    pub fn frames(&mut self, hub: &mut Hub) -> Vec<Frame> {
        self.drain(hub);
        split_frames(&mut self.inbox)
    }
}

/// Deterministic xorshift.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random command on instruments 1..=2 around price 1000 (crossing, resting, cancels, replaces,
/// halts).
pub fn random_command(r: &mut Rng) -> Command {
    let inst = 1 + r.below(2) as u32;
    let acct = 1 + r.below(4) as u32;
    let id = r.below(40);
    let side = if r.below(2) == 0 { Side::Buy } else { Side::Sell };
    let px = 990 + r.below(21) as i64;
    let qty = 1 + r.below(30);
    match r.below(100) {
        0..=49 => Command::new_order(acct, inst, id, side, OrderType::LimitGtc, Some(px), qty, None),
        50..=59 => Command::new_order(acct, inst, id, side, OrderType::LimitIoc, Some(px), qty, None),
        60..=64 => Command::new_order(acct, inst, id, side, OrderType::Market, None, qty, None),
        65..=84 => Command::cancel(acct, inst, id),
        85..=94 => Command::replace(acct, inst, id, if r.below(2) == 0 { Some(px) } else { None }, qty),
        95..=96 => Command::set_halted(inst, r.below(2) == 0),
        _ => Command::mass_cancel(acct, Some(inst), tickwire_core::CancelReason::MassCancel),
    }
}

/// A public trade of instrument 1 (buy aggressor) at engine sequence `seq`.
pub fn trade(seq: u64, price: i64, qty: u64, ts_ns: u64) -> Event {
    trade_by(Side::Buy, seq, price, qty, ts_ns)
}

/// A public trade of instrument 1 with aggressor `side` at engine sequence `seq`.
pub fn trade_by(side: Side, seq: u64, price: i64, qty: u64, ts_ns: u64) -> Event {
    Event {
        seq,
        kind: EventKind::Trade as u8,
        side: side as u8,
        instrument: 1,
        order_id: seq,
        aux64: ts_ns,
        price,
        qty,
        ..Event::default()
    }
}

/// A shard on 127.0.0.1 (any port) reading `src`, instruments 1 and 2, 50 ms ticks, on its own
/// thread; stop it with [`RunningShard::stop`].
pub struct RunningShard {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl RunningShard {
    pub fn spawn<S: tickwire_feed::source::EventSource + Send + 'static>(src: S) -> RunningShard {
        use tickwire_feed::{FeedShard, HubConfig, ShardConfig};
        let listener = tickwire_feed::sys::bind_reuseport("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let mut cfg = ShardConfig::new(HubConfig::new(vec![1, 2]));
        cfg.tick = std::time::Duration::from_millis(50);
        let mut shard = FeedShard::new(listener, src, cfg).unwrap();
        let addr = shard.local_addr();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || shard.run(&stop2));
        RunningShard { addr, stop, thread }
    }

    /// A WebSocket client subscribed to instruments 1 and 2 (10 s read timeout).
    pub fn subscriber(&self) -> tungstenite::WebSocket<std::net::TcpStream> {
        let s = std::net::TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{}/md", self.addr), s).unwrap();
        for i in [1, 2] {
            let m = tickwire_protocol::md::ClientMsg::Subscribe { instrument: i }.to_vec();
            ws.send(tungstenite::Message::Binary(m.into())).unwrap();
        }
        ws
    }

    /// Stops the shard and waits for it (panics if it failed).
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().unwrap().unwrap();
    }
}
