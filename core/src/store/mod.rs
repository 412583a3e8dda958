//! The SQL store. One `Store` serves MySQL/MariaDB and SQLite through sqlx's `Any`
//! driver: every statement here is written in the common subset of both dialects
//! (`?` placeholders, no `RETURNING`, no `FOR UPDATE`), and each backend has its own
//! migration directory. Only the manager runs migrations (the schema's one writer).

mod changes;
mod config;
mod error;
mod functions;
mod k8s_state;
mod retry;
mod stats;
mod users;

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use changes::Change;
pub use config::{ConfigVersion, InstanceConfig, LiveConfig};
pub use error::StoreError;
pub use functions::{
    Deployed, FunctionInfo, FunctionSummary, LiveFunction, NewVersion, RunnableModule, Upload,
    VersionInfo, sha256_hex,
};
pub use k8s_state::{RuntimePhase, RuntimeState, RuntimeTarget};
pub use stats::{
    FunctionStats, LATENCY_BUCKETS, LatencyHistogram, MINUTE_MS, MinuteStats, RETENTION,
    SeriesPoint, StatsRow, bucket_upper_ms, latency_bucket, minute_of,
};
pub use users::User;

static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/mysql");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Self::MySql)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StoreError::BadUrl(
                "the database URL must start with mysql:// or sqlite://".into(),
            ))
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The operator's quotas, which deploys and config changes enforce
    /// (`with_quotas`; the declared defaults otherwise).
    quotas: std::sync::Arc<crate::fnconfig::Quotas>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// How a connection URL is turned into what sqlx expects, without ever logging it
/// (it may carry a password).
fn normalise_url(url: &str, backend: Backend) -> Result<String, StoreError> {
    match backend {
        Backend::MySql => Ok(url.replacen("mariadb://", "mysql://", 1)),
        Backend::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(StoreError::BadUrl("sqlite:// needs a file path".into()));
            }
            if path != ":memory:"
                && let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::BadUrl(format!(
                        "cannot create the directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
            // Create the file on first use.
            Ok(if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            })
        }
    }
}

impl Store {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(install_default_drivers);
        let backend = Backend::from_url(url)?;
        let url = normalise_url(url, backend)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers (the router's poller) run beside the writer;
                        // busy_timeout turns lock contention into waiting, not errors.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(StoreError::from)?;
        let quotas = crate::settings::defaults::<crate::fnconfig::Quotas>()
            .map_err(|e| StoreError::Inconsistent(format!("quota defaults: {e}")))?;
        Ok(Self {
            pool,
            backend,
            quotas: std::sync::Arc::new(quotas),
        })
    }

    /// This store with the operator's quotas `q`.
    pub fn with_quotas(mut self, q: crate::fnconfig::Quotas) -> Self {
        self.quotas = std::sync::Arc::new(q);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::MySql => &MYSQL_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    /// Cheap liveness probe used by health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
