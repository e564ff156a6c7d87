//! Chart text: the one font family and colour every label uses, and the check, before anything
//! is drawn, that text can be measured on this target.

use plotters::prelude::*;
use plotters::style::text_anchor::Pos;

use crate::{Error, Result};

const TEXT_COLOR: RGBColor = RGBColor(30, 30, 30);
const FONT_FAMILY: &str = "DejaVu Sans, sans-serif";

pub(super) fn text<'a>(size: f64, pos: Pos) -> TextStyle<'a> {
    TextStyle::from((FONT_FAMILY, size).into_font())
        .color(&TEXT_COLOR)
        .pos(pos)
}

/// Registers the bundled font once; plotters' ab_glyph text looks fonts up by family name.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn text_ready() -> Result<()> {
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
pub(super) fn text_ready() -> Result<()> {
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
