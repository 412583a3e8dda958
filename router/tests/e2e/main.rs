//! End to end: the real manager, the real router and real Deno instances, on
//! SQLite and on MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod calls;
mod console_cors;
mod deploy_notify;
mod faults;
mod fnconfig;
mod forwarded_headers;
mod helpers;
mod hostile_clients;
mod hostile_code;
mod kube_drain;
mod kube_wake;
mod lifecycle;
mod logs;
mod metrics;
mod os_sandbox;
mod rate_limits;
mod recreate;
mod sandbox;
mod slow_clients;
mod websockets;
mod wire;
