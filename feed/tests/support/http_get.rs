//! One plain HTTP GET to a feed port, shared by test crates (`#[path]`-included by
//! feed/tests/feed_binary.rs and gateway/tests/feed_config.rs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `GET target` and returns the whole response (the feed answers once and closes).
/// Bounded: a 20 s read timeout and at most 1 MiB read.
pub fn http_get(addr: SocketAddr, target: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
