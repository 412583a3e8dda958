//! The manager's log: `skiff_core::telemetry` (`RUST_LOG`, `SKIFF_LOG_FORMAT`).

pub use skiff_core::telemetry::{LogArgs, LogFormat};

/// The log in `format`.
pub fn init_with(format: LogFormat) {
    skiff_core::telemetry::init(format);
}

/// The text log (embedders and tests).
pub fn init() {
    init_with(LogFormat::Text);
}
