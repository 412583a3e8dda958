#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    BadUrl(String),
    /// A unique key was violated: the name is taken.
    #[error("already exists")]
    Conflict,
    /// The transaction lost a lock conflict (MySQL deadlock); retrying it is safe.
    #[error("transaction deadlock")]
    Deadlock,
    /// The database cannot be reached right now; the caller may retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            // SQLSTATE 40001: serialization failure / deadlock (MySQL 1213).
            sqlx::Error::Database(db) if db.code().as_deref() == Some("40001") => Self::Deadlock,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(e.to_string()),
            _ => Self::Database(e.to_string()),
        }
    }
}
