//! The manager's HTTP API, end to end, on SQLite and on MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod checker_sandbox;
mod functions;
mod helpers;
mod hostile;
mod rate_limits;
mod remote_checker;
mod request_log;

/// Runs each listed `async fn(TestBackend)` once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() {
                super::$case(skiff_core::store::testing::TestBackend::Sqlite).await
            })*
        }
        mod mysql {
            $(#[tokio::test] async fn $case() {
                super::$case(skiff_core::store::testing::TestBackend::MySql).await
            })*
        }
    };
}
