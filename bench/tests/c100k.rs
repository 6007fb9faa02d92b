//! A small bounded c100k run (CI): 2 feed shard processes on one port, 2 client processes on their
//! own source addresses, 2000 subscribers, a few seconds of order flow. Asserts behaviour only:
//! every subscriber connected and subscribed, no sequence gap, latency was measured, the JSON line
//! has every documented field, the chart was written, and nothing is left behind.

use std::process::Command;

#[test]
fn small_population_end_to_end() {
    let dir = std::env::temp_dir().join(format!("tickwire-c100k-test-{}", std::process::id()));
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
    assert_eq!(num("connections"), 2000.0, "{line}");
    assert_eq!(num("handshake_failures"), 0.0, "{line}");
    assert_eq!(num("gaps"), 0.0, "{line}");
    assert!(num("latency_samples") > 0.0, "{line}");
    assert!(num("delivered_per_sec") > 0.0, "{line}");
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
