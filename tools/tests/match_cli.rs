//! The built `tickwire-match` binary: a golden run and bad arguments (clear message, non-zero
//! exit, never a panic).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tickwire-match");

fn golden(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden").join(file)
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickwire-match-cli-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tickwire-match")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless the run failed cleanly with a message containing `needle`.
fn assert_fails(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, stderr: {err}");
    assert!(o.status.code().is_some(), "killed by a signal: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

#[test]
fn basic_golden_through_the_binary() {
    let dir = scratch("basic");
    let (book, events) = (dir.join("book.csv"), dir.join("events.csv"));
    let o = run(&[
        "--orders",
        golden("basic.csv").to_str().unwrap(),
        "--levels",
        "3",
        "--out",
        book.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&book).unwrap(), fs::read_to_string(golden("basic.book.csv")).unwrap());
    assert_eq!(fs::read_to_string(&events).unwrap(), fs::read_to_string(golden("basic.events.csv")).unwrap());
    let err = stderr(&o);
    assert!(err.contains("commands 10, trades 5, events 34, rejects 0") && err.contains("commands/s"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn config_instrument_and_malformed_lines() {
    let dir = scratch("stp");
    let book = dir.join("book.csv");
    let o = run(&[
        "--orders",
        golden("malformed.csv").to_str().unwrap(),
        "--config",
        golden("malformed.toml").to_str().unwrap(),
        "--levels",
        "3",
        "--out",
        book.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&book).unwrap(), fs::read_to_string(golden("malformed.book.csv")).unwrap());
    let err = stderr(&o);
    let expected_errors = fs::read_to_string(golden("malformed.errors.txt")).unwrap();
    assert!(err.starts_with(&expected_errors), "{err}");
    assert!(err.contains("parse:trailing_garbage 3") && err.contains("outside_price_band 3"), "{err}");

    // Instrument 2's book of the stp file: one row per data line, 1 level.
    let o = run(&[
        "--orders",
        golden("stp.csv").to_str().unwrap(),
        "--config",
        golden("stp.toml").to_str().unwrap(),
        "--levels",
        "1",
        "--instrument",
        "2",
        "--out",
        book.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<String> = fs::read_to_string(&book).unwrap().lines().map(String::from).collect();
    assert_eq!(rows.len(), 21);
    assert_eq!(rows[12], "9999999999,0,-9999999999,0", "before instrument 2 has orders");
    assert_eq!(rows[13], "9999999999,0,50,1");
    assert_eq!(rows[15], "60,1,50,1");
    assert_eq!(rows[17], "9999999999,0,-9999999999,0", "after the mass cancel of instrument 2");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments() {
    let dir = scratch("bad");
    let out = dir.join("book.csv");
    let out = out.to_str().unwrap();
    let basic = golden("basic.csv");
    let basic = basic.to_str().unwrap();

    // clap errors: missing or invalid arguments (exit code 2).
    let o = run(&["--levels", "3", "--out", out]);
    assert_fails(&o, "--orders");
    assert_eq!(o.status.code(), Some(2));
    assert_fails(&run(&["--orders", basic, "--levels", "0", "--out", out]), "--levels");
    assert_fails(&run(&["--orders", basic, "--levels", "x", "--out", out]), "--levels");
    assert_fails(&run(&["--orders", basic, "--levels", "3"]), "--out");
    assert_fails(&run(&["--orders", basic, "--levels", "3", "--out", out, "--bogus"]), "--bogus");

    // Runtime errors: exit code 1 and a message naming the problem.
    let missing = dir.join("no-such-orders.csv");
    let o = run(&["--orders", missing.to_str().unwrap(), "--levels", "3", "--out", out]);
    assert_fails(&o, "cannot open orders file");
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["--orders", basic, "--levels", "3", "--out", out, "--config", dir.join("nope.toml").to_str().unwrap()]);
    assert_fails(&o, "cannot read config file");
    let bad_cfg = dir.join("bad.toml");
    fs::write(&bad_cfg, "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick_size = 0\nlot_size = 1\nmin_qty = 1\nmax_qty = 5\n")
        .unwrap();
    assert_fails(&run(&["--orders", basic, "--levels", "3", "--out", out, "--config", bad_cfg.to_str().unwrap()]), "tick_size");
    fs::write(&bad_cfg, "[[instruments]]\nid = 1\nsymbol = \"X\"\ntick = 1\n").unwrap();
    assert_fails(&run(&["--orders", basic, "--levels", "3", "--out", out, "--config", bad_cfg.to_str().unwrap()]), "bad.toml");
    assert_fails(&run(&["--orders", basic, "--levels", "3", "--out", out, "--instrument", "9"]), "instrument 9 is not configured");
    let no_dir = dir.join("missing-dir").join("book.csv");
    assert_fails(&run(&["--orders", basic, "--levels", "3", "--out", no_dir.to_str().unwrap()]), "cannot create book output");
    let bad_header = dir.join("bad-header.csv");
    fs::write(&bad_header, "new,1,1,1,buy,limit_gtc,100,10\n").unwrap();
    assert_fails(&run(&["--orders", bad_header.to_str().unwrap(), "--levels", "3", "--out", out]), "line 1: unknown column \"new\"");
    let copy = dir.join("copy.csv");
    fs::copy(golden("basic.csv"), &copy).unwrap();
    assert_fails(&run(&["--orders", copy.to_str().unwrap(), "--levels", "3", "--out", copy.to_str().unwrap()]), "is the orders file");
    assert_eq!(fs::read(&copy).unwrap(), fs::read(golden("basic.csv")).unwrap(), "orders file untouched");
    let empty = dir.join("empty.csv");
    fs::write(&empty, "# nothing\n").unwrap();
    assert_fails(&run(&["--orders", empty.to_str().unwrap(), "--levels", "3", "--out", out]), "no header line");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn example_config_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("match.example.toml");
    let cfg = tickwire_core::config_file::parse_config(&fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cfg.instruments.len(), 2);
    assert_eq!(cfg.account_stp.len(), 2);
}
