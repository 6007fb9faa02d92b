//! The pipeline runs of the journal bench: the engine pipeline with the journaler on its inbound
//! side (`sync` mode) and, for the snapshot run, the shadow snapshotter.
//!
//! One client thread sends and consumes (the 2-core development machines cannot give a spinning
//! producer and consumer their own CPUs next to the matcher, journaler and snapshotter).

use crate::match_bench::{engine_config, prefilled_engine};
use crate::workload::{self, Workload};
use hdrhistogram::Histogram;
use std::path::Path;
use std::time::{Duration, Instant};
use tickwire_gateway::config::WaitSettings;
use tickwire_core::pipeline::{EventConsumer, Pipeline, PipelineConfig};
use tickwire_core::ring::WaitStrategyKind;
use tickwire_core::{Command, Engine, OrderType, Seq, Side};
use tickwire_journal::snapshot::write_snapshot;
use tickwire_journal::{
    copy_engine, recover_engine, JournalConfig, JournalWriter, Journaler, RecoverOptions, SnapshotConfig, Snapshotter,
};

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Rig {
    p: Pipeline,
    cons: EventConsumer,
    journaler: Journaler,
    first: Seq,
}

/// Group-commit limit of the throughput run (the journal's `max_batch`; default 4096).
pub const THROUGHPUT_MAX_BATCH: usize = 16_384;

/// Pipeline around `engine`, journaler (`sync`, default segments, groups of at most `max_batch`)
/// on `dir` from the engine's next sequence, one event consumer (gated on the durable sequence if
/// `gated`). `wait`: the engine's and consumers' wait strategy.
/// `idle_spin`: the journaler's spin after each group (`Journaler::spawn_with_idle_spin`).
fn start(engine: Engine, dir: &Path, gated: bool, max_batch: usize, wait: WaitStrategyKind, idle_spin: Duration) -> Result<Rig, String> {
    let first = engine.last_cmd_seq() + 1;
    let jcfg = JournalConfig { max_batch, ..JournalConfig::new(dir) };
    let writer = JournalWriter::create(jcfg, first).map_err(|e| e.to_string())?;
    let mut cfg = PipelineConfig::new(engine_config());
    cfg.inbound_side_consumers = 1;
    cfg.engine_cpu = Some(cpus() - 1);
    cfg.wait = wait;
    let (mut p, mut consumers) = Pipeline::start_with_engine(engine, cfg, 1).map_err(|e| e.to_string())?;
    let side = p.take_inbound_side_consumers().pop().ok_or("no inbound side consumer")?;
    let journaler = Journaler::spawn_with_idle_spin(writer, side, idle_spin).map_err(|e| e.to_string())?;
    let mut cons = consumers.pop().ok_or("no consumer")?;
    if gated {
        assert!(journaler.durable().gate(&mut cons), "gate the event consumer");
    }
    Ok(Rig { p, cons, journaler, first })
}

/// Result of the throughput run.
pub struct Throughput {
    pub commands: u64,
    pub rate: f64,
    pub batches: u64,
    pub max_batch: u64,
    pub engine_hash: u64,
    pub replay_matches: bool,
}

/// Every command of the workload's main stream as fast as the pipeline takes it; the clock stops
/// when the gated consumer has the last command's last event.
pub fn throughput(w: &Workload, dir: &Path) -> Result<Throughput, String> {
    let engine = prefilled_engine(w);
    // The journal starts after the prefill: a snapshot of the prefilled engine makes the
    // directory recoverable on its own (checked below).
    write_snapshot(dir, &engine.snapshot()).map_err(|e| e.to_string())?;
    let main = w.main_cmds();
    let n = main.len() as u64;
    let mut rig = start(engine, dir, true, THROUGHPUT_MAX_BATCH, WaitStrategyKind::Yielding { spins: 1000 }, Duration::ZERO)?;
    let mut prod = rig.p.producer();
    let window = (prod.capacity() as u64 / 2).min(16_384);
    let (mut sent, mut done) = (0u64, 0u64);
    let t0 = Instant::now();
    while done < n {
        rig.cons.poll(4096, |ev, _| done += ev.is_last_in_command() as u64);
        let room = (window - (sent - done)).min(n - sent).min(256);
        for c in &main[sent as usize..(sent + room) as usize] {
            prod.send(*c);
        }
        sent += room;
    }
    let dt = t0.elapsed();
    drop(rig.cons);
    let engine = rig.p.shutdown();
    rig.journaler.stop();
    let st = rig.journaler.join().map_err(|e| e.to_string())?;
    let engine_hash = engine.state_hash();
    drop(engine);
    let replay_matches = match recover_engine(dir, &engine_config(), RecoverOptions::default()) {
        Ok((e, rep)) => e.state_hash() == engine_hash && rep.next_seq() == rig.first + n,
        Err(_) => false,
    };
    Ok(Throughput {
        commands: n,
        rate: n as f64 / dt.as_secs_f64(),
        batches: st.batches,
        max_batch: st.max_batch,
        engine_hash,
        replay_matches,
    })
}

