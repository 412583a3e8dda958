//! Fresh, empty databases: a temporary SQLite file, or a new database on the
//! MariaDB/MySQL server named by `SKIFF_TEST_MYSQL_URL` (which the test set-up,
//! `scripts/test.sh`, starts on its own port).

use rand::Rng;
use skiff_core::store::Store;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    MySql,
}

/// A database that lives as long as this value.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub const MYSQL_ENV: &str = "SKIFF_TEST_MYSQL_URL";

/// The server URL (no database part) of the test MySQL/MariaDB.
///
/// # Panics
/// When the variable is not set: a MySQL test must never pass silently without a server.
pub fn mysql_server_url() -> String {
    match std::env::var(MYSQL_ENV) {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{MYSQL_ENV} is not set: run the tests with `bash scripts/test.sh`, which starts \
             MariaDB on a private port, or export {MYSQL_ENV}=mysql://user:pass@127.0.0.1:PORT"
        ),
    }
}

impl TestDb {
    pub async fn new(backend: TestBackend) -> TestDb {
        match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/skiff.db", dir.path().display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            TestBackend::MySql => Self::on_mysql_server(&mysql_server_url()).await,
        }
    }

    /// A fresh database on the MySQL/MariaDB server at `server` (no database part).
    pub async fn on_mysql_server(server: &str) -> TestDb {
        let tag: u64 = rand::rng().random();
        let mut admin = sqlx::mysql::MySqlConnection::connect(server)
            .await
            .expect("connect to the MySQL server");
        let db = format!("skiff_t_{tag:016x}");
        // db is built from hex digits only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        TestDb {
            url: format!("{}/{db}", server.trim_end_matches('/')),
            _dir: None,
        }
    }

    /// A connected, migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 5).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}
