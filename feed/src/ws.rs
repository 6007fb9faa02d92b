//! The server's side of RFC 6455, sans IO: the HTTP upgrade handshake (parsed with `httparse`, the
//! accept key from `tungstenite::handshake::derive_accept_key`) and the client frame parser. The
//! server only ever sends unmasked, unfragmented frames, whose header [`frame_header`] writes.
//!
//! Everything here takes bytes a client chose: no input panics; errors become close codes.

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Protocol error (unmasked frame, reserved bits, bad control frame, bad close payload).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Unsupported data (text messages, fragmented messages).
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// Invalid UTF-8 in a close reason.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Policy violation (used for slow consumers).
pub const CLOSE_POLICY: u16 = 1008;
/// Message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Opcodes.
pub const OP_CONTINUATION: u8 = 0;
/// Text frame.
pub const OP_TEXT: u8 = 1;
/// Binary frame.
pub const OP_BINARY: u8 = 2;
/// Close frame.
pub const OP_CLOSE: u8 = 8;
/// Ping frame.
pub const OP_PING: u8 = 9;
/// Pong frame.
pub const OP_PONG: u8 = 10;

/// Largest client frame header (2 + 8 length + 4 mask).
pub const MAX_HEADER: usize = 14;

/// Appends the header of an unmasked, final server frame of `len` payload bytes.
pub fn frame_header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Size of the header [`frame_header`] writes.
pub const fn frame_header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// A whole server frame: header and payload.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(frame_header_len(payload.len()) + payload.len());
    frame_header(opcode, payload.len(), &mut v);
    v.extend_from_slice(payload);
    v
}

/// A close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    server_frame(OP_CLOSE, &code.to_be_bytes())
}

/// One complete client frame found at the front of a buffer. The payload (unmasked in place) is
/// `buf[payload.0 .. payload.1]`; `consumed` bytes make up the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFrame {
    /// Opcode: [`OP_BINARY`], [`OP_CLOSE`], [`OP_PING`] or [`OP_PONG`] (others are errors).
    pub opcode: u8,
    /// Payload range in the buffer.
    pub payload: (usize, usize),
    /// Bytes of the frame.
    pub consumed: usize,
}

/// Parses the client frame at the front of `buf`: `Ok(None)` if incomplete, `Err(close code)` if
/// the connection must be closed. `max_payload` bounds data frames (control frames: 125).
/// A frame over the limit is refused as soon as its header is complete.
pub fn parse_client_frame(buf: &mut [u8], max_payload: usize) -> Result<Option<ClientFrame>, u16> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        return Err(CLOSE_PROTOCOL); // reserved bits (no extension negotiated) / unmasked
    }
    let len7 = (b1 & 0x7F) as usize;
    let (len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(a);
            if l >> 63 != 0 {
                return Err(CLOSE_PROTOCOL);
            }
            (l, 10)
        }
        l => (l as u64, 2),
    };
    match opcode {
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > 125 {
                return Err(CLOSE_PROTOCOL);
            }
        }
        OP_BINARY => {
            if !fin {
                return Err(CLOSE_UNSUPPORTED); // fragmented messages are not accepted
            }
            if len > max_payload as u64 {
                return Err(CLOSE_TOO_BIG);
            }
        }
        OP_TEXT => return Err(CLOSE_UNSUPPORTED),
        OP_CONTINUATION => return Err(CLOSE_PROTOCOL), // no fragmented message was started
        _ => return Err(CLOSE_PROTOCOL),
    }
    let len = len as usize;
    if buf.len() < pos + 4 + len {
        return Ok(None);
    }
    let mask = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
    pos += 4;
    for (i, b) in buf[pos..pos + len].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok(Some(ClientFrame { opcode, payload: (pos, pos + len), consumed: pos + len }))
}

