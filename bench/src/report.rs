//! Benchmark output: a human table on stdout, or with `--json` one JSON object per line:
//! `{"bench":…,"metric":…,"value":…,"unit":…}` plus optional extra string/number fields.

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Metric {
    /// Benchmark name, e.g. "match".
    pub bench: &'static str,
    /// Metric name, e.g. "throughput_direct".
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Unit, e.g. "ops/s", "ns", "x", "bytes".
    pub unit: &'static str,
    /// Extra fields, e.g. ("rate", "100000") or ("backend", "epoll"). Numeric-looking values are
    /// written as JSON numbers.
    pub extra: Vec<(&'static str, String)>,
}

/// Collects metrics and prints them at the end (or as they come, in JSON mode).
pub struct Report {
    json: bool,
    rows: Vec<Metric>,
}

impl Report {
    /// A report; `json` selects JSON lines instead of a table.
    pub fn new(json: bool) -> Report {
        Report { json, rows: Vec::new() }
    }

    /// Records a metric (printed immediately in JSON mode).
    pub fn add(&mut self, bench: &'static str, metric: impl Into<String>, value: f64, unit: &'static str, extra: &[(&'static str, String)]) {
        let m = Metric { bench, metric: metric.into(), value, unit, extra: extra.to_vec() };
        if self.json {
            println!("{}", to_json(&m));
        }
        self.rows.push(m);
    }

    /// A free-text note (table mode only; stderr in JSON mode so stdout stays machine-readable).
    pub fn note(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// Prints the table (table mode).
    pub fn finish(&self) {
        if self.json {
            return;
        }
        println!("{:<8} {:<36} {:>16} {:<6} extra", "bench", "metric", "value", "unit");
        for m in &self.rows {
            let extra: Vec<String> = m.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<8} {:<36} {:>16} {:<6} {}", m.bench, m.metric, fmt_value(m.value), m.unit, extra.join(" "));
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn to_json(m: &Metric) -> String {
    let value = if m.value.is_finite() { format!("{}", m.value) } else { "null".to_string() };
    let mut s = format!(
        "{{\"bench\":{},\"metric\":{},\"value\":{},\"unit\":{}",
        json_str(m.bench),
        json_str(&m.metric),
        value,
        json_str(m.unit)
    );
    for (k, v) in &m.extra {
        let val = if v.parse::<f64>().is_ok() { v.clone() } else { json_str(v) };
        s.push_str(&format!(",{}:{}", json_str(k), val));
    }
    s.push('}');
    s
}
