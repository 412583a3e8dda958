//! The Kubernetes runtime against kube's tower-test mock: each test plays the
//! API server, asserting every request (method, path, query, body) and
//! choosing each answer. A real store (SQLite, and MariaDB where it matters)
//! holds the desired state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod manager_pod;
mod monitoring;
mod wake_port;

mod api;
mod config;
mod failures;
mod idle;
mod logs;
mod manifests;
mod pod_state;
mod rbac;
mod reconcile;
mod scenarios;
mod state;
