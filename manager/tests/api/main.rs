//! The manager's HTTP API, end to end, on SQLite and on MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod checker_sandbox;
mod config;
mod functions;
mod helpers;
mod hostile;
mod metrics;
mod rate_limits;
mod remote_checker;
mod request_log;
mod uploads;
mod warm_checker;
