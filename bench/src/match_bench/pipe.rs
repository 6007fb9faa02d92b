//! The pipeline parts of the match bench: throughput and open-loop latency through the inbound
//! ring, the pinned engine agent and the outbound ring (`tickwire_core::pipeline`).
//!
//! Every run starts a fresh pipeline around a freshly prefilled engine (the prefill is applied
//! by direct calls, untimed), so the rings start at command `PREFILL + 1`.
//!
//! Threads: the engine agent is pinned to the last CPU. With 3 or more CPUs the producer and the
//! consumer are separate threads (pinned to CPUs 0 and 1), as the brief describes. With fewer
//! (the 2-core development machines) three spinning threads would fight over two CPUs, so one
//! "client" thread does both jobs: it polls the outbound ring whenever it is not sending. The mode
//! is reported with every figure; `TICKWIRE_BENCH_PIPE=split|combined` overrides it.

use super::{engine_config, prefilled_engine};
use crate::workload::Workload;
use hdrhistogram::Histogram;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tickwire_core::pipeline::{CommandProducer, EventConsumer, Pipeline, PipelineConfig};
use tickwire_core::ring::WaitStrategyKind;
use tickwire_core::{Command, Seq};

/// How the producer and consumer run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Producer thread + consumer thread.
    Split,
    /// One thread sends and consumes.
    Combined,
}

impl Mode {
    /// `split` or `combined`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Split => "split",
            Mode::Combined => "combined",
        }
    }
}

/// CPUs of the machine, counted once before any pinning: `available_parallelism` reads the
/// calling thread's affinity mask, and the client thread pins itself to CPU 0 during a run, after
/// which a fresh count said 1 and the next run pinned the engine onto the client's CPU (the two
/// then shared one core in scheduler time slices: ~8 ms latency, a third of the throughput).
fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The producer/consumer mode of this run.
pub fn mode() -> Mode {
    match std::env::var("TICKWIRE_BENCH_PIPE").as_deref() {
        Ok("split") => Mode::Split,
        Ok("combined") => Mode::Combined,
        _ if cpus() >= 3 => Mode::Split,
        _ => Mode::Combined,
    }
}

/// Wait strategy of the engine thread (and of a producer waiting on a full ring): busy spin, as
/// a pinned production engine on its own core runs. A yielding or parking engine gives its CPU
/// away whenever it runs dry, which on a loaded machine costs a whole scheduler time slice
/// (milliseconds) per idle gap. `TICKWIRE_BENCH_WAIT=busy-spin|yielding|backoff` overrides it.
pub fn wait() -> WaitStrategyKind {
    std::env::var("TICKWIRE_BENCH_WAIT")
        .ok()
        .and_then(|v| WaitStrategyKind::parse(&v))
        .unwrap_or(WaitStrategyKind::BusySpin)
}

/// Description of the set-up, for the report.
pub fn describe() -> String {
    format!(
        "pipeline: mode {} ({} cpus), engine pinned to cpu {}, wait {}, inbound 2^16, outbound 2^18, batch 256",
        mode().name(),
        cpus(),
        cpus() - 1,
        wait().name()
    )
}

fn pin(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

fn start(w: &Workload) -> Result<(Pipeline, EventConsumer, Seq), String> {
    let engine = prefilled_engine(w);
    let first = engine.last_cmd_seq() + 1;
    let mut cfg = PipelineConfig::new(engine_config());
    cfg.engine_cpu = Some(cpus() - 1);
    cfg.wait = wait();
    let (p, mut consumers) = Pipeline::start_with_engine(engine, cfg, 1).map_err(|e| e.to_string())?;
    Ok((p, consumers.pop().expect("one consumer asked for"), first))
}

/// One throughput run: wall time from the first send to the last command's last event.
/// Returns (elapsed, engine state hash after shutdown).
fn throughput_once(w: &Workload) -> Result<(Duration, u64), String> {
    let main = w.main_cmds();
    let n = main.len() as u64;
    let (p, mut cons, _first) = start(w)?;
    let mut prod = p.producer();
    let dt = match mode() {
        Mode::Split => {
            let go = Arc::new(Barrier::new(3));
            std::thread::scope(|s| {
                let g = go.clone();
                let producer = s.spawn(move || {
                    pin(0);
                    g.wait();
                    for c in main {
                        prod.send(*c);
                    }
                });
                let g = go.clone();
                let cons = &mut cons;
                let consumer = s.spawn(move || {
                    pin(1.min(cpus() - 1));
                    g.wait();
                    let mut done = 0u64;
                    while done < n {
                        if cons.poll(4096, |ev, _| done += ev.is_last_in_command() as u64) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                    Instant::now()
                });
                go.wait();
                let t0 = Instant::now();
                producer.join().expect("producer thread");
                let end = consumer.join().expect("consumer thread");
                end - t0
            })
        }
        Mode::Combined => {
            pin(0);
            // In-flight bound: the inbound ring can never be full when we send, so a send never
            // waits while we are the only one who could drain the outbound ring.
            let window = (prod.capacity() as u64 / 2).min(16_384);
            let (mut sent, mut done) = (0u64, 0u64);
            let t0 = Instant::now();
            while done < n {
                cons.poll(4096, |ev, _| done += ev.is_last_in_command() as u64);
                let room = (window - (sent - done)).min(n - sent).min(256);
                for c in &main[sent as usize..(sent + room) as usize] {
                    prod.send(*c);
                }
                sent += room;
            }
            t0.elapsed()
        }
    };
    drop(cons);
    let engine = p.shutdown();
    Ok((dt, engine.state_hash()))
}

/// Median ops/s of `reps` throughput runs, every run's ops/s, and the final state hash.
pub fn throughput(w: &Workload, reps: usize) -> Result<(f64, Vec<f64>, u64), String> {
    let n = w.main_cmds().len() as f64;
    let mut rates = Vec::with_capacity(reps);
    let mut hash = 0;
    for _ in 0..reps {
        let (dt, h) = throughput_once(w)?;
        rates.push(n / dt.as_secs_f64());
        hash = h;
    }
    let all = rates.clone();
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok((rates[rates.len() / 2], all, hash))
}

/// Latency percentiles (ns) of one open-loop run.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// Commands sent.
    pub commands: u64,
    /// Commands recorded (after warm-up).
    pub samples: u64,
    /// Latest the producer was in sending a command (ns after its due time).
    pub max_send_lag_ns: u64,
    /// How late the last command was sent (ns): small when the rate was sustained.
    pub end_send_lag_ns: u64,
    /// Percentiles and max, ns.
    pub p50: f64,
    /// See `p50`.
    pub p90: f64,
    /// See `p50`.
    pub p99: f64,
    /// See `p50`.
    pub p99_9: f64,
    /// See `p50`.
    pub p99_99: f64,
    /// See `p50`.
    pub max: f64,
}

/// The schedule: command `i` is due `i / rate` seconds after `start_ns` (ns on `clock`).
#[derive(Clone, Copy)]
struct Schedule {
    clock: Instant,
    start_ns: u64,
    rate: u64,
}

impl Schedule {
    #[inline]
    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }
    #[inline]
    fn due(&self, i: u64) -> u64 {
        self.start_ns + (i as u128 * 1_000_000_000 / self.rate as u128) as u64
    }
}

