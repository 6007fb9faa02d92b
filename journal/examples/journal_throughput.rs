//! Journal write throughput: group commits of B commands (append + commit) for a fixed time, in
//! each durability mode. Bounded: at most `SECS` seconds (default 1) and 2M commands per run.
//!
//! ```sh
//! cargo run --release -p tickwire-journal --example journal_throughput -- [DIR] [SECS]
//! ```
//! DIR defaults to the system temp directory (use a directory on the disk you care about; /dev/shm
//! measures only the CPU side). The journal written is removed afterwards.

use std::time::{Duration, Instant};
use tickwire_core::{Command, OrderType, Side};
use tickwire_journal::{Durability, JournalConfig, JournalWriter};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    println!("{:<10} {:>6} {:>12} {:>10} {:>10} {:>12}", "mode", "batch", "commands/s", "MB/s", "syncs", "us/commit");
    for durability in [Durability::Sync, Durability::Async { interval_ms: 5 }, Durability::None] {
        for batch in [1usize, 64, 4096] {
            let dir = base.join(format!("tickwire-journal-throughput-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cfg = JournalConfig { durability, ..JournalConfig::new(&dir) };
            let mut w = JournalWriter::create(cfg, 1).expect("open journal");
            let proto = Command::new_order(1, 1, 1, Side::Buy, OrderType::LimitGtc, Some(1000), 10, None);
            let mut buf: Vec<Command> = Vec::with_capacity(batch);
            let start = Instant::now();
            let limit = Duration::from_secs_f64(secs);
            let mut seq = 1u64;
            let mut commits = 0u64;
            while start.elapsed() < limit && seq < 2_000_000 {
                buf.clear();
                for _ in 0..batch {
                    buf.push(Command { order_id: seq, ..proto }.with_seq(seq, seq));
                    seq += 1;
                }
                w.append(&buf).unwrap();
                w.commit().unwrap();
                commits += 1;
            }
            let el = start.elapsed().as_secs_f64();
            let n = (seq - 1) as f64;
            let st = w.stats();
            println!(
                "{:<10} {:>6} {:>12.0} {:>10.1} {:>10} {:>12.1}",
                durability.to_string(),
                batch,
                n / el,
                n * 88.0 / el / 1e6,
                st.syncs,
                el * 1e6 / commits as f64
            );
            drop(w);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
