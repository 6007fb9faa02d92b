//! The pipeline parts of the match bench: throughput and open-loop latency through the inbound
//! ring, the pinned engine agent and the outbound ring.

use crate::workload::Workload;

/// Latency percentiles (ns) of one open-loop run.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub samples: u64,
    pub max_send_lag_ns: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

/// Median ops/s of `reps` runs through the pipeline.
pub fn throughput(_w: &Workload, _reps: usize) -> Result<(f64, Vec<f64>), String> {
    Err("the core pipeline (core/src/pipeline.rs) is not available yet".into())
}

/// One open-loop latency run at `rate` commands/s.
pub fn latency(_w: &Workload, _rate: u64, _secs: f64, _warmup_frac: f64) -> Result<Latency, String> {
    Err("the core pipeline (core/src/pipeline.rs) is not available yet".into())
}
