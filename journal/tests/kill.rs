//! Process-level crash test: a child process journals under load (sync durability) and prints
//! `D <seq>` each time the durable sequence advances; the parent kills it with SIGKILL at a
//! random moment, recovers, and checks that every command whose durability was signalled before
//! the kill is present, and that the journal holds exactly the generated command stream. The
//! next round restarts the child on the same journal (it recovers and goes on).
//!
//! Short by default (6 rounds). Longer: `TICKWIRE_JOURNAL_KILL_ROUNDS=300 cargo test -p
//! tickwire-journal --release --test kill -- --nocapture` (seed printed; `TICKWIRE_JOURNAL_SEED`
//! replays one). Journals go to /dev/shm unless `TICKWIRE_JOURNAL_TEST_DISK=1`.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tickwire_journal::{recover, ChannelSource, Durability, JournalConfig, JournalWriter, Journaler, RecoverOptions};

const CHILD_DIR: &str = "TICKWIRE_JOURNAL_CHILD_DIR";

/// The child's body: runs only when the parent test starts this binary with `CHILD_DIR` set.
#[test]
fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let cfg = JournalConfig {
        segment_bytes: 256 << 10,
        durability: Durability::Sync,
        max_batch: 512,
        ..JournalConfig::new(std::path::PathBuf::from(dir))
    };
    let (w, rec) = JournalWriter::open_dir(cfg, RecoverOptions::default()).expect("child: open journal");
    let start = rec.next_seq();
    drop(rec);
    let (tx, rx) = mpsc::sync_channel(4096);
    let j = Journaler::spawn(w, ChannelSource::new(rx)).expect("child: journaler");
    let durable = j.durable();
    // Producer: bursts of commands, ~1M/s at most, bounded in count.
    std::thread::spawn(move || {
        let mut s = start;
        while s < start + 2_000_000 {
            for _ in 0..1000 {
                if tx.send(command_for(s)).is_err() {
                    return;
                }
                s += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "START {start}").unwrap();
    out.flush().unwrap();
    let mut last = start - 1;
    let deadline = Instant::now() + Duration::from_secs(30); // bounded even if nobody kills us
    while Instant::now() < deadline {
        let d = durable.get();
        if d > last {
            // Signalled only after the barrier (Acquire) says it is on disk.
            writeln!(out, "D {d}").unwrap();
            out.flush().unwrap();
            last = d;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

enum Msg {
    Start(u64),
    Durable(u64),
}

#[test]
fn sigkill_under_load_loses_no_signalled_command() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return; // we are the child: only `child_process` runs
    }
    let rounds: u64 = std::env::var("TICKWIRE_JOURNAL_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let seed = seed("sigkill");
    let mut r = Rng(seed);
    let exe = std::env::current_exe().unwrap();
    let mut dir = TempDir::new("kill");
    let mut torn_tails = 0;
    for round in 0..rounds {
        if round > 0 && round % 20 == 0 {
            dir = TempDir::new("kill"); // keep each journal (and each recovery) small
        }
        let mut child = Command::new(&exe)
            .args(["--exact", "child_process", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let msg = if let Some(v) = line.strip_prefix("D ") {
                    Msg::Durable(v.parse().unwrap())
                } else if let Some(v) = line.strip_prefix("START ") {
                    Msg::Start(v.parse().unwrap())
                } else {
                    continue;
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        let start = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Msg::Start(s)) => s,
            _ => {
                let _ = child.kill();
                panic!("round {round}: the child did not start");
            }
        };
        std::thread::sleep(Duration::from_millis(5 + r.below(120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = rx
            .try_iter()
            .filter_map(|m| match m {
                Msg::Durable(d) => Some(d),
                Msg::Start(_) => None,
            })
            .max()
            .unwrap_or(start - 1);

        let rec = recover(dir.path(), RecoverOptions::default())
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): recovery failed: {e}"));
        torn_tails += (rec.truncated_bytes > 0) as u32;
        assert!(
            rec.last_seq >= acked,
            "round {round} (seed {seed}): durable {acked} was signalled but the journal ends at {}",
            rec.last_seq
        );
        assert!(rec.last_seq >= start - 1, "round {round}: lost commands of earlier rounds");
        let mut expect = 1;
        for c in rec.commands() {
            let c = c.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(c, command_for(expect), "round {round}: command {expect} differs");
            expect += 1;
        }
        assert_eq!(expect, rec.last_seq + 1);
        eprintln!(
            "round {round}: started at {start}, signalled durable {acked}, recovered {} ({} bytes of torn tail)",
            rec.last_seq, rec.truncated_bytes
        );
    }
    eprintln!("{rounds} rounds, {torn_tails} with a torn tail");
}
