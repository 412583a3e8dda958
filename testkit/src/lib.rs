//! What Skiff's tests share, defined once:
//! - [`on_both_backends!`]: one test body run on SQLite and on MariaDB;
//! - [`TestDb`]: a fresh SQLite file or a fresh database on the shared test
//!   MariaDB (`SKIFF_TEST_MYSQL_URL`);
//! - [`PrivateMariaDb`]: a MariaDB server of a test's own, to stop, crash
//!   (SIGKILL) and start again;
//! - [`Service`]: the real `skiff-manager`, `skiff-router` or `skiff dev`
//!   binary on port 0; the port comes from its ready file, never from its log;
//! - [`ApiClient`]: the calls a user makes (register, login, deploy, delete,
//!   read a function and its logs, call it through the router);
//! - [`Scrape`]: a `/metrics` answer, series by series.
//!
//! A dev-dependency only. It depends on `skiff-core`, so core's own *unit*
//! tests cannot use it (the types would be those of a second copy of core);
//! core's integration tests can.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod db;
mod mariadb;
mod prometheus;
mod service;

pub use api::{ApiClient, PASSWORD, status_and_code};
pub use db::{MYSQL_ENV, TestBackend, TestDb, mysql_server_url};
pub use mariadb::PrivateMariaDb;
pub use prometheus::Scrape;
pub use service::{Launch, SECRET, SECRETS_KEY, Service};

/// Runs each listed `async fn(TestBackend)` once per backend, as tests
/// `sqlite::<name>` and `mysql::<name>`. With a leading `multi_thread;` the
/// tests run on a 4-worker runtime (for tests that run servers in-process).
#[macro_export]
macro_rules! on_both_backends {
    (multi_thread; $($case:ident),* $(,)?) => {
        $crate::on_both_backends!(
            @with [tokio::test(flavor = "multi_thread", worker_threads = 4)] $($case),*
        );
    };
    (@with [$attr:meta] $($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[$attr] async fn $case() {
                super::$case($crate::TestBackend::Sqlite).await
            })*
        }
        mod mysql {
            $(#[$attr] async fn $case() {
                super::$case($crate::TestBackend::MySql).await
            })*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::on_both_backends!(@with [tokio::test] $($case),*);
    };
}
