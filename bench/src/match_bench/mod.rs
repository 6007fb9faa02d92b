//! `tickwire-bench match`: the matching engine on an exchange-core-like workload, measured
//! directly and through the ring pipeline, with matchcore 0.4 and a plain BTreeMap book as
//! baselines run on the same command stream in the same process.

pub mod mc;
pub mod plain;
mod pipe;

use crate::report::Report;
use crate::workload::{self, Workload};
use crate::Common;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tickwire_core::event::CountingSink;
use tickwire_core::{Engine, EngineConfig, Event, EventKind, EventSink, InstrumentConfig};

const BENCH: &str = "match";
/// Seed of the workload (fixed: every run measures the same stream).
pub const SEED: u64 = 0x7EC5_11E5_2024_0001;

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Measured commands (after the prefill).
    pub main_len: usize,
    /// Repetitions of each throughput measurement (median reported).
    pub reps: usize,
    /// Open-loop rates (commands/s) for the latency runs.
    pub rates: &'static [u64],
    /// Length of each latency run (the stream is long enough for the highest rate).
    pub latency_secs: f64,
    /// Share of each latency run, at its start, left out of the histogram (warm-up).
    pub warmup_frac: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan { main_len: 600_000, reps: 3, rates: &[50_000, 100_000, 200_000], latency_secs: 2.0, warmup_frac: 0.1 }
        } else {
            Plan { main_len: 3_000_000, reps: 5, rates: &[50_000, 100_000, 200_000], latency_secs: 10.0, warmup_frac: 0.1 }
        }
    }
}

/// The engine configuration of the bench: the server's embedded default capacities, one
/// instrument (tick 1, lot 1, no band), default STP `none`.
pub fn engine_config() -> EngineConfig {
    let mut cfg = EngineConfig::single_default();
    cfg.instruments = vec![InstrumentConfig::simple(workload::INSTRUMENT, "BENCH")];
    // Diagnostic override (e.g. to see how the preallocated capacity affects cache behaviour).
    if let Some(n) = std::env::var("TICKWIRE_BENCH_ORDERS_MAX").ok().and_then(|v| v.parse().ok()) {
        cfg.orders_max = n;
    }
    cfg
}

/// A fresh engine with the prefill applied.
pub fn prefilled_engine(w: &Workload) -> Engine {
    let mut e = Engine::new(&engine_config()).expect("bench engine config is valid");
    let mut sink = CountingSink::default();
    for c in w.prefill_cmds() {
        e.handle(c, &mut sink);
    }
    e
}

/// Counts events by kind (validation pass, untimed).
#[derive(Default)]
struct KindCounter {
    events: u64,
    by_kind: [u64; 16],
}

impl EventSink for KindCounter {
    fn push(&mut self, ev: &Event) {
        self.events += 1;
        self.by_kind[(ev.kind & 15) as usize] += 1;
    }
}

