//! The `tickwire-feed` binary's read keys: a malformed or empty key file is refused at start
//! with the reason; a good one guards the port (401 without a key, the answer with one), and
//! `/stats` names the process.

#[path = "support/http_get.rs"]
mod http_get;
#[path = "support/reap.rs"]
mod reap;

use http_get::http_get;
use reap::Reap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn key_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tickwire-feed-keys-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

fn feed_cmd(keys: &PathBuf) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tickwire-feed"));
    c.args(["--demo", "--listen", "127.0.0.1:0", "--duration", "60", "--read-key-file"]).arg(keys);
    c
}

#[test]
fn bad_key_files_are_refused_at_start() {
    for (name, text, why) in [
        ("bad", "# readers\ngood-key\nhas space\n", "line 3"),
        ("empty", "# nothing yet\n\n", "no keys"),
    ] {
        let p = key_file(name, text);
        let out = feed_cmd(&p).output().unwrap();
        let _ = std::fs::remove_file(&p);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("--read-key-file") && err.contains(why), "{name}: {err}");
    }
    // `--duration` bounds the run even if a regression accepted the file.
    let out = feed_cmd(&PathBuf::from("/nonexistent/keys")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--read-key-file /nonexistent/keys"), "{err}");
    let out = feed_cmd(&PathBuf::from("/nonexistent/keys")).args(["--budget", "100"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("--budget 100 is outside"), "{err}");
}

#[test]
fn a_key_file_guards_the_port() {
    let p = key_file("good", "# readers\n  reader-1  \nreader-2\n");
    let mut child = Reap::new(feed_cmd(&p).stderr(Stdio::piped()).spawn().unwrap());
    let pid = child.child().id();
    let mut lines = BufReader::new(child.child().stderr.take().unwrap()).lines();
    // Bounded: the first line is the listening address (or the child died and lines end).
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = std::fs::remove_file(&p);
    let addr: Option<SocketAddr> = first
        .strip_prefix("tickwire-feed: listening on ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok());
    let addr = addr.unwrap_or_else(|| panic!("no address in {first:?}"));
    let refused = http_get(addr, "/stats");
    let with_key = http_get(addr, "/stats?key=reader-1");
    let second = http_get(addr, "/snapshot?instrument=1&key=reader-2");
    drop(child);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(with_key.starts_with("HTTP/1.1 200"), "{with_key}");
    assert!(with_key.contains(&format!("\"pid\":{pid},\"shard\":0,")), "{with_key}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}
