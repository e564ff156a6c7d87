//! Charts render to SVG and PNG, and bad charts are errors rather than panics or blank images.

use relvqa::report::plot::{render_png, render_svg, write_chart, Chart, Mark, Series};
use relvqa::Error;

const VARIANTS: [(&str, f64); 7] = [
    ("f16", 0.78),
    ("HQQ int8", 0.77),
    ("HQQ int4", 0.72),
    ("HQQ int3", 0.58),
    ("MBQ int8", 0.78),
    ("MBQ int4", 0.75),
    ("MBQ int3", 0.64),
];

/// Risk–coverage curves with one point per test sample, as the evaluator produces them: the
/// Selector ranks errors last better than MaxProb, so its curve stays lower for longer.
fn risk_coverage_chart() -> Chart {
    let n = 2000;
    let mut series = Vec::new();
    for (selector, dashed, suffix) in [(false, true, "MaxProb"), (true, false, "Selector")] {
        for (name, acc) in VARIANTS {
            let sharp = if selector { 3.0 } else { 1.6 };
            let points = (1..=n)
                .map(|i| {
                    let c = i as f64 / n as f64;
                    // Small deterministic wiggle where few samples are answered, like real curves.
                    let wiggle =
                        0.02 * (i as f64 * 0.37 + acc * 50.0).sin() / (1.0 + i as f64 / 40.0);
                    (c, ((1.0 - acc) * c.powf(sharp) + wiggle).max(0.0))
                })
                .collect();
            series.push(Series {
                name: format!("{name} {suffix}"),
                points,
                mark: Mark::Line,
                dashed,
            });
        }
    }
    Chart {
        title: "Risk–coverage on test (lower is better)".into(),
        x_label: "coverage".into(),
        y_label: "risk".into(),
        series,
        x_range: Some((0.0, 1.0)),
        ..Default::default()
    }
}

/// One labelled point per variant for two model families: 14 series, so colours repeat and the
/// marker shape must tell series 0 and 10 apart.
fn bytes_chart() -> Chart {
    let mut series = Vec::new();
    let models: [(&str, f64, f64); 2] = [("SmolVLM", 256e6, 1.0), ("Qwen2-VL", 2.2e9, 1.12)];
    for (model, params, scale) in models {
        for (label, bits, acc) in [
            ("f16", 16.0, 0.62),
            ("HQQ-8", 8.5, 0.61),
            ("HQQ-4", 4.5, 0.55),
            ("HQQ-2", 2.5, 0.21),
            ("MBQ-8", 8.5, 0.62),
            ("MBQ-4", 4.5, 0.59),
            ("MBQ-2", 2.5, 0.30),
        ] {
            series.push(Series {
                name: format!("{model} {label}"),
                points: vec![(params * bits / 8.0, (acc * scale).min(1.0))],
                mark: Mark::Points,
                dashed: false,
            });
        }
    }
    Chart {
        title: "Accuracy against model size".into(),
        x_label: "model bytes".into(),
        y_label: "VQA accuracy".into(),
        series,
        x_log: true,
        label_points: true,
        ..Default::default()
    }
}

fn ood_chart() -> Chart {
    let shares = [0.0, 25.0, 50.0, 75.0, 100.0];
    let mut series = Vec::new();
    let variants: [(&str, f64, f64); 3] = [
        ("f16", 0.55, 0.30),
        ("MBQ int4", 0.48, 0.28),
        ("HQQ int4", 0.40, 0.27),
    ];
    for (name, c0, drop) in variants {
        for (estimator, dashed, gain) in [("MaxProb", true, 0.0), ("Selector", false, 0.12)] {
            series.push(Series {
                name: format!("{name} {estimator}"),
                points: shares
                    .iter()
                    .map(|s| (*s, (c0 + gain - drop * s / 100.0 * (1.0 - gain)).max(0.0)))
                    .collect(),
                mark: Mark::LinePoints,
                dashed,
            });
        }
    }
    Chart {
        title: "Coverage at 5% risk under distribution shift".into(),
        x_label: "OOD share of the test set (%)".into(),
        y_label: "C@5%".into(),
        series,
        ..Default::default()
    }
}

fn one_series(points: Vec<(f64, f64)>, x_log: bool) -> Chart {
    Chart {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        series: vec![Series {
            name: "s".into(),
            points,
            ..Default::default()
        }],
        x_log,
        ..Default::default()
    }
}

fn is_invalid<T>(r: relvqa::Result<T>) -> bool {
    matches!(r, Err(Error::Invalid(_)))
}

