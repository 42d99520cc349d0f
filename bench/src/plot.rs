//! The SVG plot: latency percentiles per second (log scale) above, throughput per
//! second below, both against seconds since the scenario's start. It shows what the
//! table hides: warm-up, stalls, a backlog that grows, a drop-and-wait.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::stats::Series;

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

    // Latency percentiles, log scale.
    let chosen: Vec<&Series> = series
        .iter()
        .copied()
        .filter(|s| latency_stages.contains(&s.stage.as_str()))
        .collect();
    let y_max = chosen
        .iter()
        .flat_map(|s| s.bins.iter().map(|b| b.max_ms))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.5;
    let y_min = chosen
        .iter()
        .flat_map(|s| s.bins.iter().map(|b| b.p50_ms))
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(y_max, f64::min)
        .max(0.01)
        / 1.5;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "loadgen {} ({}): latency per second",
                report.scenario, report.commit
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (by completion time)")
        .y_desc("latency, ms (log)")
        .draw()?;
    let mut color = 0;
    for s in &chosen {
        type Pick = fn(&crate::stats::Bin) -> f64;
        let percentiles: [(&str, Pick); 3] = [
            ("p50", |b| b.p50_ms),
            ("p99", |b| b.p99_ms),
            ("max", |b| b.max_ms),
        ];
        for (label, pick) in percentiles {
            let c = COLORS[color % COLORS.len()];
            color += 1;
            let points: Vec<(f64, f64)> = s
                .bins
                .iter()
                .filter(|b| pick(b).is_finite())
                .map(|b| (b.t + 0.5, pick(b).max(y_min)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                .label(format!("{} {label}", s.stage))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Throughput per second.
    let t_max = series
        .iter()
        .flat_map(|s| s.bins.iter().map(|b| b.per_s))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
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
        let points: Vec<(f64, f64)> = s.bins.iter().map(|b| (b.t + 0.5, b.per_s)).collect();
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
    root.present()?;
    Ok(())
}
