//! A journal damaged BEFORE its tail (a bad record with valid records after it): the server
//! refuses to start and names the file and offset; `--truncate-at-corruption` starts it with the
//! journal cut at the bad record, and the recovered state is the replay of the prefix before it.

mod server_util;

use server_util::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tickwire_protocol::ExecType;

#[test]
fn mid_journal_corruption_refuses_start_unless_truncation_is_asked_for() {
    let dir = TempDir::new("corrupt-journal");
    let config = test_config("sync");
    let mut server = ServerProc::start(dir.path(), Some(&config));
    let mut c = Client::connect(server.addr).unwrap();
    c.logon(1, 0);
    for id in 1..=5u64 {
        c.send(limit_buy(id, 1, 100 + id as i64)).unwrap();
        let r = c.until_report(|r| r.client_order_id == id, Duration::from_secs(20));
        assert!(r.iter().any(|r| r.exec_type == ExecType::Accepted), "order {id} not accepted: {r:?}");
    }
    drop(c);
    server.sigterm();

    // Flip a byte inside the 2nd record (64-byte segment header, 88-byte records; docs/journal.md).
    let seg = std::fs::read_dir(dir.path().join("data/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "twj"))
        .expect("a journal segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[64 + 88 + 40] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
        cmd.args(["serve", "--no-feed", "--listen", "127.0.0.1:0", "--config"]).arg(dir.path().join("tickwire.toml"));
        cmd.arg("--data-dir").arg(dir.path().join("data"));
        cmd.args(extra).current_dir(dir.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };
    // Without the flag: refused, naming the segment file and an offset.
    let out = run(&[]).output().unwrap();
    assert!(!out.status.success(), "server started on a corrupt journal");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name) && err.contains("offset"), "refusal does not say where: {err}");

    // With the flag: starts; the state is the first command alone (the bad record and the rest
    // are cut), which one order resting at 101 shows.
    let mut child = run(&["--truncate-at-corruption"]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut recovered = None;
    for line in lines.map_while(Result::ok) {
        if let Some(h) = line.strip_prefix("recovered-state-hash: ") {
            recovered = Some(parse_hex(h));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut e = tickwire_core::Engine::new(&engine_config()).unwrap();
    let mut sink = Vec::new();
    let first = tickwire_core::Command::new_order(1, 1, 1, tickwire_core::Side::Buy, tickwire_core::OrderType::LimitGtc, Some(101), 1, None);
    e.handle(&first.with_seq(1, 0), &mut sink);
    assert_eq!(recovered, Some(e.state_hash()), "recovered state is not the prefix before the bad record");
}
