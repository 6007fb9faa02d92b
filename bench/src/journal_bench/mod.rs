//! `tickwire-bench journal`: the command journal and snapshots, each figure against a baseline
//! measured in the same run on the same directory:
//!
//! 1. `fdatasync` alone (one 88-byte record written + `fdatasync`, sequential, in a zero-filled
//!    file): p50/p99;
//! 2. journaled commands/s through the engine pipeline, `sync` mode, group commit, every event
//!    released by a consumer gated on the durable sequence;
//! 3. raw baseline: sequential writes of the journal's mean group size (88-byte records) +
//!    `fdatasync` per group, into a zero-filled file;
//! 4. ack latency in `sync` mode, open loop: command due → its last event released to the gated
//!    consumer; against `fdatasync`'s own p50/p99;
//! 5. recovery: `recover_engine` (validate + replay) of a 10 M-command journal (1 M with --quick);
//! 6. snapshots of an engine holding ~1 M resting orders, taken by the shadow snapshotter while
//!    the pipeline runs an open-loop load: size, write time, and the longest command latency
//!    (consumer not gated: the matcher's own delay) during the snapshot vs outside it.
//!
//! The directory is on the real disk by default (`./target/` if it exists, else the current
//! directory); `--shm` puts it on /dev/shm, `--dir` anywhere. It is removed afterwards.

mod pipe;

use crate::match_bench::{engine_config, SEED};
use crate::report::Report;
use crate::workload;
use crate::Common;
use hdrhistogram::Histogram;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tickwire_journal::{recover_engine, Durability, JournalConfig, JournalWriter, RecoverOptions};

const BENCH: &str = "journal";
/// Journal record size (docs/journal.md).
const RECORD: usize = 88;

/// Options of `tickwire-bench journal`.
#[derive(clap::Args, Clone, Debug)]
pub struct JournalArgs {
    #[command(flatten)]
    pub common: Common,
    /// Directory for the journals (a fresh subdirectory is made and removed). Default: ./target
    /// (or .), on the real disk.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Use /dev/shm (tmpfs: measures the CPU side only; fdatasync is a no-op there).
    #[arg(long, conflicts_with = "dir")]
    pub shm: bool,
    /// Wait profile of the ack-latency run, as `tickwire serve --latency-profile`: `default`
    /// (backoff engine, journaler sleeps when idle) or `low` (yielding engine, journaler spins
    /// for up to `spin_us` after each group). The other runs are unaffected.
    #[arg(long, value_name = "default|low", default_value = "default")]
    pub latency_profile: String,
}

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    fsync_samples: usize,
    throughput_cmds: usize,
    ack_rate: u64,
    ack_secs: f64,
    replay_cmds: usize,
    resting: usize,
    snap_rate: u64,
    snap_secs: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                fsync_samples: 400,
                throughput_cmds: 600_000,
                ack_rate: 20_000,
                ack_secs: 2.0,
                replay_cmds: 1_000_000,
                resting: 1_000_000,
                snap_rate: 50_000,
                snap_secs: 4.0,
            }
        } else {
            Plan {
                fsync_samples: 3000,
                throughput_cmds: 3_000_000,
                ack_rate: 20_000,
                ack_secs: 6.0,
                replay_cmds: 10_000_000,
                resting: 1_000_000,
                snap_rate: 100_000,
                snap_secs: 8.0,
            }
        }
    }
}

/// A fresh directory, removed on drop.
struct BenchDir(PathBuf);

