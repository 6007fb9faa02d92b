//! Runs tools/python/md_subscriber.py (written only from docs/market-data.md) against a real
//! shard that requires a read key: its book must equal the engine's and it must see no gap and
//! no checksum failure.
//! Skipped (with a message) when python3 or its `websockets` package is missing.

mod common;
#[path = "support/reap.rs"]
mod reap;

use common::{engine, random_command, Rng};
use reap::Reap;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};
use tickwire_core::engine::Level;
use tickwire_core::{Command, CommandKind, Event, Side};
use tickwire_feed::{Feed, FeedConfig};

fn python_ready() -> bool {
    Proc::new("python3")
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn levels_json(ls: &[Level]) -> String {
    let v: Vec<String> = ls.iter().map(|l| format!("[{},{},{}]", l.price, l.qty, l.orders)).collect();
    format!("[{}]", v.join(","))
}

#[test]
fn python_subscriber_keeps_the_engine_book() {
    if !python_ready() {
        eprintln!("SKIPPED python_subscriber_keeps_the_engine_book: python3 with the 'websockets' package not found (pip install websockets)");
        return;
    }
    let mut cfg = FeedConfig::new("127.0.0.1:0".parse().unwrap(), vec![1, 2]);
    cfg.shard.tick = Duration::from_millis(50);
    // A feed with a read key: the script sends it as the docs say (subprotocol tickwire-key.KEY).
    cfg.shard.hub.read_keys = vec!["py-reader_1".into()];
    let feed = Feed::spawn(cfg).unwrap();
    let key = std::env::temp_dir().join(format!("tickwire-py-key-{}", std::process::id()));
    std::fs::write(&key, "# the feed's read key\npy-reader_1\n").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/python/md_subscriber.py");
    // Killed if the test ends before it does (a panic on the way).
    let child = Reap::new(Proc::new("python3")
        .args([script, "--url", &format!("ws://{}/md", feed.local_addr()), "--instruments", "1,2", "--until-halted", "--duration", "60"])
        .arg("--key-file")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    // Wait for the connection so most of the flow arrives as deltas.
    let t0 = Instant::now();
    while feed.stats().open == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));

    let mut eng = engine();
    let mut r = Rng(2024);
    let mut seq = 0;
    let mut batch: Vec<Event> = Vec::new();
    let mut sent = 0;
    while sent < 2000 {
        let c = random_command(&mut r);
        if matches!(CommandKind::from_u8(c.kind), Some(CommandKind::Halt | CommandKind::Resume)) {
            continue;
        }
        seq += 1;
        sent += 1;
        eng.handle(&c.with_seq(seq, seq), &mut batch);
        if r.below(3) == 0 {
            feed.publish(&batch);
            batch.clear();
            if sent % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for i in [1, 2] {
        seq += 1;
        eng.handle(&Command::set_halted(i, true).with_seq(seq, seq), &mut batch);
    }
    feed.publish(&batch);

    let out = child.wait_with_output();
    let _ = std::fs::remove_file(&key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python subscriber failed: {:?}\n{stdout}\n{stderr}", out.status);
    for inst in [1u32, 2] {
        let (mut b, mut a) = (Vec::new(), Vec::new());
        eng.depth(inst, Side::Buy, usize::MAX, &mut b);
        eng.depth(inst, Side::Sell, usize::MAX, &mut a);
        let want = format!("\"bids\":{},\"asks\":{}}}", levels_json(&b), levels_json(&a));
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{{\"instrument\":{inst},")))
            .unwrap_or_else(|| panic!("no book line for {inst}:\n{stdout}\n{stderr}"));
        assert!(line.contains("\"halted\":true"), "{line}");
        assert!(line.ends_with(&want), "instrument {inst}\n got: {line}\nwant: {want}");
    }
    assert!(stdout.contains("gaps=0 crc_failures=0"), "{stdout}");
    feed.shutdown().unwrap();
}
