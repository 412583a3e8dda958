//! Logging set-up shared by the binaries: `RUST_LOG` filters, default `info`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Fields may quote a function's output: one line each, no terminal controls.
        .fmt_fields(skiff_core::logs::neutral_fields())
        .try_init();
}
