//! The PNG chart: fan-out latency by percentile (left) and the connection ramp (right).
//!
//! Text needs a font: the plotters `ab_glyph` backend is given a TrueType file found at run time
//! (DejaVu/Liberation in the usual places, or `TICKWIRE_CHART_FONT`); without one the chart is
//! drawn without any text rather than failing. No fontconfig or system library is linked.

use super::Outcome;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> bool {
    let path = std::env::var("TICKWIRE_CHART_FONT").ok().into_iter().chain(FONTS.iter().map(|s| s.to_string()));
    for p in path {
        if let Ok(bytes) = std::fs::read(&p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

pub fn draw(path: &Path, outs: &[Outcome], rate: f64) -> Result<(), String> {
    let text = load_font();
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(700);
    let colors = [RED, BLUE, GREEN];

    // Latency by percentile: x = -log10(1 - q) (0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99).
    let ymax = outs.iter().map(|o| o.hist.max() as f64 / 1e6).fold(0.1, f64::max) * 1.1;
    let cap = if text {
        format!("fan-out latency by percentile ({rate} commands/s)")
    } else {
        String::new()
    };
    let mut b = ChartBuilder::on(&left);
    b.margin(15);
    if text {
        b.caption(cap, ("sans-serif", 20)).x_label_area_size(45).y_label_area_size(60);
    }
    let mut c = b.build_cartesian_2d(0f64..4.5f64, 0f64..ymax).map_err(|e| e.to_string())?;
    let mut mesh = c.configure_mesh();
    if text {
        mesh.x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(10)
            .x_label_formatter(&|x| {
                let k = (x * 2.0).round() / 2.0;
                if (x - k).abs() > 1e-6 || k.fract() != 0.0 {
                    return String::new();
                }
                match k as i32 {
                    0 => "p0".into(),
                    1 => "p90".into(),
                    2 => "p99".into(),
                    3 => "p99.9".into(),
                    4 => "p99.99".into(),
                    _ => String::new(),
                }
            });
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (i, o) in outs.iter().enumerate() {
        if o.hist.is_empty() {
            continue;
        }
        let pts: Vec<(f64, f64)> = (0..=450)
            .map(|k| {
                let x = k as f64 / 100.0;
                let q = (1.0 - 10f64.powf(-x)).min(1.0);
                (x, o.hist.value_at_quantile(q) as f64 / 1e6)
            })
            .collect();
        let color = colors[i % colors.len()];
        let s = c.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(|e| e.to_string())?;
        if text {
            let label = format!("{} ({} subscribers)", o.server, o.connections);
            s.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if text {
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
    }

    // Ramp: connections over time.
    let tmax = outs.iter().flat_map(|o| o.ramp.last().map(|r| r.0)).fold(1.0, f64::max);
    let nmax = outs.iter().map(|o| o.target as f64).fold(1.0, f64::max) * 1.05;
    let mut b = ChartBuilder::on(&right);
    b.margin(15);
    if text {
        b.caption("connection ramp", ("sans-serif", 20)).x_label_area_size(45).y_label_area_size(70);
    }
    let mut c = b.build_cartesian_2d(0f64..tmax, 0f64..nmax).map_err(|e| e.to_string())?;
    let mut mesh = c.configure_mesh();
    if text {
        mesh.x_desc("seconds since the first client started").y_desc("connected subscribers");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (i, o) in outs.iter().enumerate() {
        let color = colors[i % colors.len()];
        c.draw_series(LineSeries::new(o.ramp.iter().map(|&(t, n)| (t, n as f64)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