/// Records, at each command's last event, `now - due(command)`.
struct Recorder {
    hist: Histogram<u64>,
    first: Seq,
    warmup: u64,
    done: u64,
}

impl Recorder {
    #[inline]
    fn poll(&mut self, cons: &mut EventConsumer, sch: &Schedule, limit: usize) -> usize {
        let (hist, first, warmup, done) = (&mut self.hist, self.first, self.warmup, &mut self.done);
        cons.poll(limit, |ev, _| {
            if ev.is_last_in_command() {
                let now = sch.now();
                let i = ev.cmd_seq - first;
                if i >= warmup {
                    hist.saturating_record(now.saturating_sub(sch.due(i)).max(1));
                }
                *done += 1;
            }
        })
    }
}

#[inline]
fn send_due(prod: &mut CommandProducer, c: &Command, due: u64) {
    prod.send(Command { ts_ns: due, ..*c });
}

/// One open-loop latency run at `rate` commands/s for `secs` seconds.
pub fn latency(w: &Workload, rate: u64, secs: f64, warmup_frac: f64) -> Result<Latency, String> {
    let main = w.main_cmds();
    let m = ((rate as f64 * secs) as usize).min(main.len());
    if m == 0 {
        return Err("no commands".into());
    }
    let cmds = &main[..m];
    let (p, mut cons, first) = start(w)?;
    let mut prod = p.producer();
    let clock = Instant::now();
    // Start 2 ms from now so every thread is ready.
    let sch = Schedule { clock, start_ns: clock.elapsed().as_nanos() as u64 + 2_000_000, rate };
    let hist = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut rec = Recorder { hist, first, warmup: (m as f64 * warmup_frac) as u64, done: 0 };
    let m = m as u64;
    let (lag, end_lag) = match mode() {
        Mode::Split => std::thread::scope(|s| {
            let producer = s.spawn(move || {
                pin(0);
                let (mut lag, mut last) = (0u64, 0u64);
                for (i, c) in cmds.iter().enumerate() {
                    let due = sch.due(i as u64);
                    let mut now = sch.now();
                    while now < due {
                        std::hint::spin_loop();
                        now = sch.now();
                    }
                    last = now - due;
                    lag = lag.max(last);
                    send_due(&mut prod, c, due);
                }
                (lag, last)
            });
            let (rec, cons) = (&mut rec, &mut cons);
            let consumer = s.spawn(move || {
                pin(1.min(cpus() - 1));
                while rec.done < m {
                    if rec.poll(cons, &sch, 4096) == 0 {
                        std::hint::spin_loop();
                    }
                }
            });
            let lag = producer.join().expect("producer thread");
            consumer.join().expect("consumer thread");
            lag
        }),
        Mode::Combined => {
            pin(0);
            let (mut lag, mut last) = (0u64, 0u64);
            let mut i = 0u64;
            while rec.done < m {
                // Small polls so a due command is never held up for long.
                rec.poll(&mut cons, &sch, 64);
                if i < m {
                    let due = sch.due(i);
                    let now = sch.now();
                    // try_send: this thread is the only consumer, so it must never wait on a full
                    // inbound ring (a late command stays due and is sent on the next turn).
                    if now >= due && prod.try_send(Command { ts_ns: due, ..cmds[i as usize] }).is_ok() {
                        last = now - due;
                        lag = lag.max(last);
                        i += 1;
                    }
                }
            }
            (lag, last)
        }
    };
    drop(cons);
    p.shutdown();
    let h = &rec.hist;
    let q = |x: f64| h.value_at_quantile(x) as f64;
    Ok(Latency {
        commands: m,
        samples: h.len(),
        max_send_lag_ns: lag,
        end_send_lag_ns: end_lag,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p99_9: q(0.999),
        p99_99: q(0.9999),
        max: h.max() as f64,
    })
}
