//! What the Kubernetes runtime reads and records: the functions it must keep
//! applied (the database is the desired state) and, per function, the outcome
//! of the last apply (`function_runtime`, migration 0002). The state row is
//! deleted with its function (foreign key, ON DELETE CASCADE).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::retry::retrying;
use super::{Store, StoreError};
use crate::names::FunctionName;
use crate::time::now_millis;

/// Longest error message kept; Kubernetes messages can quote whole objects.
const MAX_ERROR_CHARS: usize = 2000;

/// Where a function's Kubernetes objects stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePhase {
    /// Being applied, or applied with no ready pod of this version yet.
    Pending,
    /// At least one pod of this version is ready (its runtime loaded the
    /// module and listens).
    Ready,
    /// The last apply failed (the reconcile loop retries it), or the pods of
    /// this version cannot run (crash loop, image pull, the module's load
    /// error).
    Error,
}

impl RuntimePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "ready" => Ok(Self::Ready),
            "error" => Ok(Self::Error),
            other => Err(StoreError::Inconsistent(format!(
                "unknown runtime state {other:?} in function_runtime"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeState {
    /// The function version this state is about.
    pub version: i64,
    pub phase: RuntimePhase,
    pub error: Option<String>,
    pub updated_at: i64,
}

/// A function the runtime must keep applied, at its live version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeTarget {
    pub function_id: i64,
    pub user: String,
    pub name: String,
    pub version: i64,
}

fn target(r: &AnyRow) -> Result<RuntimeTarget, sqlx::Error> {
    Ok(RuntimeTarget {
        function_id: r.try_get("id")?,
        user: r.try_get("username")?,
        name: r.try_get("name")?,
        version: r.try_get("live_version")?,
    })
}

fn state(r: &AnyRow) -> Result<RuntimeState, StoreError> {
    let phase: String = r.try_get("state")?;
    Ok(RuntimeState {
        version: r.try_get("version")?,
        phase: RuntimePhase::parse(&phase)?,
        error: r.try_get("error_message")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Every function with its owner and live version, ordered by owner and name.
    pub async fn runtime_targets(&self) -> Result<Vec<RuntimeTarget>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.id, u.username, f.name, f.live_version \
             FROM functions f JOIN users u ON u.id = f.user_id \
             ORDER BY u.username, f.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(target)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// One function by owner and name, or None when it does not exist (any more).
    pub async fn runtime_target(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<RuntimeTarget>, StoreError> {
        let row = sqlx::query(
            "SELECT f.id, u.username, f.name, f.live_version \
             FROM functions f JOIN users u ON u.id = f.user_id \
             WHERE u.username = ? AND f.name = ?",
        )
        .bind(user)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(target).transpose()?)
    }

    /// Records the outcome of an apply. Writes nothing when the function is
    /// gone: its state went with it.
    pub async fn set_runtime_state(
        &self,
        function_id: i64,
        version: i64,
        phase: RuntimePhase,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let error: Option<String> = error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
        let error = error.as_deref();
        // REPLACE ... SELECT means the same on MySQL/MariaDB and SQLite, and the
        // SELECT makes it a no-op for a function deleted meanwhile.
        retrying(|| async move {
            sqlx::query(
                "REPLACE INTO function_runtime (function_id, version, state, error_message, updated_at) \
                 SELECT id, ?, ?, ?, ? FROM functions WHERE id = ?",
            )
            .bind(version)
            .bind(phase.as_str())
            .bind(error)
            .bind(now_millis())
            .bind(function_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)
        })
        .await?;
        Ok(())
    }

    /// The recorded state of a user's function, if any apply was recorded.
    pub async fn runtime_state(
        &self,
        user_id: i64,
        name: &FunctionName,
    ) -> Result<Option<RuntimeState>, StoreError> {
        let row = sqlx::query(
            "SELECT r.version, r.state, r.error_message, r.updated_at \
             FROM function_runtime r JOIN functions f ON f.id = r.function_id \
             WHERE f.user_id = ? AND f.name = ?",
        )
        .bind(user_id)
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(state).transpose()
    }

    /// The recorded state of a function by id.
    pub async fn runtime_state_by_id(
        &self,
        function_id: i64,
    ) -> Result<Option<RuntimeState>, StoreError> {
        let row = sqlx::query(
            "SELECT version, state, error_message, updated_at \
             FROM function_runtime WHERE function_id = ?",
        )
        .bind(function_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(state).transpose()
    }
}
