//! How series look: a colour and marker shape per series, the marker shapes themselves, and pen
//! sizes that grow with the canvas.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot::{Mark, Series};

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
pub(super) enum Marker {
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
pub(super) struct Look {
    pub(super) color: RGBColor,
    pub(super) marker: Marker,
    /// Lines whose colour repeats an earlier series carry sparse markers to tell them apart.
    pub(super) markers_on_line: bool,
}

pub(super) fn looks(series: &[Series]) -> Vec<Look> {
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

pub(super) fn draw_marker<DB: DrawingBackend>(
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

/// Pixel sizes, tuned at 480 px on the short side and grown with the canvas so that a large
/// PNG is not a small chart with hairlines.
pub(super) struct Pens {
    pub(super) s: f64,
    pub(super) stroke: u32,
    pub(super) dash: i32,
    pub(super) gap: i32,
    pub(super) marker_r: i32,
}

impl Pens {
    pub(super) fn new(w: u32, h: u32) -> Self {
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

    pub(super) fn px(&self, v: f64) -> i32 {
        (v * self.s).round() as i32
    }
}

pub(super) type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;
