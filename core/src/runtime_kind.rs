//! Where function instances run: one definition for the manager and the router,
//! which both read it from `SKIFF_RUNTIME`.

/// `SKIFF_RUNTIME`: `process` (the router starts a sandboxed Deno per function)
/// or `kubernetes` (the manager applies per-function objects, the router
/// proxies to their Services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Kubernetes,
}