/// Validates a close frame's payload; returns the code to answer with, or the error close code.
pub fn close_reply_code(payload: &[u8]) -> Result<u16, u16> {
    match payload.len() {
        0 => Ok(CLOSE_NORMAL),
        1 => Err(CLOSE_PROTOCOL),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(CLOSE_PROTOCOL);
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(CLOSE_INVALID_DATA);
            }
            Ok(code)
        }
    }
}

/// Result of feeding the start of a connection to [`parse_handshake`].
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The request is incomplete.
    Partial,
    /// Valid upgrade: send `response`; the request took `consumed` bytes (what follows is frames).
    Upgrade {
        /// The 101 response.
        response: Vec<u8>,
        /// Request bytes.
        consumed: usize,
    },
    /// Not a valid upgrade: send `response` and close.
    Reject {
        /// The 4xx response.
        response: Vec<u8>,
    },
    /// A complete HTTP request without an `Upgrade` header: a plain HTTP request for
    /// [`crate::hub::http`] (answered once, then the connection closes).
    Http {
        /// The method.
        method: String,
        /// The request target (path and query).
        target: String,
        /// Request bytes (headers).
        consumed: usize,
    },
}

fn reject(status: &str, extra: &str) -> Handshake {
    // The same JSON error shape as the HTTP endpoints (`crate::hub::http`).
    let (code, detail) = match status.get(..3) {
        Some("401") => ("unauthorized", "a read key is required: ?key=KEY or Sec-WebSocket-Protocol tickwire-key.KEY"),
        Some("426") => ("upgrade_required", "not a valid HTTP request or WebSocket upgrade"),
        Some("431") => ("request_too_large", "not a valid HTTP request or WebSocket upgrade"),
        _ => ("bad_request", "not a valid HTTP request or WebSocket upgrade"),
    };
    let body = format!("{{\"error\":\"{code}\",\"detail\":\"{detail}\"}}");
    let response = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    Handshake::Reject { response }
}

/// Prefix of the `Sec-WebSocket-Protocol` entry that carries a read key (for browsers, which
/// cannot set other headers on a WebSocket).
pub const KEY_PROTOCOL_PREFIX: &str = "tickwire-key.";
/// Longest read key.
pub const READ_KEY_MAX: usize = 128;

/// Whether `k` can be a read key: 1..=[`READ_KEY_MAX`] bytes of `A-Z a-z 0-9 . _ ~ -` (URL-safe
/// without percent-encoding, and a valid subprotocol token).
pub fn valid_read_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= READ_KEY_MAX && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// Compares in time that depends only on the lengths (a key's length is not a secret worth
/// hiding; its bytes are).
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn key_ok(keys: &[String], k: &[u8]) -> bool {
    // Every key is compared, so which one matched does not show in the time either.
    keys.iter().fold(false, |ok, key| same_key(key.as_bytes(), k) | ok)
}

/// The `key` parameter of a request target's query, if any (the first one).
fn query_key(target: &str) -> Option<&str> {
    let (_, q) = target.split_once('?')?;
    q.split('&').find_map(|p| p.strip_prefix("key="))
}

fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// Parses the client's opening handshake at the front of `buf`. With `read_keys` non-empty, a
/// request (upgrade or plain HTTP) must carry one of them, as `key=KEY` in the target's query or
/// (upgrades) as a `Sec-WebSocket-Protocol` entry `tickwire-key.KEY`, which the response then
/// selects; otherwise it gets 401.
pub fn parse_handshake(buf: &[u8], read_keys: &[String]) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Handshake::Partial,
        Err(httparse::Error::TooManyHeaders) => return reject("431 Request Header Fields Too Large", ""),
        Err(_) => return reject("400 Bad Request", ""),
    };
    let get = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let by_query = req.path.and_then(query_key).is_some_and(|k| key_ok(read_keys, k.as_bytes()));
    if get("upgrade").is_none() {
        let (Some(method), Some(target)) = (req.method, req.path) else { return reject("400 Bad Request", "") };
        if !read_keys.is_empty() && !by_query {
            return reject("401 Unauthorized", "");
        }
        return Handshake::Http { method: method.to_string(), target: target.to_string(), consumed };
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return reject("400 Bad Request", "");
    }
    if !get("upgrade").is_some_and(|v| has_token(v, "websocket"))
        || !get("connection").is_some_and(|v| has_token(v, "upgrade"))
    {
        return reject("400 Bad Request", "");
    }
    if get("sec-websocket-version").map(|v| v.trim_ascii()) != Some(b"13") {
        return reject("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n");
    }
    let Some(key) = get("sec-websocket-key").map(|v| v.trim_ascii()).filter(|k| !k.is_empty() && k.len() <= 64)
    else {
        return reject("400 Bad Request", "");
    };
    // The protocol entry carrying a valid key, selected in the response (a browser that offered
    // subprotocols fails the connection unless one is selected).
    let by_protocol = get("sec-websocket-protocol")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| {
            v.split(',').map(str::trim).find(|p| {
                // Echoed in the response: only a well-formed key (a key set in code unchecked
                // could hold CR/LF).
                p.strip_prefix(KEY_PROTOCOL_PREFIX).is_some_and(|k| valid_read_key(k) && key_ok(read_keys, k.as_bytes()))
            })
        });
    if !read_keys.is_empty() && !by_query && by_protocol.is_none() {
        return reject("401 Unauthorized", "");
    }
    let accept = tungstenite::handshake::derive_accept_key(key);
    let protocol = by_protocol.map_or(String::new(), |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
    .into_bytes();
    Handshake::Upgrade { response, consumed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
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
        let m = [1, 2, 3, 4];
        v.extend_from_slice(&m);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3]));
        v
    }

    #[test]
    fn parses_masked_binary_and_controls() {
        let mut f = masked(OP_BINARY, true, b"hello");
        let fr = parse_client_frame(&mut f, 1024).unwrap().unwrap();
        assert_eq!(&f[fr.payload.0..fr.payload.1], b"hello");
        assert_eq!(fr.consumed, f.len());
        for cut in 0..f.len() - 1 {
            let mut g = masked(OP_BINARY, true, b"hello");
            assert_eq!(parse_client_frame(&mut g[..cut], 1024), Ok(None));
        }
        let mut p = masked(OP_PING, true, b"x");
        assert_eq!(parse_client_frame(&mut p, 1024).unwrap().unwrap().opcode, OP_PING);
    }

    #[test]
    fn refuses_bad_frames() {
        let mut unmasked = vec![0x82, 0x01, 0x00];
        assert_eq!(parse_client_frame(&mut unmasked, 1024), Err(CLOSE_PROTOCOL));
        assert_eq!(parse_client_frame(&mut masked(OP_TEXT, true, b"a"), 1024), Err(CLOSE_UNSUPPORTED));
        assert_eq!(parse_client_frame(&mut masked(OP_BINARY, false, b"a"), 1024), Err(CLOSE_UNSUPPORTED));
        assert_eq!(parse_client_frame(&mut masked(OP_CONTINUATION, true, b"a"), 1024), Err(CLOSE_PROTOCOL));
        assert_eq!(parse_client_frame(&mut masked(OP_PING, false, b"a"), 1024), Err(CLOSE_PROTOCOL));
        assert_eq!(parse_client_frame(&mut masked(OP_PING, true, &[0; 126]), 1024), Err(CLOSE_PROTOCOL));
        assert_eq!(parse_client_frame(&mut masked(0x3, true, b""), 1024), Err(CLOSE_PROTOCOL));
        let mut rsv = masked(OP_BINARY, true, b"a");
        rsv[0] |= 0x40;
        assert_eq!(parse_client_frame(&mut rsv, 1024), Err(CLOSE_PROTOCOL));
        // Oversize is refused from the header alone.
        let big = masked(OP_BINARY, true, &[0; 70_000]);
        let mut head = big[..14].to_vec();
        assert_eq!(parse_client_frame(&mut head, 1024), Err(CLOSE_TOO_BIG));
        let mut huge = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_client_frame(&mut huge, 1024), Err(CLOSE_PROTOCOL));
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_reply_code(b""), Ok(1000));
        assert_eq!(close_reply_code(&[3]), Err(1002));
        assert_eq!(close_reply_code(&1001u16.to_be_bytes()), Ok(1001));
        assert_eq!(close_reply_code(&1005u16.to_be_bytes()), Err(1002));
        assert_eq!(close_reply_code(&[0x03, 0xE8, 0xFF]), Err(1007));
    }

    #[test]
    fn read_keys() {
        let keys = vec!["k1-secret".to_string(), "other.key".to_string()];
        let up = |target: &str, extra: &str| {
            format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
        };
        let status = |h: Handshake| match h {
            Handshake::Upgrade { response, .. } | Handshake::Reject { response } => String::from_utf8(response).unwrap(),
            Handshake::Http { .. } => "HTTP".to_string(),
            Handshake::Partial => "PARTIAL".to_string(),
        };
        // Without keys configured, everything is public.
        assert!(status(parse_handshake(up("/md", "").as_bytes(), &[])).starts_with("HTTP/1.1 101"));
        // With keys: missing, wrong, prefix of a right one, empty → 401 with a JSON reason.
        for t in ["/md", "/md?key=nope", "/md?key=k1", "/md?key=", "/md?x=1&key=k1-secretX"] {
            let r = status(parse_handshake(up(t, "").as_bytes(), &keys));
            assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n") && r.contains("\"error\":\"unauthorized\""), "{t}: {r}");
        }
        // In the query (any position, any of the keys).
        for t in ["/md?key=k1-secret", "/md?x=1&key=other.key"] {
            let r = status(parse_handshake(up(t, "").as_bytes(), &keys));
            assert!(r.starts_with("HTTP/1.1 101") && !r.contains("Sec-WebSocket-Protocol"), "{t}: {r}");
        }
        // As a subprotocol: selected in the response.
        let r = status(parse_handshake(up("/md", "Sec-WebSocket-Protocol: json, tickwire-key.k1-secret\r\n").as_bytes(), &keys));
        assert!(r.starts_with("HTTP/1.1 101") && r.contains("\r\nSec-WebSocket-Protocol: tickwire-key.k1-secret\r\n"), "{r}");
        let r = status(parse_handshake(up("/md", "Sec-WebSocket-Protocol: tickwire-key.bad\r\n").as_bytes(), &keys));
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        // Plain HTTP needs the query key too.
        let get = |t: &str| parse_handshake(format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), &keys);
        assert!(status(get("/snapshot?instrument=1")).starts_with("HTTP/1.1 401"));
        assert_eq!(status(get("/snapshot?instrument=1&key=k1-secret")), "HTTP");
        // Key syntax.
        assert!(valid_read_key("abc-DEF_1.2~x"));
        for bad in ["", "a b", "a&b", "a=b", "é", &"x".repeat(READ_KEY_MAX + 1)] {
            assert!(!valid_read_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn handshake() {
        let req = b"GET /md HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nXY";
        match parse_handshake(req, &[]) {
            Handshake::Upgrade { response, consumed } => {
                assert_eq!(consumed, req.len() - 2);
                let r = String::from_utf8(response).unwrap();
                assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{r}");
            }
            h => panic!("{h:?}"),
        }
        assert_eq!(parse_handshake(&req[..20], &[]), Handshake::Partial);
        assert!(matches!(parse_handshake(b"\x16\x03\x01garbage\r\n\r\n", &[]), Handshake::Reject { .. }));
        assert!(matches!(parse_handshake(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", &[]), Handshake::Reject { .. }));
        assert_eq!(
            parse_handshake(b"GET /snapshot?instrument=1 HTTP/1.1\r\nHost: x\r\n\r\n", &[]),
            Handshake::Http { method: "GET".into(), target: "/snapshot?instrument=1".into(), consumed: 48 }
        );
    }
}
