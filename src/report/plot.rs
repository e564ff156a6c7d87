//! The report's charts: risk–coverage curves, accuracy or C@R against model bytes, coverage
//! against OOD share.
//!
//! SVG is drawn on every target so that the CLI report and the browser page share one plotting
//! code; PNG exists natively only, for places that do not show SVG (READMEs, image diffs).
//! Text is measured with the bundled DejaVu Sans natively (no system font lookup, so the output is
//! the same on every machine) and with the page's DOM on wasm, which is plotters' only way to
//! measure text there. The SVG names "DejaVu Sans" first so that a viewer with that font lays the
//! text out exactly as it was measured.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{few_distinct, tick_label, Axis};
use super::font::{text, text_ready};
use super::legend::{label_points, Legend};
use super::style::{draw_marker, looks, DrawResult, Look, Pens};
use crate::{Error, Result};

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mark {
    #[default]
    Line,
    Points,
    LinePoints,
}

/// One named set of points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
    /// Colours are assigned by position among the solid series and separately among the dashed
    /// ones, so a variant's MaxProb (dashed) and Selector (solid) curves share a colour when both
    /// groups list the variants in the same order. Ignored for `Mark::Points`.
    pub dashed: bool,
}

/// A 2-D chart; the ranges are computed from the data (with a small margin) when `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Model sizes span decades (f16 to int2 and across model families); needs positive x.
    pub x_log: bool,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Writes each series' name beside its points: for scatters with one point per variant.
    pub label_points: bool,
}

/// Draws `chart` as a standalone SVG document of `width` x `height` pixels.
///
/// On wasm this must run where the page's `document.body` exists (the main thread, not a Web
/// Worker): plotters measures text with the DOM there.
pub fn render_svg(chart: &Chart, width: u32, height: u32) -> Result<String> {
    let plan = plan(chart, width, height)?;
    text_ready()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        draw(&root, chart, &plan).map_err(|e| drawing_failed(chart, e))?;
        root.present().map_err(|e| drawing_failed(chart, e))?;
    }
    Ok(svg)
}

/// Draws `chart` as PNG-encoded bytes of `width` x `height` pixels.
#[cfg(not(target_arch = "wasm32"))]
pub fn render_png(chart: &Chart, width: u32, height: u32) -> Result<Vec<u8>> {
    use image::ImageEncoder;

    let plan = plan(chart, width, height)?;
    text_ready()?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root, chart, &plan).map_err(|e| drawing_failed(chart, e))?;
        root.present().map_err(|e| drawing_failed(chart, e))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| {
            Error::Invalid(format!("chart `{}`: PNG encoding failed: {e}", chart.title))
        })?;
    Ok(png)
}

/// Writes `dir/stem.svg` and `dir/stem.png` (creating `dir`) at the report's default size.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_chart(
    chart: &Chart,
    dir: &std::path::Path,
    stem: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        return Err(Error::Invalid(format!(
            "chart file stem `{stem}` must be a plain file name (no separators, not hidden)"
        )));
    }
    let svg = render_svg(chart, DEFAULT_SIZE.0, DEFAULT_SIZE.1)?;
    let png = render_png(chart, DEFAULT_SIZE.0, DEFAULT_SIZE.1)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    std::fs::write(&svg_path, svg).map_err(|e| Error::io(svg_path.display().to_string(), e))?;
    std::fs::write(&png_path, png).map_err(|e| Error::io(png_path.display().to_string(), e))?;
    Ok((svg_path, png_path))
}

/// Wide enough for a right-hand legend of ~14 names beside a readable plot.
#[cfg(not(target_arch = "wasm32"))]
const DEFAULT_SIZE: (u32, u32) = (900, 540);
/// Below this the axes, legend and labels no longer fit; above, a PNG buffer gets unreasonable.
const MIN_SIZE: (u32, u32) = (240, 160);
const MAX_SIDE: u32 = 4096;

/// Everything validated before a backend is touched, so drawing can only fail in plotters.
struct Plan {
    x: Axis,
    y: Axis,
    /// Per series: runs of consecutive finite points (a non-finite point breaks a line).
    runs: Vec<Vec<Vec<(f64, f64)>>>,
    looks: Vec<Look>,
}

fn plan(chart: &Chart, width: u32, height: u32) -> Result<Plan> {
    if width < MIN_SIZE.0 || height < MIN_SIZE.1 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::Invalid(format!(
            "chart `{}`: size {width}x{height} is outside {}x{} ..= {MAX_SIDE}x{MAX_SIDE} pixels",
            chart.title, MIN_SIZE.0, MIN_SIZE.1
        )));
    }
    if chart.series.is_empty() {
        return Err(Error::Invalid(format!(
            "chart `{}` has no series; give it at least one",
            chart.title
        )));
    }
    let mut runs = Vec::with_capacity(chart.series.len());
    for s in &chart.series {
        let mut series_runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                series_runs.push(Vec::new());
                continue;
            }
            if chart.x_log && x <= 0.0 {
                return Err(Error::Invalid(format!(
                    "chart `{}`: series `{}` has x = {x}, but the x axis is logarithmic and \
                     needs positive x; drop the point or use a linear axis",
                    chart.title, s.name
                )));
            }
            if let Some(run) = series_runs.last_mut() {
                run.push((x, y));
            }
        }
        series_runs.retain(|r| !r.is_empty());
        runs.push(series_runs);
    }
    let finite = || runs.iter().flatten().flatten();
    if finite().next().is_none() {
        return Err(Error::Invalid(format!(
            "chart `{}`: no series has a finite point, so there is nothing to draw",
            chart.title
        )));
    }
    let mut x = Axis::new(
        &chart.title,
        "x",
        chart.x_range,
        finite().map(|p| p.0),
        chart.x_log,
    )?;
    x.ticks_at = few_distinct(finite().map(|p| p.0), &x);
    let y = Axis::new(
        &chart.title,
        "y",
        chart.y_range,
        finite().map(|p| p.1),
        false,
    )?;
    Ok(Plan {
        x,
        y,
        runs,
        looks: looks(&chart.series),
    })
}

