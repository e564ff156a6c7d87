//! Reliability metrics (no model dependency; also used from wasm). Filled in by the metrics work.
