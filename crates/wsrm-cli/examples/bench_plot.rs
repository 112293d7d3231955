//! Draws the comparative benchmark's plot (issue 7): reliable one-way throughput against the
//! loss rate injected by `wsrm proxy`, one line per implementation and RM version, one panel
//! for 1 session and one for 64 concurrent sessions; the plain-SOAP ceiling (lossless) is a
//! horizontal line. Log-scale y axis (the implementations differ by orders of magnitude).
//!
//! ```text
//! cargo run --release -p wsrm-cli --example bench_plot -- bench/out/results.json docs/bench-throughput-vs-loss.png
//! ```
//!
//! The input is the JSON that `bench/run` writes (`summaries`: impl, rm, sessions, loss,
//! msgs_per_s). Text is drawn with the Hack font shipped in the `epaint_default_fonts` crate,
//! so no system font is needed.

use std::collections::BTreeMap;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// (impl, rm, sessions) -> [(loss %, msg/s)]
type Series = BTreeMap<(String, String, u64), Vec<(f64, f64)>>;

fn load(path: &str) -> anyhow::Result<Series> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parse results JSON")?;
    let mut series = Series::new();
    for s in v["summaries"].as_array().context("no summaries")? {
        let (Some(imp), Some(rm), Some(sessions), Some(loss), Some(tput)) = (
            s["impl"].as_str(),
            s["rm"].as_str(),
            s["sessions"].as_u64(),
            s["loss"].as_f64(),
            s["msgs_per_s"].as_f64(),
        ) else {
            continue;
        };
        series
            .entry((imp.to_owned(), rm.to_owned(), sessions))
            .or_default()
            .push((loss * 100.0, tput));
    }
    for pts in series.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(series)
}

fn color(imp: &str) -> RGBColor {
    match imp {
        "wsrm" => RGBColor(0xd9, 0x48, 0x01),
        "wsrm-api" => RGBColor(0x9e, 0x1b, 0x6e),
        "gsoap" => RGBColor(0x1f, 0x77, 0xb4),
        "cxf" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    let (Some(input), Some(output)) = (argv.next(), argv.next()) else {
        anyhow::bail!("usage: bench_plot RESULTS.json OUT.png");
    };
    register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::HACK_REGULAR,
    )
    .map_err(|_| anyhow::anyhow!("the embedded font is not a valid TrueType font"))?;
    let series = load(&input)?;
    let max = series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(10.0_f64, f64::max);
    let min = series
        .values()
        .flatten()
        .map(|p| p.1)
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    let y_lo = 10f64.powf(min.log10().floor()).max(0.1);
    let y_hi = 10f64.powf(max.log10().ceil());

    let root = BitMapBackend::new(&output, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(50);
    title.draw(&Text::new(
        "Reliable one-way throughput (1 KiB, loopback HTTP) against request loss",
        (20, 15),
        ("sans-serif", 22).into_font(),
    ))?;
    let panels = body.split_evenly((1, 2));
    for (panel, sessions) in panels.iter().zip([1u64, 64]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{sessions} session{}", if sessions == 1 { "" } else { "s" }),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-1f64..21f64, (y_lo..y_hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("requests dropped by wsrm proxy (%)")
            .y_desc("messages/s (log)")
            .x_labels(6)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for ((imp, rm, _), pts) in series.iter().filter(|(k, _)| k.2 == sessions) {
            let c = color(imp);
            if imp == "plain" {
                let y = pts.first().map(|p| p.1).unwrap_or(y_lo);
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(-1.0, y), (21.0, y)],
                        8,
                        6,
                        c.stroke_width(2),
                    ))?
                    .label("plain SOAP, no RM (ceiling)")
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                continue;
            }
            let label = format!("{imp} RM {rm}");
            let style = if rm == "1.1" {
                c.stroke_width(2)
            } else {
                c.mix(0.55).stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            let marker = pts.iter().map(move |p| {
                if rm == "1.1" {
                    Circle::new(*p, 4, c.filled()).into_dyn()
                } else {
                    TriangleMarker::new(*p, 5, c.mix(0.55).filled()).into_dyn()
                }
            });
            chart.draw_series(marker)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    println!("bench_plot: wrote {output}");
    Ok(())
}
