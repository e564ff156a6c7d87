//! Report rendering: the charts of the evaluation report, drawn by one code for the native CLI
//! (SVG + PNG files) and the browser page (SVG strings).

mod axis;
mod font;
mod legend;
pub mod plot;
mod style;

#[cfg(not(target_arch = "wasm32"))]
pub use plot::{render_png, write_chart};
pub use plot::{render_svg, Chart, Mark, Series};