fn rate(ops: usize, dt: Duration) -> f64 {
    ops as f64 / dt.as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn fmt_rates(v: &[f64]) -> String {
    v.iter().map(|r| format!("{:.2}", r / 1e6)).collect::<Vec<_>>().join("/")
}

/// Runs the whole benchmark.
pub fn run(c: &Common) {
    let plan = Plan::new(c.quick);
    let mut r = Report::new(c.json);
    let t0 = Instant::now();
    let w = workload::generate(SEED, plan.main_len);
    let main = w.main_cmds();
    let n = main.len();
    for line in w.mix.describe() {
        r.note(&line);
    }
    r.note(&format!("(generated in {:.2} s, seed {SEED:#x})", t0.elapsed().as_secs_f64()));
    let mut sanity: Vec<String> = Vec::new();
    let direct_hash;
    let reps_extra = |v: &[f64]| vec![("reps", v.len().to_string()), ("cmds", n.to_string()), ("runs_mops", fmt_rates(v))];

    // --- Our engine, direct calls -------------------------------------------------------------
    {
        // Validation pass (untimed; also warms the code): events by kind, rejects.
        let mut e = prefilled_engine(&w);
        let mut k = KindCounter::default();
        for cmd in main {
            e.handle(cmd, &mut k);
        }
        let fills = k.by_kind[EventKind::Fill as usize];
        direct_hash = e.state_hash();
        let rejects = k.by_kind[EventKind::Rejected as usize];
        sanity.push(format!(
            "tickwire engine: fills {fills}, resting {}, rejects {rejects}, events {} ({:.2}/cmd), state_hash {:#018x}{}",
            e.resting_orders(),
            k.events,
            k.events as f64 / n as f64,
            e.state_hash(),
            if k.events == 0 { "  <-- engine emitted no events (stub?)" } else { "" }
        ));
        if fills != w.mix.fills || e.resting_orders() != w.mix.resting_end {
            sanity.push(format!(
                "  WARNING: engine differs from the plain book (fills {} vs {}, resting {} vs {})",
                fills,
                w.mix.fills,
                e.resting_orders(),
                w.mix.resting_end
            ));
        }
        r.add(BENCH, "bytes_per_order", e.bytes_per_order() as f64, "bytes", &[]);
        r.add(
            BENCH,
            "memory_bytes",
            e.memory_bytes() as f64,
            "bytes",
            &[("orders_max", engine_config().orders_max.to_string()), ("levels_max", engine_config().levels_max.to_string())],
        );
        r.add(
            BENCH,
            "memory_bytes_per_order_capacity",
            e.memory_bytes() as f64 / engine_config().orders_max as f64,
            "bytes",
            &[],
        );
    }
    // --- matchcore 0.4 and the plain book: validation passes (untimed) ----------------------
    let stream = mc::convert(w.prefill_cmds(), main);
    {
        let mut book = mc::prefilled(&stream);
        let mut cnt = mc::McCounter::default();
        for cmd in &stream.main {
            mc::execute(&mut book, cmd, &mut cnt);
        }
        sanity.push(format!(
            "matchcore 0.4: fills {}, resting {}, rejects {} (differs by design: see NOTES)",
            cnt.fills,
            mc::resting(&book),
            cnt.rejects
        ));
    }
    let plain_prefilled = || {
        let mut b = plain::PlainBook::new();
        let mut s = plain::PlainCounter::default();
        for cmd in w.prefill_cmds() {
            b.handle(cmd, &mut s);
        }
        b
    };
    {
        let mut b = plain_prefilled();
        let mut s = plain::PlainCounter::default();
        for cmd in main {
            b.handle(cmd, &mut s);
        }
        sanity.push(format!("plain btreemap: fills {}, resting {}, rejects {}", s.fills, b.resting_orders(), s.rejects));
    }

    // --- Direct-call throughput: ours, matchcore, plain, repetitions interleaved -------------
    // (A B C, A B C, ...: a change in machine load hits all three alike, keeping ratios fairer.)
    let run_direct = || {
        let mut e = prefilled_engine(&w);
        let mut sink = CountingSink::default();
        let t = Instant::now();
        for cmd in main {
            e.handle(cmd, &mut sink);
        }
        let dt = t.elapsed();
        black_box((&e, sink));
        dt
    };
    let run_mc = || {
        let mut book = mc::prefilled(&stream);
        let mut cnt = mc::McCounter::default();
        let t = Instant::now();
        for cmd in &stream.main {
            mc::execute(&mut book, cmd, &mut cnt);
        }
        let dt = t.elapsed();
        black_box((&book, cnt));
        dt
    };
    let run_plain = || {
        let mut b = plain_prefilled();
        let mut s = plain::PlainCounter::default();
        let t = Instant::now();
        for cmd in main {
            b.handle(cmd, &mut s);
        }
        let dt = t.elapsed();
        black_box((&b, s));
        dt
    };
    let (mut d_runs, mut m_runs, mut p_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        d_runs.push(rate(n, run_direct()));
        m_runs.push(rate(n, run_mc()));
        p_runs.push(rate(n, run_plain()));
    }
    drop(stream);
    let (direct, mcr, plr) = (median(&d_runs), median(&m_runs), median(&p_runs));
    r.add(BENCH, "throughput_direct", direct, "ops/s", &reps_extra(&d_runs));

    // --- Through the pipeline (rings + pinned engine agent) -----------------------------------
    r.note(&pipe::describe());
    let pipe_mode = ("mode", pipe::mode().name().to_string());
    let ring = pipe::throughput(&w, plan.reps);
    match &ring {
        Ok((rate, runs, hash)) => {
            let mut ex = reps_extra(runs);
            ex.push(pipe_mode.clone());
            r.add(BENCH, "throughput_ring", *rate, "ops/s", &ex);
            sanity.push(format!(
                "pipeline: state_hash {hash:#018x} ({})",
                if *hash == direct_hash { "same as direct" } else { "DIFFERS from direct" }
            ));
        }
        Err(why) => sanity.push(format!("throughput_ring: not measured: {why}")),
    }
    r.add(BENCH, "throughput_matchcore", mcr, "ops/s", &reps_extra(&m_runs));
    r.add(BENCH, "throughput_btreemap", plr, "ops/s", &reps_extra(&p_runs));
    r.add(BENCH, "throughput_ratio_vs_matchcore", direct / mcr, "x", &[]);
    r.add(BENCH, "throughput_ratio_vs_btreemap", direct / plr, "x", &[]);
    if let Ok((ring_rate, _, _)) = ring {
        r.add(BENCH, "ring_vs_direct", ring_rate / direct, "x", &[]);
    }

    // --- Open-loop latency through the pipeline ----------------------------------------------
    for &rate in plan.rates {
        match pipe::latency(&w, rate, plan.latency_secs, plan.warmup_frac) {
            Ok(l) => {
                let ex = |extra: &[(&'static str, String)]| {
                    let mut v = vec![("rate", rate.to_string()), pipe_mode.clone()];
                    v.extend_from_slice(extra);
                    v
                };
                // Sustained: the producer was (nearly) back on schedule at the end: its last send
                // was late by less than 1% of the run (and at most 1 ms is always fine). Otherwise
                // the pipeline could not keep up with the rate on this machine.
                let run_ns = l.commands as u128 * 1_000_000_000 / rate as u128;
                let sustained = (l.end_send_lag_ns as u128) < (run_ns / 100).max(1_000_000);
                if !sustained {
                    sanity.push(format!(
                        "latency at {rate}/s: NOT sustained on this machine (last command sent {:.1} ms late)",
                        l.end_send_lag_ns as f64 / 1e6
                    ));
                }
                let counts = [
                    ("samples", l.samples.to_string()),
                    ("max_lag_ns", l.max_send_lag_ns.to_string()),
                    ("sustained", if sustained { "yes" } else { "no" }.to_string()),
                ];
                r.add(BENCH, "latency_p50", l.p50, "ns", &ex(&counts));
                r.add(BENCH, "latency_p90", l.p90, "ns", &ex(&[]));
                r.add(BENCH, "latency_p99", l.p99, "ns", &ex(&[]));
                r.add(BENCH, "latency_p99_9", l.p99_9, "ns", &ex(&[]));
                r.add(BENCH, "latency_p99_99", l.p99_99, "ns", &ex(&[]));
                r.add(BENCH, "latency_max", l.max, "ns", &ex(&[]));
            }
            Err(why) => sanity.push(format!("latency at {rate}/s: not measured: {why}")),
        }
    }

    r.finish();
    r.note("");
    r.note("SANITY (end of the measured stream, each implementation from the same prefill):");
    sanity.push(format!(
        "workload generator (plain book): fills {}, resting {}",
        w.mix.fills, w.mix.resting_end
    ));
    for s in &sanity {
        r.note(&format!("  {s}"));
    }
    r.note("");
    for line in NOTES.lines() {
        r.note(line);
    }
    r.note(&format!("(total {:.1} s)", t0.elapsed().as_secs_f64()));
}

/// Where the comparison is not like for like (also in bench/README.md).
pub const NOTES: &str = "\
NOTES (like for like?):
  - matchcore 0.4 sweeps a crossing limit order (and an amend that crosses) with no price limit:
    once a GTC/IOC crosses, it takes liquidity at any price until its quantity is done. Ours and the
    plain book stop at the limit. So after the first divergent sweep the books differ: matchcore's
    fill and resting counts are not expected to match, and later cancels/amends may name orders
    matchcore already filled (its rejects count them).
  - matchcore has no client order ids: ids are command sequence numbers. The bench maps
    (account, order_id) -> matchcore id and builds every matchcore command BEFORE timing; our
    engine decodes 64-byte commands and looks ids up in its own index inside the timed loop.
  - Replace -> matchcore amend with a price-only patch (the workload's replaces restate the open
    quantity, which matchcore may no longer share); priority rules match (price change loses it).
  - Output: our engine emits full events (accepted, fill, trade, level_delta, replaced, cancelled...,
    about 3 per command) into a counting sink; matchcore returns an outcome value (it allocates a
    trade vector when it matches) of which only the trade count is read; the plain book reports
    fills to a counter and emits nothing else.
  - matchcore does per-command work for features the workload does not use: sequence-number and
    timestamp checks, a GTD expiry-queue check, and a pegged/price-conditional cascade check after
    every submit/amend. Ours validates the full docs/matching.md rule list (capacity, lot, band...).
  - No accounts / STP in matchcore or the plain book; the engine runs with STP mode none, so self
    trades trade in all three. No price band, halts, mass cancel, FOK or post-only in the workload.
  - The plain book uses std HashMap (SipHash), BTreeMap and VecDeque with no preallocation, as a
    plain reference implementation would.";