/// Percentiles (ns) of an open-loop run.
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub sustained: bool,
}

/// Open loop at `rate`: command `i` is due at `start + i/rate`; its latency is the time its last
/// event reached the consumer (gated on the durable sequence) minus its due time. The first 10%
/// are warm-up.
/// The engine and journaler wait as `tickwire serve` does under `wait`'s profile (default: the
/// backoff strategy, spin then yield then sleep, since with more threads than CPUs a spinning
/// matcher would keep the journaler off the CPU).
pub fn ack_latency(w: &Workload, dir: &Path, rate: u64, secs: f64, wait: &WaitSettings) -> Result<Latency, String> {
    let main = w.main_cmds();
    let m = ((rate as f64 * secs) as usize).min(main.len());
    let mut rig = start(prefilled_engine(w), dir, true, JournalConfig::DEFAULT_MAX_BATCH, wait.engine_wait(), wait.journal_spin())?;
    let mut prod = rig.p.producer();
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| e.to_string())?;
    let clock = Instant::now();
    let now = || clock.elapsed().as_nanos() as u64;
    let start_ns = now() + 2_000_000;
    let due = |i: u64| start_ns + (i as u128 * 1_000_000_000 / rate as u128) as u64;
    let (first, warm) = (rig.first, m as u64 / 10);
    let (mut i, mut done, mut last_lag) = (0u64, 0u64, 0u64);
    while done < m as u64 {
        let got = rig.cons.poll(64, |ev, _| {
            if ev.is_last_in_command() {
                let k = ev.cmd_seq - first;
                if k >= warm {
                    h.saturating_record(now().saturating_sub(due(k)).max(1));
                }
                done += 1;
            }
        });
        let mut sent = false;
        if i < m as u64 {
            let d = due(i);
            let t = now();
            if t >= d && prod.try_send(main[i as usize]).is_ok() {
                last_lag = t - d;
                i += 1;
                sent = true;
            }
        }
        if got == 0 && !sent {
            idle(i < m as u64, due(i.min(m as u64 - 1)), now());
        }
    }
    drop(rig.cons);
    rig.p.shutdown();
    rig.journaler.stop();
    rig.journaler.join().map_err(|e| e.to_string())?;
    let run_ns = m as u64 * 1_000_000_000 / rate;
    let q = |x: f64| h.value_at_quantile(x) as f64;
    Ok(Latency {
        samples: h.len(),
        p50: q(0.5),
        p99: q(0.99),
        p99_9: q(0.999),
        max: h.max() as f64,
        sustained: last_lag < (run_ns / 100).max(1_000_000),
    })
}