#[test]
fn svg_names_every_series_and_axis() {
    for chart in [risk_coverage_chart(), bytes_chart(), ood_chart()] {
        let svg = render_svg(&chart, 900, 540).unwrap();
        assert!(
            svg.trim_start().starts_with("<svg"),
            "{}",
            &svg[..80.min(svg.len())]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in chart.series.iter().map(|s| s.name.as_str()).chain([
            chart.x_label.as_str(),
            chart.y_label.as_str(),
            chart.title.as_str(),
        ]) {
            assert!(svg.contains(text), "SVG lacks `{text}`");
        }
    }
}

#[test]
fn svg_stays_small_for_long_curves() {
    // 14 curves x 2000 points; thinning to pixels keeps the page's DOM and the report light.
    let svg = render_svg(&risk_coverage_chart(), 900, 540).unwrap();
    assert!(svg.len() < 600_000, "SVG is {} bytes", svg.len());
}

#[test]
fn png_decodes_to_requested_size_and_is_not_blank() {
    for (chart, (w, h)) in [
        (risk_coverage_chart(), (900, 540)),
        (bytes_chart(), (640, 400)),
        (ood_chart(), (1200, 800)),
    ] {
        let png = render_png(&chart, w, h).unwrap();
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (w, h));
        let background = *img.get_pixel(0, 0);
        let differing = img.pixels().filter(|p| **p != background).count();
        assert!(
            differing > (w * h / 100) as usize,
            "only {differing} drawn pixels"
        );
        // Some pixel carries a series colour, not only the grey/black of axes and text.
        assert!(img
            .pixels()
            .any(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 80));
    }
}

#[test]
fn log_x_with_non_positive_x_is_an_error() {
    for x in [0.0, -1.0] {
        let err = render_svg(&one_series(vec![(1.0, 1.0), (x, 2.0)], true), 600, 400).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains("positive"), "{err}");
    }
    let mut chart = one_series(vec![(1.0, 1.0), (10.0, 2.0)], true);
    chart.x_range = Some((0.0, 10.0));
    assert!(is_invalid(render_svg(&chart, 600, 400)));
}

#[test]
fn all_nan_chart_is_an_error() {
    let chart = one_series(
        vec![(f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 0.0)],
        false,
    );
    assert!(is_invalid(render_svg(&chart, 600, 400)));
    assert!(is_invalid(render_png(&chart, 600, 400)));
    // A series with no points at all is the same case.
    assert!(is_invalid(render_svg(&one_series(vec![], false), 600, 400)));
}

#[test]
fn empty_series_list_is_an_error() {
    let chart = Chart {
        title: "empty".into(),
        ..Default::default()
    };
    let err = render_svg(&chart, 600, 400).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
}

#[test]
fn non_finite_points_are_skipped() {
    let chart = one_series(
        vec![(0.0, 0.1), (0.5, f64::NAN), (1.0, 0.3), (2.0, 0.2)],
        false,
    );
    assert!(render_svg(&chart, 600, 400).is_ok());
    assert!(render_png(&chart, 600, 400).is_ok());
}

#[test]
fn degenerate_inputs_are_errors_or_drawn_not_panics() {
    // A single point and a flat series get a span around them instead of a zero-width axis.
    assert!(render_svg(&one_series(vec![(3.0, 3.0)], false), 600, 400).is_ok());
    assert!(render_png(&one_series(vec![(5e7, 0.4)], true), 600, 400).is_ok());
    let mut chart = one_series(vec![(0.0, 1.0), (1.0, 2.0)], false);
    chart.y_range = Some((2.0, 1.0));
    assert!(is_invalid(render_svg(&chart, 600, 400)));
    let huge = one_series(vec![(0.0, -1e308), (1.0, 1e308)], false);
    assert!(is_invalid(render_svg(&huge, 600, 400)));
    assert!(is_invalid(render_svg(&ood_chart(), 10, 10)));
    assert!(is_invalid(render_png(&ood_chart(), 100_000, 400)));
}

#[test]
fn write_chart_writes_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    for (chart, stem) in [
        (risk_coverage_chart(), "risk_coverage"),
        (bytes_chart(), "accuracy_bytes"),
        (ood_chart(), "coverage_ood"),
    ] {
        let (svg, png) = write_chart(&chart, dir.path(), stem).unwrap();
        assert_eq!(svg, dir.path().join(format!("{stem}.svg")));
        assert_eq!(png, dir.path().join(format!("{stem}.png")));
        assert!(std::fs::metadata(&svg).unwrap().len() > 1000);
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
    assert!(write_chart(&ood_chart(), dir.path(), "../escape").is_err());
}

/// Writes the three example charts to `<temp>/plot-examples/` for a person to look at.
#[test]
#[ignore = "writes to a fixed directory for manual inspection"]
fn write_examples_for_inspection() {
    let dir = std::env::temp_dir().join("plot-examples");
    write_chart(&risk_coverage_chart(), &dir, "risk_coverage").unwrap();
    write_chart(&bytes_chart(), &dir, "accuracy_bytes").unwrap();
    write_chart(&ood_chart(), &dir, "coverage_ood").unwrap();
}
