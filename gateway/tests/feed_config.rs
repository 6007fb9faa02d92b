//! `[feed]` settings reach the feed `tickwire serve` runs: its backend (named in the banner) and
//! its read keys (an HTTP request without one gets 401, with one the snapshot).

mod server_util;

#[path = "../../feed/tests/support/http_get.rs"]
mod http_get;

use http_get::http_get;
use server_util::*;
use std::net::SocketAddr;
use tickwire_feed::BackendKind;

#[test]
fn feed_section_sets_backend_and_read_keys() {
    let backend = if BackendKind::Uring.available().is_ok() { BackendKind::Uring } else { BackendKind::Epoll };
    let dir = TempDir::new("feed-config");
    let config = test_config("none").replace(
        "[feed]\nenabled = false\n",
        &format!("[feed]\nlisten = \"127.0.0.1:0\"\nbackend = \"{backend}\"\nread_keys = [\"k-one\", \"k-two\"]\n"),
    );
    let mut server = ServerProc::start(dir.path(), Some(&config));
    let banner = server.line("backends: ").unwrap();
    assert!(banner.contains(&format!("feed = WebSocket, {backend}, 1 shard(s), 2 read key(s)")), "{banner}");
    let feed: SocketAddr =
        server.line("market-data: ws://").unwrap().trim_end_matches('/').parse().expect("feed address");
    let refused = http_get(feed, "/snapshot?instrument=1");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("\"error\":\"unauthorized\""), "{refused}");
    assert!(http_get(feed, "/snapshot?instrument=1&key=k-three").starts_with("HTTP/1.1 401"));
    let ok = http_get(feed, "/snapshot?instrument=1&key=k-two");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"instrument\":1"), "{ok}");
    server.sigterm();
}