/// The open-loop client has nothing to do: sleep a little if the next command is not due for a
/// while, yield if it is due in more than 5 µs (the machine has fewer CPUs than busy threads),
/// else spin.
#[inline]
fn idle(sending: bool, next_due: u64, now: u64) {
    if !sending || next_due > now + 60_000 {
        std::thread::sleep(std::time::Duration::from_micros(20));
    } else if next_due > now + 5_000 {
        // Let the journaler (or the matcher) have this CPU if it is waiting for one.
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Result of the snapshot run.
pub struct SnapshotRun {
    pub orders: u64,
    pub seq: Seq,
    pub bytes: u64,
    pub encode_ms: f64,
    pub io_ms: f64,
    pub verify_ms: f64,
    /// Export + encode + write (what a snapshot costs before its verification).
    pub write_ms: f64,
    /// Request to verified result.
    pub total_ms: f64,
    pub samples_during: u64,
    pub max_during: f64,
    pub p99_9_during: f64,
    pub max_outside: f64,
    pub p99_9_outside: f64,
    pub hash_matches: bool,
}

/// The prefilled engine plus passive orders far from the market up to `resting` orders.
fn deep_engine(w: &Workload, resting: usize) -> Engine {
    let mut e = prefilled_engine(w);
    let mut sink = tickwire_core::event::CountingSink::default();
    let mut seq = e.last_cmd_seq();
    let extra = resting.saturating_sub(e.resting_orders());
    // 2000 levels per side, 1000..2999 ticks from the start price: the workload never trades there.
    for k in 0..extra as u64 {
        let side = if k % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = 1000 + ((k / 2) % 2000) as i64;
        let price = if side == Side::Buy { workload::START_PRICE - off } else { workload::START_PRICE + off };
        let account = 3001 + (k % 4000) as u32;
        let c = Command::new_order(account, workload::INSTRUMENT, (1 << 40) + k, side, OrderType::LimitGtc, Some(price), 1 + k % 9, None);
        seq += 1;
        e.handle(&c.with_seq(seq, 0), &mut sink);
    }
    e
}

/// Open loop at `rate` for `secs` with ~`resting` resting orders; a snapshot is requested from
/// the shadow snapshotter a quarter of the way in. The consumer is not gated: latencies are the
/// matcher's (ring to ring), split into commands due while the snapshot was in progress and the
/// others.
pub fn snapshot_pause(w: &Workload, dir: &Path, resting: usize, rate: u64, secs: f64) -> Result<SnapshotRun, String> {
    let engine = deep_engine(w, resting);
    let shadow = copy_engine(&engine, &engine_config()).map_err(|e| e.to_string())?;
    let orders = engine.resting_orders() as u64;
    let main = w.main_cmds();
    let m = ((rate as f64 * secs) as usize).min(main.len());
    let mut rig = start(engine, dir, false, JournalConfig::DEFAULT_MAX_BATCH, WaitStrategyKind::default(), Duration::ZERO)?;
    // The shadow runs on the client's CPU (0), away from the matcher's (the last), at nice 10.
    let scfg = SnapshotConfig {
        every_commands: 0,
        every: None,
        keep: 1,
        on_stop: false,
        cpu: Some(0),
        ..SnapshotConfig::new(dir, engine_config())
    };
    let snap = Snapshotter::spawn(scfg, shadow, rig.journaler.durable()).map_err(|e| e.to_string())?;
    let mut prod = rig.p.producer();
    let clock = Instant::now();
    let now = || clock.elapsed().as_nanos() as u64;
    let start_ns = now() + 2_000_000;
    let due = |i: u64| start_ns + (i as u128 * 1_000_000_000 / rate as u128) as u64;
    let first = rig.first;
    let mut lat = vec![0u64; m];
    let (mut i, mut done) = (0u64, 0u64);
    let mut ticket = None;
    let mut requested = false;
    let (mut req_ns, mut done_ns) = (0u64, 0u64);
    let mut info = None;
    while done < m as u64 || info.is_none() {
        let got = rig.cons.poll(64, |ev, _| {
            if ev.is_last_in_command() {
                let k = ev.cmd_seq - first;
                lat[k as usize] = now().saturating_sub(due(k)).max(1);
                done += 1;
            }
        });
        let mut sent = false;
        if i < m as u64 {
            let d = due(i);
            let t = now();
            if t >= d && prod.try_send(main[i as usize]).is_ok() {
                i += 1;
                sent = true;
            }
        }
        if got == 0 && !sent {
            idle(i < m as u64, due(i.min(m as u64 - 1)), now());
        }
        if !requested && i >= m as u64 / 4 {
            requested = true;
            req_ns = now();
            ticket = Some(snap.request());
        }
        if let Some(r) = ticket.as_ref().and_then(|t| t.try_get()) {
            done_ns = now();
            info = Some(r.map_err(|e| e.to_string())?);
            ticket = None;
        }
    }
    let info = info.expect("snapshot result");
    drop(rig.cons);
    let engine = rig.p.shutdown();
    rig.journaler.stop();
    rig.journaler.join().map_err(|e| e.to_string())?;
    snap.stop();
    snap.join().map_err(|e| e.to_string())?;
    // Replaying the journal from the snapshot must give the matcher's final state.
    let hash_matches = match recover_engine(dir, &engine_config(), RecoverOptions::default()) {
        Ok((e, _)) => e.state_hash() == engine.state_hash(),
        Err(_) => false,
    };
    let hist = || Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds");
    let (mut during, mut outside) = (hist(), hist());
    let warm = m as u64 / 10;
    for (k, &l) in lat.iter().enumerate() {
        let d = due(k as u64);
        if d >= req_ns && d <= done_ns {
            during.saturating_record(l);
        } else if k as u64 >= warm {
            outside.saturating_record(l);
        }
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(SnapshotRun {
        orders,
        seq: info.last_cmd_seq,
        bytes: info.bytes,
        encode_ms: ms(info.encode_time),
        io_ms: ms(info.write_time),
        verify_ms: ms(info.verify_time),
        write_ms: ms(info.encode_time + info.write_time),
        total_ms: (done_ns - req_ns) as f64 / 1e6,
        samples_during: during.len(),
        max_during: during.max() as f64,
        p99_9_during: during.value_at_quantile(0.999) as f64,
        max_outside: outside.max() as f64,
        p99_9_outside: outside.value_at_quantile(0.999) as f64,
        hash_matches,
    })
}
