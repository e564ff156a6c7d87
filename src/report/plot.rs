//! The report's charts: risk–coverage curves, accuracy or C@R against model bytes, coverage
//! against OOD share.
//!
//! SVG is drawn on every target so that the CLI report and the browser page share one plotting
//! code; PNG exists natively only, for places that do not show SVG (READMEs, image diffs).
//! Text is measured with the bundled DejaVu Sans natively (no system font lookup, so the output is
//! the same on every machine) and with the page's DOM on wasm, which is plotters' only way to
//! measure text there. The SVG names "DejaVu Sans" first so that a viewer with that font lays the
//! text out exactly as it was measured.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

const TEXT_COLOR: RGBColor = RGBColor(30, 30, 30);
const FONT_FAMILY: &str = "DejaVu Sans, sans-serif";

/// d3's category10: ten hues that stay apart in print and on screen; past ten, repeats differ by
/// marker shape.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Marker shape per trip round the palette, so series 0 and 10 differ by shape.
#[derive(Debug, Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
}
const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Diamond,
];

#[derive(Debug, Clone, Copy)]
struct Look {
    color: RGBColor,
    marker: Marker,
    /// Lines whose colour repeats an earlier series carry sparse markers to tell them apart.
    markers_on_line: bool,
}

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

fn looks(series: &[Series]) -> Vec<Look> {
    let (mut solid, mut dashed) = (0usize, 0usize);
    series
        .iter()
        .map(|s| {
            // A dashed flag on bare points is invisible, so it must not buy a shared colour.
            let shows_dash = s.dashed && s.mark != Mark::Points;
            let counter = if shows_dash { &mut dashed } else { &mut solid };
            let slot = *counter;
            *counter += 1;
            let round = slot / PALETTE.len();
            Look {
                color: PALETTE[slot % PALETTE.len()],
                marker: MARKERS[round % MARKERS.len()],
                markers_on_line: round > 0,
            }
        })
        .collect()
}

/// A linear or log10 axis with "nice" ticks (1, 2, 2.5, 5 steps; 1-2-5 per decade), which
/// plotters' own log axis does not give for ranges narrower than a decade.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// When set, the ticks: the few x values measured (OOD shares 0, 25, .., 100) each get one.
    ticks_at: Vec<f64>,
}

/// The data's distinct values when there are few of them, spread well enough to label each.
fn few_distinct(values: impl Iterator<Item = f64>, axis: &Axis) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| *x >= axis.lo && *x <= axis.hi).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let spread = v
        .windows(2)
        .all(|w| w[1] - w[0] >= (axis.hi - axis.lo) / 16.0);
    if !axis.log && (2..=8).contains(&v.len()) && spread {
        v
    } else {
        Vec::new()
    }
}

impl Axis {
    fn new(
        title: &str,
        which: &str,
        given: Option<(f64, f64)>,
        data: impl Iterator<Item = f64>,
        log: bool,
    ) -> Result<Self> {
        if let Some((lo, hi)) = given {
            if !(lo < hi && (hi - lo).is_finite()) || (log && lo <= 0.0) {
                return Err(Error::Invalid(format!(
                    "chart `{title}`: {which} range ({lo}, {hi}) must be finite and increasing{}",
                    if log {
                        ", with a positive start for a log axis"
                    } else {
                        ""
                    }
                )));
            }
            return Ok(Axis {
                lo,
                hi,
                log,
                ticks_at: Vec::new(),
            });
        }
        let to = |v: f64| if log { v.log10() } else { v };
        let from = |v: f64| if log { 10f64.powf(v) } else { v };
        let (lo, hi) = data
            .map(to)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        // A margin keeps markers at the extremes off the axis lines; a flat series gets a span.
        let pad = if hi > lo {
            (hi - lo) * 0.04
        } else if log {
            0.15
        } else {
            (lo.abs() * 0.1).max(0.5)
        };
        let (lo, hi) = (from(lo - pad), from(hi + pad));
        if !(lo < hi && (hi - lo).is_finite()) {
            return Err(Error::Invalid(format!(
                "chart `{title}`: {which} values span more than a float can hold; rescale them"
            )));
        }
        Ok(Axis {
            lo,
            hi,
            log,
            ticks_at: Vec::new(),
        })
    }

