use sqlx::error::DatabaseError;
use sqlx::mysql::MySqlDatabaseError;
use sqlx::sqlite::SqliteError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    BadUrl(String),
    /// A unique key was violated: the name is taken.
    #[error("already exists")]
    Conflict,
    /// The transaction lost a lock conflict (MySQL deadlock or lock wait timeout,
    /// SQLite busy/locked); it was rolled back and retrying it is safe.
    #[error("transaction deadlock")]
    Deadlock,
    /// The database cannot be reached right now; the caller may retry.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// What the database holds or was asked to hold breaks the store's own
    /// rules (an unknown state name, a row gone inside its transaction).
    #[error("database error: {0}")]
    Inconsistent(String),
    /// No such function (of this user), version or secret.
    #[error("{0}")]
    NotFound(String),
    /// A quota of the user would be exceeded; nothing was written.
    #[error("quota exceeded: {quota} is {limit}")]
    QuotaExceeded { quota: &'static str, limit: u64 },
    /// A configuration change breaks a rule; nothing was written.
    #[error(transparent)]
    BadConfig(#[from] crate::fnconfig::ConfigError),
    /// A rollback with no version to go to.
    #[error("{0}")]
    NoRollbackTarget(String),
    /// The secrets key does not open what the database holds.
    #[error(
        "SKIFF_SECRETS_KEY is not the key this database's secrets were sealed with \
         (key fingerprint {fingerprint}); start with the right key, or rotate with \
         `skiff-manager secrets rotate-key`"
    )]
    WrongSecretsKey { fingerprint: String },
}

/// What a server-side error says about the database, apart from the query.
enum Transient {
    /// The connection or the server is going away (shutdown, killed, network).
    Unavailable,
    /// A lock conflict: rolled back, safe to retry.
    Conflict,
}

/// MySQL/MariaDB error numbers that mean "the server, not the query": the
/// server is shutting down (1053), the connection was killed (1927, e.g. by a
/// shutdown or `KILL`), too many connections (1040, 1203), network errors
/// while the server read or wrote a packet (1158–1161).
const MYSQL_UNAVAILABLE: &[u16] = &[1040, 1053, 1158, 1159, 1160, 1161, 1203, 1927];
/// Deadlock (1213) and lock wait timeout (1205).
const MYSQL_CONFLICT: &[u16] = &[1205, 1213];

fn classify(db: &dyn DatabaseError) -> Option<Transient> {
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        let n = my.number();
        // SQLSTATE class 08: connection exception.
        if MYSQL_UNAVAILABLE.contains(&n) || my.code().is_some_and(|s| s.starts_with("08")) {
            return Some(Transient::Unavailable);
        }
        if MYSQL_CONFLICT.contains(&n) {
            return Some(Transient::Conflict);
        }
    }
    if db.try_downcast_ref::<SqliteError>().is_some() {
        // Extended result codes carry the primary code in the low byte:
        // SQLITE_BUSY (5: another connection holds the lock, including
        // BUSY_SNAPSHOT when a read transaction cannot become a write one) and
        // SQLITE_LOCKED (6).
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        if matches!(primary, Some(5 | 6)) {
            return Some(Transient::Conflict);
        }
    }
    // SQLSTATE 40001: serialization failure / deadlock, on any backend.
    if db.code().as_deref() == Some("40001") {
        return Some(Transient::Conflict);
    }
    None
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            sqlx::Error::Database(db) => match classify(db.as_ref()) {
                Some(Transient::Conflict) => Self::Deadlock,
                Some(Transient::Unavailable) => Self::Unavailable(e),
                None => Self::Database(e),
            },
            // A refused connection is retried inside the pool until its acquire
            // timeout and then surfaces as PoolTimedOut; a connection that breaks
            // mid-query surfaces as Io (or, half-read, as Protocol).
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(e),
            _ => Self::Database(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use sqlx::{AnyConnection, Connection, Executor};

    use super::StoreError;

    async fn connect(url: &str) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(url).await.unwrap()
    }

    /// A read transaction that must become a write one after another connection
    /// wrote gets SQLITE_BUSY_SNAPSHOT at once (no busy wait helps). That is a
    /// lost lock race, safe to retry — not an internal error.
    #[tokio::test]
    async fn sqlite_lock_conflicts_are_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let mut a = connect(&url).await;
        let mut b = connect(&url).await;
        a.execute("PRAGMA journal_mode = WAL").await.unwrap();
        a.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
        b.execute("BEGIN").await.unwrap();
        b.execute("SELECT COUNT(*) FROM t").await.unwrap();
        a.execute("INSERT INTO t VALUES (1)").await.unwrap();
        let err = b.execute("INSERT INTO t VALUES (2)").await.unwrap_err();
        assert!(
            matches!(StoreError::from(err), StoreError::Deadlock),
            "a lost SQLite lock race must map to Deadlock"
        );
    }

    #[tokio::test]
    async fn sqlite_query_errors_stay_database_errors() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let mut a = connect(&url).await;
        let err = a.execute("SELECT * FROM no_such_table").await.unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Database(_)));
    }

    /// A MySQL connection killed under the client (as a server shutdown does)
    /// means "unavailable", so the API answers 503, not 500.
    #[tokio::test]
    async fn mysql_killed_connection_is_unavailable() {
        // Set by the test set-up (scripts/test.sh); a MySQL test must not pass without it.
        let url = std::env::var("SKIFF_TEST_MYSQL_URL").expect("SKIFF_TEST_MYSQL_URL is set");
        let mut victim = connect(&url).await;
        let mut admin = connect(&url).await;
        let row = sqlx::query_scalar::<_, i64>("SELECT CONNECTION_ID()")
            .fetch_one(&mut victim)
            .await
            .unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!("KILL CONNECTION {row}")))
            .await
            .unwrap();
        let err = victim.execute("SELECT 1").await.unwrap_err();
        let mapped = StoreError::from(err);
        assert!(
            matches!(mapped, StoreError::Unavailable(_)),
            "got {mapped:?}"
        );
    }

    #[tokio::test]
    async fn refused_connections_are_unavailable() {
        // Nothing listens on a port we just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = crate::store::Store::connect(&format!("mysql://u:p@127.0.0.1:{port}/db"), 1)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    }
}
