//! Names drawn beside the data: the legend right of the plot, and, for scatters, each series'
//! name beside its points.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::font::text;
use super::plot::{Chart, Mark};
use super::style::{draw_marker, DrawResult, Look, Pens};

/// Puts each name beside its point at the first of a few spots that stays inside the plot and
/// covers neither a marker nor an earlier label; points of different variants often sit close.
pub(super) fn label_points<DB: DrawingBackend>(
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
pub(super) struct Legend<'a> {
    names: Vec<String>,
    style: TextStyle<'a>,
    top: i32,
    row: i32,
    sample_w: i32,
    pub(super) width: i32,
}

impl Legend<'_> {
    pub(super) fn layout<DB: DrawingBackend>(
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

    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        chart: &Chart,
        looks: &[Look],
        pens: &Pens,
    ) -> DrawResult<DB> {
        let x0 = pens.px(6.0);
        let rows = chart.series.iter().zip(looks).zip(&self.names);
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
