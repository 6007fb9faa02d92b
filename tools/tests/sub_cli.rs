//! `tickwire-sub` against a live feed that requires a read key: with `--key-file` it keeps the
//! book through sequenced updates (no gap, no checksum failure) and stops by itself at
//! `--count`; without the key the feed refuses it and it exits with the reason.

#[path = "../../feed/tests/support/reap.rs"]
mod reap;

use reap::Reap;
use std::process::{Command as Proc, Output, Stdio};
use std::time::{Duration, Instant};
use tickwire_core::{Command, Engine, EngineConfig, Event, InstrumentConfig, OrderType, Side};
use tickwire_feed::{Feed, FeedConfig};

/// Publishes engine events to `feed` until `sub` exits (at most 60 s; past that it is killed,
/// though its own --duration would stop it too), then its output.
fn publish_until_exit(mut sub: Reap, feed: &Feed, eng: &mut Engine, seq: &mut u64) -> Output {
    let t0 = Instant::now();
    let mut evs: Vec<Event> = Vec::new();
    let child = sub.child();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(60) {
        *seq += 1;
        let side = if seq.is_multiple_of(2) { Side::Buy } else { Side::Sell };
        // Alternating sides around 10 000, one tick apart: rests and trades.
        let price = if side == Side::Buy { 10_000 + (*seq % 3) as i64 } else { 10_000 + (*seq % 5) as i64 - 1 };
        let cmd = Command::new_order(1 + (*seq % 4) as u32, 1, *seq, side, OrderType::LimitGtc, Some(price), 1 + *seq % 7, None);
        evs.clear();
        eng.handle(&cmd.with_seq(*seq, *seq), &mut evs);
        feed.publish(&evs);
        std::thread::sleep(Duration::from_millis(2));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    sub.wait_with_output()
}

fn sub(addr: std::net::SocketAddr, extra: &[&str]) -> Reap {
    let mut c = Proc::new(env!("CARGO_BIN_EXE_tickwire-sub"));
    c.args(["--url", &format!("ws://{addr}/md"), "--instruments", "1", "--count", "100", "--duration", "60"])
        .args(["--stats-every", "0", "--strict"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Reap::new(c.spawn().unwrap())
}

#[test]
fn sub_with_a_key_file_keeps_the_book() {
    let mut cfg = FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1]);
    cfg.shard.hub.read_keys = vec!["sub-key.1".into()];
    let feed = Feed::spawn(cfg).unwrap();
    let ecfg = EngineConfig { instruments: vec![InstrumentConfig::simple(1, "I1")], ..EngineConfig::single_default() };
    let mut eng = Engine::new(&ecfg).unwrap();
    let mut seq = 0u64;
    let key = std::env::temp_dir().join(format!("tickwire-sub-key-{}", std::process::id()));
    std::fs::write(&key, "# read key\n\n  sub-key.1\n").unwrap();

    let out = publish_until_exit(sub(feed.local_addr(), &["--key-file", key.to_str().unwrap()]), &feed, &mut eng, &mut seq);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let stats = stdout.lines().rev().find(|l| l.starts_with("stats ")).unwrap_or_else(|| panic!("{stdout}"));
    let field = |name: &str| -> u64 {
        let mut it = stats.split_whitespace();
        it.position(|w| w == name).and_then(|_| it.next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}: {stats}"))
    };
    assert!(field("sequenced") >= 100, "{stats}");
    assert_eq!((field("snapshots"), field("gaps"), field("crc_failures")), (1, 0, 0), "{stats}");

    // Without the key: refused with the reason, and it exits by itself.
    let out = publish_until_exit(sub(feed.local_addr(), &[]), &feed, &mut eng, &mut seq);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    // A key file without a key is the user's mistake, said before connecting.
    std::fs::write(&key, "# nothing yet\n").unwrap();
    let out = publish_until_exit(sub(feed.local_addr(), &["--key-file", key.to_str().unwrap()]), &feed, &mut eng, &mut seq);
    let _ = std::fs::remove_file(&key);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && stderr.contains("no key in it"), "{stderr}");
    feed.shutdown().unwrap();
}
