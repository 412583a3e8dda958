//! Faults on the manager, each against the real `skiff-manager` binary: the
//! database stopped and crashed under traffic, the manager SIGKILLed in the
//! middle of deploys, and Deno missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod database_restart;
mod harness;
mod killed_mid_deploy;
mod missing_deno;
