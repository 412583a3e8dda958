//! The change feed: a row per deploy or delete, so a router in another process
//! learns within one poll interval which cache entries went stale.

use sqlx::{Any, Row, Transaction};

use super::retry::retrying;
use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    pub user: String,
    pub function: String,
}

pub(super) async fn record(
    tx: &mut Transaction<'_, Any>,
    user: &str,
    function: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO changes (user_name, function_name, at) VALUES (?, ?, ?)")
        .bind(user)
        .bind(function)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The newest change id (0 when there is none): where a fresh poller starts.
    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// How many change rows there are after `after`, and the newest id among
    /// them: one small row, so a poller can tell cheaply that nothing arrived
    /// (a late commit below the newest id still raises the count).
    pub async fn change_window(&self, after: i64) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS newest FROM changes WHERE id > ?",
        )
        .bind(after)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("newest")?))
    }

    /// Changes after `after`, oldest first, at most `limit`.
    pub async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_name, function_name FROM changes WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    id: r.try_get("id")?,
                    user: r.try_get("user_name")?,
                    function: r.try_get("function_name")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Drops change rows older than `before_millis`; pollers that fell that far
    /// behind reset their whole cache instead.
    pub async fn prune_changes(&self, before_millis: i64) -> Result<u64, StoreError> {
        let done = retrying(|| async move {
            sqlx::query("DELETE FROM changes WHERE at < ?")
                .bind(before_millis)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from)
        })
        .await?;
        Ok(done.rows_affected())
    }
}
