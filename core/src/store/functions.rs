use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::config::{lock_user, prune_and_check_bytes};
use super::retry::retrying;
use super::{Store, StoreError, changes};
use crate::fnconfig::{FunctionConfig, FunctionSettings};
use crate::names::{FunctionName, UserName};
use crate::time::now_millis;

/// What a deploy stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub version: i64,
    /// True when this deploy created the function (version 1).
    pub created: bool,
    pub sha256: String,
    pub artifact_sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FunctionSummary {
    pub name: String,
    pub version: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: i64,
    pub sha256: String,
    pub size: i64,
    pub artifact_sha256: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// The function's id: what the data plane keys its files and instances by.
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub latest_version: i64,
    pub sha256: String,
    pub size: i64,
    /// SHA-256 of the live version's artifact (none for versions stored
    /// before artifacts existed).
    pub artifact_sha256: Option<String>,
    pub source_type: String,
    pub entry: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub versions: Vec<VersionInfo>,
}

/// What the data plane needs to serve a function: which immutable version is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFunction {
    pub function_id: i64,
    pub version: i64,
    /// SHA-256 of the module the data plane runs: the artifact when the
    /// version has one, else its source.
    pub sha256: String,
    /// The module is a deploy-built artifact (JavaScript, every import
    /// resolved), not a source stored before artifacts existed (TypeScript).
    pub bundled: bool,
    /// The version's settings (its env and secrets are read at instance start,
    /// see `Store::instance_config`).
    pub settings: FunctionSettings,
}

/// One version as a deploy stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The upload, byte for byte (a file or an archive).
    pub source: &'a [u8],
    /// `file`, `tar`, `tar.gz` or `zip`.
    pub source_type: &'a str,
    /// The entry module's path inside the upload.
    pub entry: Option<&'a str>,
    /// The module the data plane runs (see `LiveFunction::bundled`).
    pub artifact: Option<&'a [u8]>,
    /// The lock file that pinned the artifact's dependencies.
    pub lock: Option<&'a str>,
}

impl<'a> NewVersion<'a> {
    /// A single source file with no artifact: the data plane runs it as is.
    pub fn source_only(source: &'a [u8]) -> Self {
        Self {
            source,
            source_type: "file",
            entry: None,
            artifact: None,
            lock: None,
        }
    }
}

/// The module a data plane runs for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnableModule {
    pub code: Vec<u8>,
    pub bundled: bool,
}