fn drawing_failed(chart: &Chart, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("chart `{}`: drawing failed: {e}", chart.title))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    plan: &Plan,
) -> DrawResult<DB> {
    let (w, h) = root.dim_in_pixel();
    let pens = Pens::new(w, h);
    root.fill(&WHITE)?;
    let body = if chart.title.is_empty() {
        root.clone()
    } else {
        let style = text(18.0 * pens.s, Pos::new(HPos::Center, VPos::Top));
        // plotters pads a title by at most 5 px, which crowds it against the edge on big PNGs.
        let pad = pens.px(4.0);
        root.margin(pad, 0, 0, 0).titled(&chart.title, style)?
    };
    let legend = Legend::layout(&body, chart, &pens)?;
    let (plot_area, legend_area) = body.split_horizontally(w as i32 - legend.width);

    let tick_style = text(12.0 * pens.s, Pos::new(HPos::Center, VPos::Top));
    let mut y_tick_w = 0;
    for t in plan.y.ticks(10) {
        y_tick_w = y_tick_w.max(root.estimate_text_size(&tick_label(t), &tick_style)?.0 as i32);
    }
    let mut ctx = ChartBuilder::on(&plot_area)
        .margin_top(pens.px(8.0))
        .margin_right(pens.px(10.0))
        .margin_left(pens.px(4.0))
        .margin_bottom(pens.px(4.0))
        .x_label_area_size(pens.px(44.0))
        .y_label_area_size(y_tick_w + pens.px(34.0))
        .build_cartesian_2d(plan.x.clone(), plan.y.clone())?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(10)
        .y_labels(10)
        .label_style(tick_style)
        .axis_desc_style(text(14.0 * pens.s, Pos::new(HPos::Center, VPos::Top)))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .axis_style(RGBColor(90, 90, 90))
        .draw()?;

    for ((series, runs), look) in chart.series.iter().zip(&plan.runs).zip(&plan.looks) {
        if series.mark == Mark::Points {
            continue;
        }
        let style = look.color.stroke_width(pens.stroke);
        for run in runs.iter().filter(|r| r.len() >= 2) {
            let thin = thin_to_pixels(run, |p| ctx.backend_coord(p));
            if series.dashed {
                ctx.draw_series(DashedLineSeries::new(thin, pens.dash, pens.gap, style))?;
            } else {
                ctx.draw_series(LineSeries::new(thin, style))?;
            }
        }
    }

    // Markers and labels are placed in pixels, where overlaps can be judged.
    let area = ctx.plotting_area().strip_coord_spec();
    let base = area.get_base_pixel();
    let (aw, ah) = area.dim_in_pixel();
    let inside = |(x, y): (i32, i32)| x >= 0 && y >= 0 && x <= aw as i32 && y <= ah as i32;
    let to_local = |p: &(f64, f64)| {
        let (x, y) = ctx.backend_coord(p);
        (x - base.0, y - base.1)
    };
    let mut marks: Vec<((i32, i32), usize)> = Vec::new();
    let numbered = chart
        .series
        .iter()
        .zip(&plan.runs)
        .zip(&plan.looks)
        .enumerate();
    for (i, ((series, runs), look)) in numbered {
        for run in runs {
            let local: Vec<(i32, i32)> = if series.mark != Mark::Line || run.len() == 1 {
                run.iter().map(to_local).collect()
            } else if look.markers_on_line {
                let step = (run.len() / 6).max(1);
                let picked = run.iter().skip(step / 2).step_by(step);
                picked.map(to_local).collect()
            } else {
                Vec::new()
            };
            for p in local.into_iter().filter(|p| inside(*p)) {
                draw_marker(&area, p, look.marker, pens.marker_r, look.color)?;
                marks.push((p, i));
            }
        }
    }
    if chart.label_points {
        label_points(&area, chart, &plan.looks, &marks, &pens)?;
    }
    legend.draw(&legend_area, chart, &plan.looks, &pens)
}

/// Drops points that land on the same pixel as the previous kept one: risk–coverage curves have
/// one point per test sample, which would make the SVG megabytes without changing a pixel.
fn thin_to_pixels(
    run: &[(f64, f64)],
    to_px: impl Fn(&(f64, f64)) -> (i32, i32),
) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(run.len().min(4096));
    let mut last_px = None;
    for (i, p) in run.iter().enumerate() {
        let q = to_px(p);
        if last_px != Some(q) || i + 1 == run.len() {
            out.push(*p);
            last_px = Some(q);
        }
    }
    out
}
