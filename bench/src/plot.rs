//! The SVG plot: latency percentiles per second (log scale) above, throughput per
//! second below, both against seconds since the scenario's start. It shows what the
//! table hides: warm-up, stalls, a backlog that grows, a drop-and-wait.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::stats::{Bin, Series};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Pick = fn(&Bin) -> f64;

/// Draws the report's timeline. `latency_stages` picks the stages whose percentiles
/// are drawn (all stages get a throughput line).
pub fn draw(report: &Report, latency_stages: &[&str], path: &Path) -> anyhow::Result<()> {
    let series: Vec<&Series> = report
        .timeline
        .iter()
        .filter(|s| !s.bins.is_empty())
        .collect();
    let root = SVGBackend::new(path, (1100, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let x_max = series
        .iter()
        .filter_map(|s| s.bins.last().map(|b| b.t + 1.0))
        .fold(1.0f64, f64::max);
    let chosen: Vec<&Series> = series
        .iter()
        .copied()
        .filter(|s| latency_stages.contains(&s.stage.as_str()))
        .collect();
    let caption = format!(
        "loadgen {} ({}): latency per second",
        report.scenario, report.commit
    );
    latency(&top, &caption, &chosen, x_max)?;
    throughput(&bottom, &series, x_max)?;
    root.present()?;
    Ok(())
}

/// Latency percentiles (p50, p99, max) per second, log scale.
fn latency(area: &Area, caption: &str, chosen: &[&Series], x_max: f64) -> anyhow::Result<()> {
    let values = |pick: Pick| {
        let bins = chosen.iter().flat_map(|s| s.bins.iter());
        bins.map(pick).filter(|v| v.is_finite() && *v > 0.0)
    };
    let y_max = values(|b| b.max_ms).fold(1.0f64, f64::max) * 1.5;
    let y_min = values(|b| b.p50_ms).fold(y_max, f64::min).max(0.01) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (by completion time)")
        .y_desc("latency, ms (log)")
        .draw()?;
    let percentiles: [(&str, Pick); 3] = [
        ("p50", |b| b.p50_ms),
        ("p99", |b| b.p99_ms),
        ("max", |b| b.max_ms),
    ];
    let lines = chosen.iter().flat_map(|s| percentiles.map(|p| (s, p)));
    for (color, (s, (label, pick))) in lines.enumerate() {
        let c = COLORS[color % COLORS.len()];
        let points = s.bins.iter().filter(|b| pick(b).is_finite());
        let points = points.map(|b| (b.t + 0.5, pick(b).max(y_min)));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(format!("{} {label}", s.stage))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Steps completed per second, every stage.
fn throughput(area: &Area, series: &[&Series], x_max: f64) -> anyhow::Result<()> {
    let bins = series.iter().flat_map(|s| s.bins.iter());
    let t_max = bins.map(|b| b.per_s).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..t_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("completed per second")
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points = s.bins.iter().map(|b| (b.t + 0.5, b.per_s));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(s.stage.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
