//! `plot`: latency versus throughput, one line per series (p99 solid with dots,
//! p50 thin), drawn as SVG with `plotters`. Text is left to the SVG viewer's
//! fonts, so drawing needs no font files.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Deserialize;

use crate::error::{BenchError, Result};
use crate::stats::Percentiles;

/// The fields of a result line the plot reads.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Point {
    pub series: String,
    pub mb_per_sec: f64,
    pub latency: Percentiles,
}

/// Result lines with a `series` field, grouped by series and sorted by throughput;
/// other lines (consume runs, memory, cost) are skipped.
pub fn series(jsonl: &str) -> Result<BTreeMap<String, Vec<Point>>> {
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v.get("series").is_none() {
            continue;
        }
        let p: Point = serde_json::from_value(v)?;
        out.entry(p.series.clone()).or_default().push(p);
    }
    for pts in out.values_mut() {
        pts.sort_by(|a, b| a.mb_per_sec.total_cmp(&b.mb_per_sec));
    }
    Ok(out)
}

fn plot_err<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Plot(e.to_string())
}

pub fn draw(groups: &BTreeMap<String, Vec<Point>>, title: &str, out: &Path) -> Result<()> {
    let all: Vec<&Point> = groups.values().flatten().collect();
    if all.is_empty() {
        return Err(BenchError::Plot("no result line has a series".into()));
    }
    let x_max = all.iter().map(|p| p.mb_per_sec).fold(0.0, f64::max) * 1.1 + 1.0;
    let lat = |p: &Point| [p.latency.p50_ms, p.latency.p99_ms];
    let ys: Vec<f64> = all
        .iter()
        .flat_map(|p| lat(p))
        .filter(|y| *y > 0.0)
        .collect();
    let y_min = ys.iter().copied().fold(f64::MAX, f64::min).max(0.01) / 1.5;
    let y_max = ys.iter().copied().fold(0.0, f64::max).max(y_min * 10.0) * 1.5;

    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("throughput (MB/s)")
        .y_desc("produce latency (ms, log scale)")
        .draw()
        .map_err(plot_err)?;
    for (i, (name, pts)) in groups.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let p99: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (p.mb_per_sec, p.latency.p99_ms.max(y_min)))
            .collect();
        let p50: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (p.mb_per_sec, p.latency.p50_ms.max(y_min)))
            .collect();
        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(p99.iter().map(|&xy| Circle::new(xy, 4, color.filled())))
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(p50, color.stroke_width(1)))
            .map_err(plot_err)?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"series":"local","mb_per_sec":300.0,"latency":{"p50_ms":250.0,"p90_ms":0,"p99_ms":500.0,"p999_ms":0,"max_ms":0},"label":"sat"}
{"label":"consume","mb_per_sec":400.0}
{"series":"local","mb_per_sec":30.0,"latency":{"p50_ms":60.0,"p90_ms":0,"p99_ms":105.0,"p999_ms":0,"max_ms":0}}
{"series":"s3s-fs","mb_per_sec":100.0,"latency":{"p50_ms":80.0,"p90_ms":0,"p99_ms":120.0,"p999_ms":0,"max_ms":0}}
"#;

    #[test]
    fn groups_series_sorted_by_throughput() {
        let g = series(LINES).unwrap();
        assert_eq!(g.keys().collect::<Vec<_>>(), vec!["local", "s3s-fs"]);
        let x: Vec<f64> = g["local"].iter().map(|p| p.mb_per_sec).collect();
        assert_eq!(x, vec![30.0, 300.0]);
        assert!(series("{not json").is_err());
    }

    #[test]
    fn draws_an_svg_with_every_series() {
        let dir = std::env::temp_dir().join(format!("kafscale-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("p.svg");
        draw(&series(LINES).unwrap(), "t", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for label in ["local p99", "local p50", "s3s-fs p99", "throughput (MB/s)"] {
            assert!(svg.contains(label), "missing {label}");
        }
        // Three p99 dots: two of local, one of s3s-fs.
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(draw(&BTreeMap::new(), "t", &out).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
