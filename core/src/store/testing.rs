#![allow(clippy::expect_used)]
//! Fresh, empty databases for tests: a temporary SQLite file, or a new database
//! on the MariaDB/MySQL server named by `SKIFF_TEST_MYSQL_URL` (which the test
//! set-up, `scripts/test.sh`, starts on its own port).

use rand::Rng;

use super::Store;

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

    /// A connected, migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 5).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl TestDb {
    /// A fresh database on the MySQL/MariaDB server at `server` (no database part).
    pub async fn on_mysql_server(server: &str) -> TestDb {
        let tag: u64 = rand::rng().random();
        let admin = Store::connect(server, 1)
            .await
            .expect("connect to the MySQL server");
        let db = format!("skiff_t_{tag:016x}");
        // db is built from hex digits only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin.pool)
            .await
            .expect("create test database");
        admin.close().await;
        TestDb {
            url: format!("{}/{db}", server.trim_end_matches('/')),
            _dir: None,
        }
    }
}

/// A MariaDB server of a test's own (started with `scripts/mariadb.sh` on a free
/// port), for tests that stop and restart the database. Needs root and
/// `mariadbd`, as the test set-up provides. Stopped when dropped.
pub struct PrivateMariaDb {
    pub server_url: String,
    dir: tempfile::TempDir,
    port: u16,
}

fn mariadb_script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/mariadb.sh").to_owned()
}

impl PrivateMariaDb {
    pub fn start() -> PrivateMariaDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut db = PrivateMariaDb {
            server_url: String::new(),
            dir,
            port,
        };
        db.server_url = db.run_start();
        db
    }

    fn run_start(&self) -> String {
        let out = std::process::Command::new("bash")
            .arg(mariadb_script())
            .arg("start")
            .arg(self.dir.path().join("m"))
            .arg(self.port.to_string())
            .output()
            .expect("run scripts/mariadb.sh");
        assert!(
            out.status.success(),
            "a private MariaDB did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn stop(&self) {
        let _ = std::process::Command::new("bash")
            .arg(mariadb_script())
            .arg("stop")
            .arg(self.dir.path().join("m"))
            .output();
        // mariadb-admin shutdown returns before the port is free.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    /// Starts it again on the same data and port.
    pub fn restart(&self) {
        self.run_start();
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