/// A version's upload as it came, with what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub source: Vec<u8>,
    pub source_type: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Stores `source` alone (no artifact) as the next version; see
    /// `deploy_version`.
    pub async fn deploy(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        source: &[u8],
    ) -> Result<Deployed, StoreError> {
        self.deploy_version(user_id, user_name, name, NewVersion::source_only(source))
            .await
    }

    /// Stores `new` as the next version of the user's function (creating the
    /// function at version 1) and makes it live, all in one transaction.
    pub async fn deploy_version(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        new: NewVersion<'_>,
    ) -> Result<Deployed, StoreError> {
        retrying(|| self.deploy_once(user_id, user_name, name, new)).await
    }

    async fn deploy_once(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        new: NewVersion<'_>,
    ) -> Result<Deployed, StoreError> {
        let source = new.source;
        let now = now_millis();
        let sha256 = sha256_hex(source);
        let artifact_sha256 = new.artifact.map(sha256_hex);
        let size = i64::try_from(source.len())
            .map_err(|_| StoreError::Inconsistent("source too large".into()))?;
        let mut tx = self.pool.begin().await?;
        // Every write of a user's functions takes the user's row lock first
        // (InnoDB locks a row an UPDATE matches even when nothing changes;
        // SQLite takes its one write lock), so the quota checks below see
        // every committed deploy of this user and none runs beside them.
        lock_user(&mut tx, user_id).await?;
        let quotas = self.user_quotas_in(&mut tx, user_id).await?;
        let existing =
            sqlx::query("SELECT id, live_version FROM functions WHERE user_id = ? AND name = ?")
                .bind(user_id)
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let created = existing.is_none();
        // A code deploy keeps the live version's configuration.
        let config: Option<String> = match &existing {
            Some(r) => {
                let id: i64 = r.try_get("id")?;
                let live: i64 = r.try_get("live_version")?;
                sqlx::query(
                    "SELECT config FROM function_versions WHERE function_id = ? AND version = ?",
                )
                .bind(id)
                .bind(live)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("config"))
                .transpose()?
                .flatten()
            }
            None => None,
        };
        if created {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM functions WHERE user_id = ?")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
            let n: i64 = row.try_get("n")?;
            if u64::try_from(n).unwrap_or(u64::MAX) >= quotas.max_functions {
                return Err(StoreError::QuotaExceeded {
                    quota: "functions per user",
                    limit: quotas.max_functions,
                });
            }
            sqlx::query(
                "INSERT INTO functions (user_id, name, live_version, latest_version, created_at, updated_at) \
                 VALUES (?, ?, 1, 1, ?, ?)",
            )
            .bind(user_id)
            .bind(name.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                // A concurrent first deploy of this name committed first (on
                // InnoDB this can also surface as a gap-lock deadlock): a lost
                // race like any other, and run again this takes the update path.
                StoreError::Conflict => StoreError::Deadlock,
                other => other,
            })?;
        } else {
            sqlx::query(
                "UPDATE functions SET live_version = latest_version + 1, \
                 latest_version = latest_version + 1, updated_at = ? \
                 WHERE user_id = ? AND name = ?",
            )
            .bind(now)
            .bind(user_id)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let row =
            sqlx::query("SELECT id, latest_version FROM functions WHERE user_id = ? AND name = ?")
                .bind(user_id)
                .bind(name.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let function_id: i64 = row.try_get("id")?;
        let version: i64 = row.try_get("latest_version")?;
        sqlx::query(
            "INSERT INTO function_versions (function_id, version, source, sha256, size, created_at, \
               source_type, entry, artifact, artifact_sha256, lock_file, config) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(function_id)
        .bind(version)
        .bind(source)
        .bind(&sha256)
        .bind(size)
        .bind(now)
        .bind(new.source_type)
        .bind(new.entry)
        .bind(new.artifact)
        .bind(artifact_sha256.as_deref())
        .bind(new.lock)
        .bind(config)
        .execute(&mut *tx)
        .await?;
        prune_and_check_bytes(&mut tx, user_id, function_id, version, version, &quotas).await?;
        changes::record(&mut tx, user_name.as_str(), name.as_str(), now).await?;
        tx.commit().await?;
        Ok(Deployed {
            version,
            created,
            sha256,
            artifact_sha256,
        })
    }

    pub async fn list_functions(&self, user_id: i64) -> Result<Vec<FunctionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, live_version, updated_at FROM functions WHERE user_id = ? ORDER BY name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FunctionSummary {
                    name: r.try_get("name")?,
                    version: r.try_get("live_version")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn get_function(
        &self,
        user_id: i64,
        name: &FunctionName,
    ) -> Result<Option<FunctionInfo>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT f.id, f.name, f.live_version, f.latest_version, f.created_at, f.updated_at, \
                    v.sha256, v.size, v.artifact_sha256, v.source_type, v.entry \
             FROM functions f JOIN function_versions v \
               ON v.function_id = f.id AND v.version = f.live_version \
             WHERE f.user_id = ? AND f.name = ?",
        )
        .bind(user_id)
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let function_id: i64 = row.try_get("id")?;
        let versions = sqlx::query(
            "SELECT version, sha256, size, artifact_sha256, created_at FROM function_versions \
             WHERE function_id = ? ORDER BY version",
        )
        .bind(function_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(version_info)
        .collect::<Result<_, _>>()?;
        Ok(Some(FunctionInfo {
            id: function_id,
            name: row.try_get("name")?,
            version: row.try_get("live_version")?,
            latest_version: row.try_get("latest_version")?,
            sha256: row.try_get("sha256")?,
            size: row.try_get("size")?,
            artifact_sha256: row.try_get("artifact_sha256")?,
            source_type: row.try_get("source_type")?,
            entry: row.try_get("entry")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            versions,
        }))
    }

    /// The source of the live version, byte for byte as it was uploaded.
    pub async fn live_source(
        &self,
        user_id: i64,
        name: &FunctionName,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.live_upload(user_id, name).await?.map(|u| u.source))
    }

    /// The live version's upload as it came, with its type (`/code`).
    pub async fn live_upload(
        &self,
        user_id: i64,
        name: &FunctionName,
    ) -> Result<Option<Upload>, StoreError> {
        let row = sqlx::query(
            "SELECT v.source, v.source_type FROM functions f JOIN function_versions v \
               ON v.function_id = f.id AND v.version = f.live_version \
             WHERE f.user_id = ? AND f.name = ?",
        )
        .bind(user_id)
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Upload {
                source: r.try_get("source")?,
                source_type: r.try_get("source_type")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// The live version of `user`/`name`, looked up by names: what the router's
    /// cache asks on a miss.
    pub async fn live_function(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<LiveFunction>, StoreError> {
        let row = sqlx::query(
            "SELECT f.id, f.live_version, v.sha256, v.artifact_sha256, v.config \
             FROM users u JOIN functions f ON f.user_id = u.id \
             JOIN function_versions v ON v.function_id = f.id AND v.version = f.live_version \
             WHERE u.username = ? AND f.name = ?",
        )
        .bind(user)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| live_from(&r))
            .transpose()
            .map_err(|e: sqlx::Error| e.into())
    }

    /// Every function's live version with its owner's name: the router's
    /// directory is loaded from this at start and on a full resync.
    pub async fn all_live_functions(
        &self,
    ) -> Result<Vec<(String, String, LiveFunction)>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.username, f.name, f.id, f.live_version, v.sha256, v.artifact_sha256, v.config \
             FROM users u JOIN functions f ON f.user_id = u.id \
             JOIN function_versions v ON v.function_id = f.id AND v.version = f.live_version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("username")?, r.try_get("name")?, live_from(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The source of one stored version.
    pub async fn version_source(
        &self,
        function_id: i64,
        version: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query(
            "SELECT source FROM function_versions WHERE function_id = ? AND version = ?",
        )
        .bind(function_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("source")).transpose()?)
    }

    /// The module the data plane runs for one version: its artifact, or its
    /// source when it was stored before artifacts existed.
    pub async fn version_module(
        &self,
        function_id: i64,
        version: i64,
    ) -> Result<Option<RunnableModule>, StoreError> {
        let row = sqlx::query(
            "SELECT source, artifact FROM function_versions WHERE function_id = ? AND version = ?",
        )
        .bind(function_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let artifact: Option<Vec<u8>> = r.try_get("artifact")?;
        Ok(Some(match artifact {
            Some(code) => RunnableModule {
                code,
                bundled: true,
            },
            None => RunnableModule {
                code: r.try_get("source")?,
                bundled: false,
            },
        }))
    }

    /// Deletes the function and all its versions. Returns false when it did not exist.
    pub async fn delete_function(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
    ) -> Result<bool, StoreError> {
        // It reads, then writes: on SQLite a commit in between loses the lock
        // race (nothing was written), which the retry policy runs again.
        retrying(|| self.delete_function_once(user_id, user_name, name)).await
    }

    async fn delete_function_once(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT id FROM functions WHERE user_id = ? AND name = ?")
            .bind(user_id)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let function_id: i64 = row.try_get("id")?;
        sqlx::query("DELETE FROM function_versions WHERE function_id = ?")
            .bind(function_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM functions WHERE id = ?")
            .bind(function_id)
            .execute(&mut *tx)
            .await?;
        changes::record(&mut tx, user_name.as_str(), name.as_str(), now_millis()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A live version as the data plane sees it (columns `id`, `live_version`,
/// `sha256`, `artifact_sha256`, `config`).
fn live_from(r: &AnyRow) -> Result<LiveFunction, sqlx::Error> {
    let artifact: Option<String> = r.try_get("artifact_sha256")?;
    let config: Option<String> = r.try_get("config")?;
    let config = FunctionConfig::from_stored(config.as_deref())
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(LiveFunction {
        settings: config.settings,
        function_id: r.try_get("id")?,
        version: r.try_get("live_version")?,
        bundled: artifact.is_some(),
        sha256: match artifact {
            Some(a) => a,
            None => r.try_get("sha256")?,
        },
    })
}

fn version_info(r: &AnyRow) -> Result<VersionInfo, sqlx::Error> {
    Ok(VersionInfo {
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        size: r.try_get("size")?,
        artifact_sha256: r.try_get("artifact_sha256")?,
        created_at: r.try_get("created_at")?,
    })
}
