//! A small bounded c100k run (CI): 2 feed shard processes on one port, 2 client processes on their
//! own source addresses, 2000 subscribers, a few seconds of order flow. Asserts behaviour only:
//! every subscriber connected and subscribed, no sequence gap, latency was measured, the JSON line
//! has every documented field, the chart was written, and nothing is left behind.
//!
//! CI runs `--server inproc` (the engine thread in the bench): `cargo test -p tickwire-bench`
//! does not build the `tickwire` server binary (another package: no `CARGO_BIN_EXE_tickwire`
//! here), and a stale one lying in the target directory must not decide whether CI passes. The
//! same run through `tickwire serve`'s gateway is opt-in: set `TICKWIRE_C100K_SERVER_BIN` to a
//! built `tickwire` (e.g. target/release/tickwire).

use std::process::Command;

#[test]
fn small_population_end_to_end() {
    run_small(&["--server", "inproc"], "inproc");
}

#[test]
fn small_population_through_the_gateway() {
    let Some(bin) = std::env::var_os("TICKWIRE_C100K_SERVER_BIN") else {
        eprintln!("skipped: set TICKWIRE_C100K_SERVER_BIN to a built `tickwire` to run c100k through the gateway");
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    run_small(&["--server", "tickwire", "--server-bin", &bin], "gateway");
}

/// One run at a time: each asserts that no `tickwire-c100k-*` ring is left in /dev/shm.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_small(mode: &[&str], order_path: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("tickwire-c100k-test-{}-{order_path}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("c100k.png");
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire-bench"))
        .args([
            "c100k",
            "--subscribers",
            "2000",
            "--shards",
            "2",
            "--client-procs",
            "2",
            "--rate",
            "10",
            "--duration",
            "3",
            "--connect-rate",
            "4000",
            "--ramp-timeout",
            "90",
            "--json",
            "--chart",
        ])
        .arg(&chart)
        .args(mode)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}\n{stdout}\n{stderr}", out.status);
    let line = stdout.lines().find(|l| l.contains("\"bench\":\"c100k\"")).unwrap_or_else(|| panic!("no JSON line: {stdout}\n{stderr}"));
    let num = |k: &str| -> f64 {
        let pat = format!("\"{k}\":");
        let at = line.find(&pat).unwrap_or_else(|| panic!("{k} missing: {line}")) + pat.len();
        line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect::<String>().parse().unwrap()
    };
    assert!(line.contains("\"server\":\"tickwire\""), "{line}");
    assert!(line.contains("\"backend\":\""), "{line}");
    assert!(line.contains(&format!("\"order_path\":\"{order_path}\"")), "{line}");
    assert_eq!(num("connections"), 2000.0, "{line}");
    assert_eq!(num("handshake_failures"), 0.0, "{line}");
    assert_eq!(num("gaps"), 0.0, "{line}");
    assert!(num("latency_samples") > 0.0, "{line}");
    assert!(num("delivered_per_sec") > 0.0, "{line}");
    if order_path == "gateway" {
        assert!(num("reports_accepted") > 0.0, "{line}");
        assert_eq!(num("send_errors"), 0.0, "{line}");
    }
    for k in ["connect_rate", "latency_p50", "latency_p99", "latency_p99_9", "rss_per_conn_bytes"] {
        let _ = num(k);
    }
    assert!(std::fs::metadata(&chart).map(|m| m.len() > 1000).unwrap_or(false), "chart not written");
    // The engine's ring is removed.
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!left.iter().any(|n: &String| n.starts_with("tickwire-c100k-")), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