    fn scaled(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    fn ticks(&self, max_n: usize) -> Vec<f64> {
        let max_n = max_n.clamp(2, 12);
        if !self.ticks_at.is_empty() {
            self.ticks_at.clone()
        } else if self.log {
            log_ticks(self.lo, self.hi, max_n)
        } else {
            linear_ticks(self.lo, self.hi, max_n)
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.scaled(self.lo), self.scaled(self.hi));
        let f = (self.scaled(*value) - a) / (b - a);
        // `as` saturates (NaN to 0); plotters clamps to the plotting area afterwards.
        (f64::from(limit.0) + f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        self.ticks(hint.max_num_points())
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(value: &f64) -> String {
        tick_label(*value)
    }
}

fn linear_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    let raw = (hi - lo) / max_n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
    (first..=last).map(|k| k as f64 * step).collect()
}

fn log_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let mantissas: [&[f64]; 4] = [
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 3.0],
        &[1.0],
    ];
    for set in mantissas {
        let ticks: Vec<f64> = (e0..=e1)
            .flat_map(|e| set.iter().map(move |m| m * 10f64.powi(e)))
            .filter(within)
            .collect();
        if ticks.len() <= max_n {
            // Narrower than the gap between two "nice" values: linear ticks read better.
            return if ticks.len() >= 2 {
                ticks
            } else {
                linear_ticks(lo, hi, max_n)
            };
        }
    }
    let stride = ((e1 - e0) as usize).div_ceil(max_n.max(2) - 1).max(1);
    (e0..=e1)
        .step_by(stride)
        .map(|e| 10f64.powi(e))
        .filter(within)
        .collect()
}

/// Short tick text: SI suffixes for large values (bytes), at most four significant digits.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    if a >= 1e3 {
        let (div, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(d, _)| a >= *d)
            .unwrap_or((1e3, "k"));
        return format!("{}{suffix}", trim_zeros(format!("{:.2}", v / div)));
    }
    if a >= 1e-3 {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        return trim_zeros(format!("{v:.decimals$}"));
    }
    format!("{v:.1e}")
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn drawing_failed(chart: &Chart, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("chart `{}`: drawing failed: {e}", chart.title))
}

/// Registers the bundled font once; plotters' ab_glyph text looks fonts up by family name.
#[cfg(not(target_arch = "wasm32"))]
fn text_ready() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "the bundled chart font assets/fonts/DejaVuSans.ttf does not parse; rebuild from a \
             clean checkout"
                .into(),
        ))
    }
}

/// plotters unwraps `window().document().body()` when it measures text on wasm; a Web Worker or
/// Node has none, so this turns that panic into an error.
#[cfg(target_arch = "wasm32")]
fn text_ready() -> Result<()> {
    use wasm_bindgen::JsValue;
    let get = |v: &JsValue, key: &str| {
        js_sys::Reflect::get(v, &JsValue::from_str(key))
            .ok()
            .filter(|o| o.is_object())
    };
    let has_window = get(&js_sys::global(), "window").is_some();
    let body = get(&js_sys::global(), "document").and_then(|d| get(&d, "body"));
    if has_window && body.is_some() {
        Ok(())
    } else {
        Err(Error::Invalid(
            "charts measure their text with the page's DOM, which this context (a Web Worker or \
             Node) has not; render charts on the page's main thread"
                .into(),
        ))
    }
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn text<'a>(size: f64, pos: Pos) -> TextStyle<'a> {
    TextStyle::from((FONT_FAMILY, size).into_font())
        .color(&TEXT_COLOR)
        .pos(pos)
}

/// Pixel sizes, tuned at 480 px on the short side and grown with the canvas so that a large
/// PNG is not a small chart with hairlines.
struct Pens {
    s: f64,
    stroke: u32,
    dash: i32,
    gap: i32,
    marker_r: i32,
}

impl Pens {
    fn new(w: u32, h: u32) -> Self {
        let s = (f64::from(w.min(h)) / 480.0).clamp(0.75, 3.0);
        let px = |v: f64| (v * s).round() as i32;
        Pens {
            s,
            stroke: px(2.0).max(1) as u32,
            dash: px(7.0).max(2),
            gap: px(4.0).max(2),
            marker_r: px(4.0).max(2),
        }
    }

    fn px(&self, v: f64) -> i32 {
        (v * self.s).round() as i32
    }
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
    legend.draw(&legend_area, chart, plan, &pens)
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

fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    marker: Marker,
    r: i32,
    color: RGBColor,
) -> DrawResult<DB> {
    let fill = color.filled();
    match marker {
        Marker::Circle => area.draw(&Circle::new((x, y), r, fill)),
        Marker::Triangle => area.draw(&Polygon::new(
            vec![(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)],
            fill,
        )),
        Marker::Square => area.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], fill)),
        Marker::Diamond => area.draw(&Polygon::new(
            vec![
                (x, y - r - 2),
                (x + r + 1, y),
                (x, y + r + 2),
                (x - r - 1, y),
            ],
            fill,
        )),
    }
}