impl BenchDir {
    fn new(base: &Path, tag: &str) -> BenchDir {
        let p = base.join(format!("tickwire-journal-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        BenchDir(p)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// A file of `len` zero bytes, synced: writes into it allocate nothing. Not the same I/O as the
/// journal's `fallocate`d segments, whose unwritten extents are converted as records go in (an
/// `fdatasync` that covers a new block also commits that metadata): a lower bound for them.
fn zero_file(path: &Path, len: usize) -> File {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).expect("create file");
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("write zeros");
        left -= n;
    }
    f.sync_all().expect("fsync");
    f
}

/// `fdatasync` latency of one 88-byte record written sequentially: (p50, p99, max) in ns.
fn fdatasync_latency(dir: &Path, samples: usize) -> (f64, f64, f64) {
    let path = dir.join("fdatasync.bin");
    let f = zero_file(&path, samples * RECORD + 4096);
    let rec = [0x5au8; RECORD];
    let mut h = hist();
    for i in 0..samples {
        f.write_all_at(&rec, (i * RECORD) as u64).expect("write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let _ = std::fs::remove_file(&path);
    (h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64, h.max() as f64)
}

/// Raw sequential write + `fdatasync` per group of `batch` records for about `secs` (at most
/// `max_records`): records/s.
fn raw_write(dir: &Path, batch: usize, secs: f64, max_records: usize) -> f64 {
    let path = dir.join("raw.bin");
    let file_len = 64 << 20;
    let f = zero_file(&path, file_len);
    let buf = vec![0xa5u8; batch * RECORD];
    let (mut off, mut records) = (0usize, 0usize);
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs && records < max_records {
        if off + buf.len() > file_len {
            off = 0;
        }
        f.write_all_at(&buf, off as u64).expect("write");
        f.sync_data().expect("fdatasync");
        off += buf.len();
        records += batch;
    }
    let rate = records as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    rate
}

/// Writes the commands of a generated workload of about `n` commands as a journal (group
/// commits of 4096, `none` durability then one final sync: building it is not what is measured),
/// then times `recover_engine`. Returns (commands, total s, replay-only s, direct s, state hash
/// matches); direct: the same commands from memory into an engine.
fn replay(dir: &Path, n: usize) -> (u64, f64, f64, f64, bool) {
    let w = workload::generate(SEED ^ 0x5EED, n);
    let cfg = JournalConfig { durability: Durability::None, ..JournalConfig::new(dir) };
    let mut writer = JournalWriter::create(cfg, 1).expect("journal");
    for chunk in w.cmds.chunks(4096) {
        writer.append(chunk).expect("append");
        writer.commit().expect("commit");
    }
    writer.close().expect("close");
    // Baseline: the same commands from memory straight into an engine.
    let t = Instant::now();
    let expected = {
        let mut e = tickwire_core::Engine::new(&engine_config()).expect("engine");
        let mut sink = tickwire_core::event::CountingSink::default();
        for c in &w.cmds {
            e.handle(c, &mut sink);
        }
        e.state_hash()
    };
    let direct = t.elapsed().as_secs_f64();
    let total = w.cmds.len() as u64;
    drop(w);
    let t = Instant::now();
    let (engine, rep) = recover_engine(dir, &engine_config(), RecoverOptions::default()).expect("recover");
    let all = t.elapsed().as_secs_f64();
    let ok = engine.state_hash() == expected && rep.replayed == total;
    (total, all, rep.replay_time.as_secs_f64(), direct, ok)
}

fn us(ns: f64) -> String {
    format!("{:.1} us", ns / 1e3)
}

/// Runs the whole benchmark.
pub fn run(a: &JournalArgs) {
    let c = &a.common;
    let plan = Plan::new(c.quick);
    // The ack run's waits: the same profiles, and the same code choosing them, as `tickwire serve`.
    let mut wait = tickwire_gateway::config::WaitSettings::default();
    if let Err(e) = wait.apply_profile(&a.latency_profile) {
        eprintln!("tickwire-bench journal: --latency-profile: {e}");
        std::process::exit(2);
    }
    let mut r = Report::new(c.json);
    let t0 = Instant::now();
    let (base, kind) = match (&a.dir, a.shm) {
        (Some(d), _) => (d.clone(), "as given"),
        (None, true) => (PathBuf::from("/dev/shm"), "tmpfs /dev/shm: fdatasync is nearly free, CPU side only"),
        (None, false) => {
            let t = PathBuf::from("target");
            (if t.is_dir() { t } else { PathBuf::from(".") }, "real disk (default)")
        }
    };
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    r.note(&format!("journal directory: {} ({kind})", base.display()));
    let dir_s = ("dir", base.display().to_string());
    let mut sanity: Vec<String> = Vec::new();

    // --- 1. fdatasync alone -----------------------------------------------------------------------
    let d = BenchDir::new(&base, "fsync");
    let (fs50, fs99, fsmax) = fdatasync_latency(&d.0, plan.fsync_samples);
    drop(d);
    let samples = ("samples", plan.fsync_samples.to_string());
    r.add(BENCH, "fdatasync_p50", fs50, "ns", &[samples.clone(), dir_s.clone()]);
    r.add(BENCH, "fdatasync_p99", fs99, "ns", &[samples, ("max_ns", format!("{fsmax:.0}"))]);

    // --- 2. journaled throughput through the pipeline (sync, group commit) ------------------------
    let w = workload::generate(SEED, plan.throughput_cmds);
    let mean_batch;
    let journaled;
    {
        let d = BenchDir::new(&base, "throughput");
        match pipe::throughput(&w, &d.0) {
            Ok(t) => {
                mean_batch = (t.commands as f64 / t.batches.max(1) as f64).max(1.0);
                journaled = t.rate;
                r.add(
                    BENCH,
                    "journaled_throughput",
                    t.rate,
                    "cmd/s",
                    &[
                        ("cmds", t.commands.to_string()),
                        ("mode", "sync".into()),
                        ("max_batch", pipe::THROUGHPUT_MAX_BATCH.to_string()),
                        ("group_commits", t.batches.to_string()),
                        ("mean_group", format!("{mean_batch:.0}")),
                        ("max_group", t.max_batch.to_string()),
                        ("MBps", format!("{:.1}", t.rate * RECORD as f64 / 1e6)),
                    ],
                );
                sanity.push(format!(
                    "journaled run: state hash {:#018x}, journal replays to it: {}",
                    t.engine_hash,
                    if t.replay_matches { "yes" } else { "NO" }
                ));
            }
            Err(e) => {
                mean_batch = 4096.0;
                journaled = f64::NAN;
                sanity.push(format!("journaled_throughput: not measured: {e}"));
            }
        }
    }

    // --- 3. raw sequential write + fdatasync per group, same group size ---------------------------
    let batch = mean_batch.round() as usize;
    let d = BenchDir::new(&base, "raw");
    let raw = raw_write(&d.0, batch, if c.quick { 1.5 } else { 4.0 }, plan.throughput_cmds * 4);
    drop(d);
    r.add(
        BENCH,
        "raw_write_throughput",
        raw,
        "rec/s",
        &[("group", batch.to_string()), ("MBps", format!("{:.1}", raw * RECORD as f64 / 1e6))],
    );
    if journaled.is_finite() {
        r.add(BENCH, "journaled_vs_raw", journaled / raw, "x", &[]);
    }

    // --- 4. ack latency (sync) ----------------------------------------------------------------------
    let ack = {
        let d = BenchDir::new(&base, "ack");
        pipe::ack_latency(&w, &d.0, plan.ack_rate, plan.ack_secs, &wait)
    };
    let mut ack_p99 = f64::NAN;
    match ack {
        Ok(l) => {
            let ex = |more: &[(&'static str, String)]| {
                let mut v = vec![
                    ("rate", plan.ack_rate.to_string()),
                    ("mode", "sync".to_string()),
                    ("profile", a.latency_profile.clone()),
                ];
                v.extend_from_slice(more);
                v
            };
            r.add(BENCH, "ack_p50", l.p50, "ns", &ex(&[("samples", l.samples.to_string())]));
            r.add(BENCH, "ack_p99", l.p99, "ns", &ex(&[]));
            r.add(BENCH, "ack_p99_9", l.p99_9, "ns", &ex(&[("max_ns", format!("{:.0}", l.max))]));
            ack_p99 = l.p99;
            if !l.sustained {
                sanity.push(format!("ack latency at {}/s: NOT sustained (sender fell behind)", plan.ack_rate));
            }
        }
        Err(e) => sanity.push(format!("ack latency: not measured: {e}")),
    }

    // --- 5. recovery replay ---------------------------------------------------------------------
    let d = BenchDir::new(&base, "replay");
    let (n, all, replay_only, direct, ok) = replay(&d.0, plan.replay_cmds);
    drop(d);
    let replay_rate = n as f64 / all;
    r.add(
        BENCH,
        "replay_rate",
        replay_rate,
        "cmd/s",
        &[
            ("cmds", n.to_string()),
            ("total_s", format!("{all:.2}")),
            ("replay_only_cmd_s", format!("{:.0}", n as f64 / replay_only)),
            ("engine_from_memory_cmd_s", format!("{:.0}", n as f64 / direct)),
        ],
    );
    sanity.push(format!("replay: state hash equals a direct run of the same commands: {}", if ok { "yes" } else { "NO" }));

    // --- 6. snapshot of ~1 M resting orders under load ---------------------------------------------
    let d = BenchDir::new(&base, "snapshot");
    let mut pause = f64::NAN;
    match pipe::snapshot_pause(&w, &d.0, plan.resting, plan.snap_rate, plan.snap_secs) {
        Ok(s) => {
            r.add(BENCH, "snapshot_bytes", s.bytes as f64, "bytes", &[("orders", s.orders.to_string())]);
            r.add(
                BENCH,
                "snapshot_write_ms",
                s.write_ms,
                "ms",
                &[
                    ("export_encode_ms", format!("{:.1}", s.encode_ms)),
                    ("write_fsync_rename_ms", format!("{:.1}", s.io_ms)),
                    ("verify_ms", format!("{:.1}", s.verify_ms)),
                    ("request_to_done_ms", format!("{:.1}", s.total_ms)),
                ],
            );
            r.add(
                BENCH,
                "snapshot_pause_max",
                s.max_during,
                "ns",
                &[
                    ("rate", plan.snap_rate.to_string()),
                    ("samples_during", s.samples_during.to_string()),
                    ("baseline_max_ns", format!("{:.0}", s.max_outside)),
                    ("baseline_p99_9_ns", format!("{:.0}", s.p99_9_outside)),
                    ("p99_9_during_ns", format!("{:.0}", s.p99_9_during)),
                ],
            );
            pause = s.max_during - s.max_outside;
            sanity.push(format!(
                "snapshot: {} orders at sequence {}, matcher state hash equals the snapshot's: {}",
                s.orders,
                s.seq,
                if s.hash_matches { "yes" } else { "NO" }
            ));
        }
        Err(e) => sanity.push(format!("snapshot: not measured: {e}")),
    }
    drop(d);

    r.finish();
    r.note("");
    r.note("GOALS:");
    let goal = |name: &str, ok: bool, detail: String| {
        r.note(&format!("  [{}] {name}: {detail}", if ok { "PASS" } else { "FAIL" }));
    };
    goal(
        "journaled throughput >= 1 M commands/s (sync)",
        journaled >= 1e6,
        format!("{:.2} M/s", journaled / 1e6),
    );
    goal("replay >= 5 M commands/s", replay_rate >= 5e6, format!("{:.2} M/s (validate + replay)", replay_rate / 1e6));
    goal(
        &format!("sync ack p99 <= fdatasync p99 + 50 us (profile {})", a.latency_profile),
        ack_p99 <= fs99 + 50_000.0,
        format!("ack p99 {} vs fdatasync p99 {} + 50 us; {}", us(ack_p99), us(fs99), wait.describe()),
    );
    r.note(&format!(
        "  (info) snapshot pause: longest command delay during the snapshot minus outside it: {}",
        us(pause)
    ));
    r.note("");
    r.note("SANITY:");
    for s in &sanity {
        r.note(&format!("  {s}"));
    }
    r.note("");
    for line in NOTES.lines() {
        r.note(line);
    }
    r.note(&format!("(total {:.1} s)", t0.elapsed().as_secs_f64()));
}

/// How to read the figures (also in docs/journal.md).
pub const NOTES: &str = "\
NOTES:
  - fdatasync_*: one 88-byte record written then fdatasync'ed, sequentially, in a zero-filled file.
  - raw_write_throughput: the same, in groups of the journaled run's mean group size; the journal
    writes into fallocate'd segments (unwritten extents: the file system converts them as it goes),
    so raw is an upper bound, not the same I/O.
  - journaled_throughput: producer -> inbound ring -> matcher, and the journaler in parallel
    (sync mode: a group's events are released after its fdatasync); the clock stops when the gated
    consumer has the last command's last event.
  - ack_*: open loop at the given rate; latency = release to the gated consumer minus the command's
    due time (so sender delays count). A command that arrives while a group is being synced waits
    for that fdatasync and then its own: under load the tail approaches 2 x fdatasync.
  - replay_rate: recover_engine on the journal written just before (page cache warm): validate
    every segment and record, then replay into a fresh engine. replay_only excludes validation.
  - snapshot_*: engine with ~1 M resting orders (the workload's book plus a deep book far from
    the market); the shadow engine (a copy, following the journal) exports, encodes (rkyv),
    writes (temp, fsync, rename, dir fsync) and verifies by reading back. The matcher is never
    involved; snapshot_pause_max is the longest command latency (consumer not gated on the
    journal) while the snapshot was in progress, baseline_max_ns the longest outside it.
  - Shared 2-core machine: the matcher, journaler, snapshotter and client threads share 2 CPUs
    with other work, so maxima include scheduling delays.";
