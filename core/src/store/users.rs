use sqlx::Row;

use super::retry::retrying;
use super::{Store, StoreError};
use crate::names::UserName;
use crate::time::now_millis;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub token_generation: i64,
    pub created_at: i64,
}

impl Store {
    /// Creates a user; `StoreError::Conflict` when the name is taken.
    pub async fn create_user(
        &self,
        username: &UserName,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let now = now_millis();
        retrying(|| async move {
            sqlx::query(
                "INSERT INTO users (username, password_hash, token_generation, created_at) \
                 VALUES (?, ?, 0, ?)",
            )
            .bind(username.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)
        })
        .await?;
        self.find_user(username.as_str())
            .await?
            .ok_or_else(|| StoreError::Inconsistent("user vanished after insert".into()))
    }

    /// Looks a user up by name. Takes `&str` so that a login with a malformed
    /// name costs the same as one with an unknown name.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, token_generation, created_at \
             FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(User {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
                password_hash: r.try_get("password_hash")?,
                token_generation: r.try_get("token_generation")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Makes every token issued so far for this user invalid. Returns false when
    /// there is no such user.
    pub async fn revoke_tokens(&self, username: &UserName) -> Result<bool, StoreError> {
        let done = retrying(|| async move {
            sqlx::query(
                "UPDATE users SET token_generation = token_generation + 1 WHERE username = ?",
            )
            .bind(username.as_str())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)
        })
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a user with all their functions and versions, recording a change
    /// for each function so routers drop them. Returns false when there is no such user.
    pub async fn delete_user(&self, username: &UserName) -> Result<bool, StoreError> {
        retrying(|| self.delete_user_once(username)).await
    }

    async fn delete_user_once(&self, username: &UserName) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT id FROM users WHERE username = ?")
            .bind(username.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let uid: i64 = row.try_get("id")?;
        let names: Vec<String> = sqlx::query("SELECT name FROM functions WHERE user_id = ?")
            .bind(uid)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "DELETE FROM function_versions WHERE function_id IN \
             (SELECT id FROM functions WHERE user_id = ?)",
        )
        .bind(uid)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM functions WHERE user_id = ?")
            .bind(uid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(uid)
            .execute(&mut *tx)
            .await?;
        let now = now_millis();
        for name in names {
            super::changes::record(&mut tx, username.as_str(), &name, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
