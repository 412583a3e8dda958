//! The Skiff manager: accounts, tokens and functions over HTTP (see README.md,
//! "Manager API").

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod functions;
pub mod kube;
pub mod metrics;
pub mod passwords;
pub mod rate_limit;
pub mod request_log;
pub mod router_notify;
pub mod routes;
pub mod runtime;
pub mod secrets_cli;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod typecheck;
pub mod users_cli;