/// Puts each name beside its point at the first of a few spots that stays inside the plot and
/// covers neither a marker nor an earlier label; points of different variants often sit close.
fn label_points<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    looks: &[Look],
    marks: &[((i32, i32), usize)],
    pens: &Pens,
) -> DrawResult<DB> {
    let (r, s) = (pens.marker_r, pens.s);
    let style = text(11.5 * s, Pos::new(HPos::Left, VPos::Top));
    let (aw, ah) = area.dim_in_pixel();
    let (aw, ah) = (aw as i32, ah as i32);
    type Boxed = (i32, i32, i32, i32);
    let overlap = |a: &Boxed, b: &Boxed| {
        let w = (a.2.min(b.2) - a.0.max(b.0)).max(0);
        let h = (a.3.min(b.3) - a.1.max(b.1)).max(0);
        i64::from(w) * i64::from(h)
    };
    let mut taken: Vec<Boxed> = marks
        .iter()
        .map(|((x, y), _)| (x - r, y - r, x + r, y + r))
        .collect();
    let g = r + (3.0 * s).round() as i32;
    for &((x, y), i) in marks {
        let (Some(series), Some(look)) = (chart.series.get(i), looks.get(i)) else {
            continue;
        };
        let (tw, th) = area.estimate_text_size(&series.name, &style)?;
        // plotters reports less than the inked height of a line of text; the pad keeps stacked
        // labels from touching.
        let pad = (th as i32 / 3).max(2);
        let (tw, th) = (tw as i32 + pad, th as i32 + pad);
        let (up, down) = (y - g - th, y + g);
        let (mid, right, left) = (y - th / 2, x + g, x - g - tw);
        let spots = [
            (right, mid),
            (left, mid),
            (x + g / 2, up),
            (x + g / 2, down),
            (x - tw - g / 2, up),
            (x - tw - g / 2, down),
            (x - tw / 2, up),
            (x - tw / 2, down),
            (right, up - th / 2),
            (right, down + th / 2),
            (left, up - th / 2),
            (left, down + th / 2),
        ];
        let own = (x - r, y - r, x + r, y + r);
        // Least covered ink wins; leaving the plot costs more than any overlap.
        let cost = |b: &Boxed| {
            let outside = b.0 < 0 || b.1 < 0 || b.2 > aw || b.3 > ah;
            let covered: i64 = taken
                .iter()
                .filter(|t| **t != own)
                .map(|t| overlap(t, b))
                .sum();
            covered + if outside { i64::MAX / 4 } else { 0 }
        };
        let mut chosen = (spots[0].0, spots[0].1, spots[0].0 + tw, spots[0].1 + th);
        let mut best = i64::MAX;
        for (bx, by) in spots {
            let b = (bx, by, bx + tw, by + th);
            let c = cost(&b);
            if c < best {
                (chosen, best) = (b, c);
            }
        }
        // Darkened so that the light hues (yellow-green, cyan) still read as text.
        let RGBColor(cr, cg, cb) = look.color;
        let dark = RGBColor(cr / 10 * 7, cg / 10 * 7, cb / 10 * 7);
        let at = (chosen.0 + pad / 2, chosen.1 + pad / 2);
        area.draw_text(&series.name, &style.color(&dark), at)?;
        taken.push(chosen);
    }
    Ok(())
}

