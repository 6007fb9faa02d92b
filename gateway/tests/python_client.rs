//! Runs `tools/python/client.py` (written from docs/protocol.md alone) against the `tickwire`
//! binary started on its embedded demo default, in a temp dir on free ports. Skipped, with a
//! message, when python3 is not installed.

mod server_util;

use server_util::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn python_client_logs_on_and_gets_its_reports() {
    let has_python = Command::new("python3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !matches!(has_python, Ok(s) if s.success()) {
        eprintln!("SKIPPED python_client: python3 is not installed");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python/client.py");
    let dir = TempDir::new("python");
    let mut srv = ServerProc::start(dir.path(), None);
    let run = |args: &[&str]| {
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--port")
            .arg(srv.addr.port().to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("client.py did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    // A resting buy from the demo trade key (account 1)...
    let (ok, text) = run(&["--side", "buy", "--qty", "5", "--price", "30000", "--client-order-id", "11"]);
    assert!(ok, "client.py failed:\n{text}");
    assert!(text.contains("LogonAccepted role=trade"), "{text}");
    assert!(text.contains("ExecutionReport #1 accepted side=buy order=11"), "{text}");
    // ...hit by an IOC sell from the second demo trade key (account 2).
    let (ok, text) = run(&[
        "--key",
        "3",
        "--secret",
        "tickwire-demo-trade2-secret",
        "--account",
        "2",
        "--side",
        "sell",
        "--qty",
        "3",
        "--price",
        "29990",
        "--order-type",
        "ioc",
        "--client-order-id",
        "12",
    ]);
    assert!(ok, "client.py failed:\n{text}");
    assert!(text.contains("fill side=sell order=12 account=2 instrument=1 price=30000 qty=3"), "{text}");
    // The demo trade key sees its partial fill in the replay.
    let (ok, text) = run(&["--last-seq-seen", "0", "--client-order-id", "13", "--qty", "1", "--price", "1"]);
    assert!(ok, "client.py failed:\n{text}");
    assert!(text.contains("#2 partial_fill side=buy order=11"), "{text}");
    // A bad secret is refused.
    let (ok, text) = run(&["--secret", "wrong"]);
    assert!(!ok && text.contains("LogonRejected reason=bad_signature"), "{text}");
    srv.sigterm();
}
