//! A minimal blocking order-entry client (docs/protocol.md): logon, frames out, frames in.
//! Blocking reads, `TCP_NODELAY`: the same socket options and wait strategy as the raw baseline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tickwire_protocol::{Cancel, ClientMsg, Decoded, Logon, Logout, NewOrder, ServerMsg, MAX_FRAME};

/// `Side` wire values.
pub const BUY: u8 = 1;
/// `Side` wire values.
pub const SELL: u8 = 2;
/// `OrderType::LimitGtc` wire value.
pub const LIMIT_GTC: u8 = 1;

fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A NewOrder frame (40 bytes).
pub fn new_order(side: u8, coid: u64, account: u32, price: i64, qty: u64) -> [u8; 40] {
    let m = ClientMsg::NewOrder(NewOrder {
        side,
        order_type: LIMIT_GTC,
        stp: 0,
        client_order_id: coid,
        account,
        instrument: super::server::INSTRUMENT,
        price: Some(price),
        qty,
    });
    let mut f = [0u8; 40];
    m.encode(&mut f).expect("NewOrder is 40 bytes");
    f
}

/// A Cancel frame (24 bytes).
pub fn cancel(coid: u64, account: u32) -> [u8; 24] {
    let m = ClientMsg::Cancel(Cancel { account, client_order_id: coid, instrument: super::server::INSTRUMENT });
    let mut f = [0u8; 24];
    m.encode(&mut f).expect("Cancel is 24 bytes");
    f
}

/// Reads whole server frames off a stream.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    tmp: Box<[u8]>,
}

impl FrameReader {
    /// An empty reader; `chunk` is the size of one `read`.
    pub fn new(chunk: usize) -> FrameReader {
        FrameReader { buf: Vec::with_capacity(chunk * 2), start: 0, tmp: vec![0u8; chunk].into_boxed_slice() }
    }

    /// The next frame, reading (blocking) as needed. `Ok(None)` at EOF.
    pub fn next(&mut self, mut s: &TcpStream) -> Result<Option<ServerMsg>, String> {
        loop {
            match ServerMsg::decode(&self.buf[self.start..], MAX_FRAME) {
                Decoded::Frame(m, len) => {
                    self.start += len;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(Some(m));
                }
                Decoded::Error(e) => return Err(format!("bad frame from the server: {e:?}")),
                Decoded::NeedMore(_) => {}
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let n = match s.read(&mut self.tmp) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&self.tmp[..n]);
        }
    }
}

/// One logged-on session.
pub struct Client {
    /// The connection (blocking, `TCP_NODELAY`).
    pub stream: TcpStream,
    /// Its frame reader.
    pub rd: FrameReader,
    /// Key id (= its account).
    pub key: u64,
}

impl Client {
    /// Connects and logs on with bench key `key`; nothing from earlier sessions is resent.
    pub fn logon(addr: SocketAddr, key: u64) -> Result<Client, String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let nonce = wall_ns() ^ NONCE.fetch_add(1, Ordering::Relaxed).rotate_left(40) ^ key.rotate_left(20);
        // Heartbeat 60 s: no heartbeat traffic during the measurements.
        let l = Logon::signed(&super::server::secret(key), key, wall_ns(), nonce, u64::MAX, 60_000, false);
        let mut v = Vec::new();
        ClientMsg::Logon(l).encode_to_vec(&mut v);
        (&s).write_all(&v).map_err(|e| format!("logon: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut rd = FrameReader::new(64 * 1024);
        match rd.next(&s)? {
            Some(ServerMsg::LogonAccepted(_)) => {}
            Some(ServerMsg::LogonRejected(r)) => return Err(format!("key {key}: logon rejected: {}", r.reason.name())),
            Some(m) => return Err(format!("key {key}: unexpected {:?} at logon", m.msg_type())),
            None => return Err(format!("key {key}: closed during logon")),
        }
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        Ok(Client { stream: s, rd, key })
    }

    /// Writes one frame.
    pub fn send(&self, frame: &[u8]) -> Result<(), String> {
        (&self.stream).write_all(frame).map_err(|e| format!("write: {e}"))
    }

    /// Logout, then waits (≤ 5 s) for the server's Logout or EOF, so the key is free again.
    pub fn logout(mut self) {
        let mut v = Vec::new();
        ClientMsg::Logout(Logout { reason: 1 }).encode_to_vec(&mut v);
        let _ = self.send(&v);
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        while let Ok(Some(m)) = self.rd.next(&self.stream) {
            if matches!(m, ServerMsg::Logout(_)) {
                break;
            }
        }
        // Wait for the close itself (the server frees the key when the session closes).
        let mut sink = [0u8; 4096];
        while let Ok(n) = (&self.stream).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}