/// Shortens `name` with an ellipsis until it fits `max_w` pixels, so one long variant name
/// cannot squeeze the plot.
fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    style: &TextStyle,
    max_w: i32,
) -> std::result::Result<String, DrawingAreaErrorKind<DB::ErrorType>> {
    if area.estimate_text_size(name, style)?.0 as i32 <= max_w {
        return Ok(name.to_string());
    }
    let mut chars: Vec<char> = name.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let short: String = chars.iter().chain(['…'].iter()).collect();
        if area.estimate_text_size(&short, style)?.0 as i32 <= max_w {
            return Ok(short);
        }
    }
    Ok("…".into())
}

/// The legend sits right of the plot instead of inside it: with up to ~18 curves (9 variants x
/// MaxProb/Selector) no corner of the plot is reliably empty.
struct Legend<'a> {
    names: Vec<String>,
    style: TextStyle<'a>,
    top: i32,
    row: i32,
    sample_w: i32,
    width: i32,
}

impl Legend<'_> {
    fn layout<DB: DrawingBackend>(
        body: &DrawingArea<DB, Shift>,
        chart: &Chart,
        pens: &Pens,
    ) -> std::result::Result<Self, DrawingAreaErrorKind<DB::ErrorType>> {
        let (w, h) = body.dim_in_pixel();
        let n = chart.series.len().max(1) as i32;
        let top = pens.px(8.0);
        let row = pens.px(22.0).min((h as i32 - 2 * top) / n).max(1);
        // Many series shrink the text with the rows rather than overprint each other.
        let size = (12.5 * pens.s).min(f64::from(row) * 0.8).max(6.0);
        let style = text(size, Pos::new(HPos::Left, VPos::Center));
        let sample_w = pens.px(30.0);
        let chrome = sample_w + pens.px(22.0);
        let max_text_w = (w as i32 * 2) / 5 - chrome;
        let mut names = Vec::with_capacity(chart.series.len());
        let mut width = 0;
        for series in &chart.series {
            let name = fit_text(body, &series.name, &style, max_text_w)?;
            width = width.max(body.estimate_text_size(&name, &style)?.0 as i32 + chrome);
            names.push(name);
        }
        Ok(Legend {
            names,
            style,
            top,
            row,
            sample_w,
            width,
        })
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        chart: &Chart,
        plan: &Plan,
        pens: &Pens,
    ) -> DrawResult<DB> {
        let x0 = pens.px(6.0);
        let rows = chart.series.iter().zip(&plan.looks).zip(&self.names);
        for (k, ((series, look), name)) in rows.enumerate() {
            let y = self.top + self.row * k as i32 + self.row / 2;
            let pen = look.color.stroke_width(pens.stroke);
            if series.mark != Mark::Points {
                let ends = vec![(x0, y), (x0 + self.sample_w, y)];
                if series.dashed {
                    area.draw(&DashedPathElement::new(ends, pens.dash, pens.gap, pen))?;
                } else {
                    area.draw(&PathElement::new(ends, pen))?;
                }
            }
            if series.mark != Mark::Line || look.markers_on_line {
                let at = (x0 + self.sample_w / 2, y);
                draw_marker(area, at, look.marker, pens.marker_r, look.color)?;
            }
            area.draw_text(name, &self.style, (x0 + self.sample_w + pens.px(8.0), y))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round() {
        let t = linear_ticks(-0.04, 1.04, 10);
        let labels: Vec<String> = t.iter().map(|v| tick_label(*v)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(linear_ticks(0.0, 0.42, 10).len(), 9); // steps of 0.05
    }

    #[test]
    fn log_ticks_use_1_2_5_and_fall_back_to_linear_within_a_decade() {
        let labels: Vec<String> = log_ticks(7e7, 5e9, 10)
            .iter()
            .map(|v| tick_label(*v))
            .collect();
        assert_eq!(labels, ["100M", "200M", "500M", "1G", "2G", "5G"]);
        let narrow = log_ticks(3.1e7, 3.9e7, 10);
        assert!(narrow.len() >= 2 && narrow.iter().all(|v| (3.1e7..=3.9e7).contains(v)));
        assert!(log_ticks(1e-300, 1e300, 10).len() <= 10);
    }

    #[test]
    fn tick_labels_are_short() {
        for (v, s) in [
            (0.30000000000000004, "0.3"),
            (0.05, "0.05"),
            (75.0, "75"),
            (1.5e8, "150M"),
            (2.5e9, "2.5G"),
            (-1500.0, "-1.5k"),
            (0.0, "0"),
        ] {
            assert_eq!(tick_label(v), s);
        }
    }
}
