//! Configuration versions, secrets, rollback and quotas.
//!
//! A config change (env, a secret, a setting) stores a new version that copies
//! the live version's code and carries the new configuration, exactly like a
//! deploy: the data plane sees a new live version and rolls to it. A rollback
//! only moves the live pointer. Secrets are sealed (`crate::secrets`) and kept
//! by name per function; versions name them, so a rollback restores a version's
//! secret names, each with its current value.

use std::collections::{HashMap, HashSet};

use sqlx::{Any, Row, Transaction};

use super::retry::retrying;
use super::{Store, StoreError, changes};
use crate::fnconfig::{EffectiveQuotas, FunctionConfig, UserLimits};
use crate::names::{FunctionName, UserName};
use crate::secrets::SecretsKey;
use crate::time::now_millis;

/// What a configuration change or a rollback produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigVersion {
    pub function_id: i64,
    pub version: i64,
}

/// The live configuration of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    pub function_id: i64,
    pub version: i64,
    pub config: FunctionConfig,
    /// Secret names that have a value right now (a version may name a secret
    /// deleted since; such a name is not given to the function).
    pub secrets_set: Vec<String>,
}

/// What an instance of one version starts with: its configuration and the
/// sealed values of the secrets it names (those that still exist).
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub config: FunctionConfig,
    pub sealed: Vec<(String, Vec<u8>)>,
}

impl InstanceConfig {
    /// The env and the opened secrets, merged: what the function sees.
    /// `Err` names the secret that did not open (never its value).
    pub fn open(
        &self,
        key: &SecretsKey,
        function_id: i64,
    ) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = self
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, sealed) in &self.sealed {
            let plain = key
                .open(function_id, name, sealed)
                .map_err(|e| format!("secret {name} of function {function_id}: {e}"))?;
            let text = String::from_utf8(plain)
                .map_err(|_| format!("secret {name} of function {function_id} is not UTF-8"))?;
            out.push((name.clone(), text));
        }
        Ok(out)
    }
}

/// Takes the user's row lock for the rest of the transaction (see `deploy_once`).
pub(super) async fn lock_user(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET token_generation = token_generation WHERE id = ?")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn opt_u64(r: &sqlx::any::AnyRow, col: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(to_u64))
}

/// Drops the versions of `function_id` that fell out of the kept window
/// (never `live`), then checks the user's stored bytes. Identical code stored
/// by several versions (config changes copy it) counts once.
pub(super) async fn prune_and_check_bytes(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    function_id: i64,
    latest: i64,
    live: i64,
    quotas: &EffectiveQuotas,
) -> Result<(), StoreError> {
    let keep = i64::try_from(quotas.max_versions).unwrap_or(i64::MAX);
    let oldest_kept = latest.saturating_sub(keep).saturating_add(1);
    sqlx::query(
        "DELETE FROM function_versions WHERE function_id = ? AND version < ? AND version <> ?",
    )
    .bind(function_id)
    .bind(oldest_kept)
    .bind(live)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(
        "SELECT v.sha256, v.size, v.artifact_sha256, LENGTH(v.artifact) AS artifact_size \
         FROM functions f JOIN function_versions v ON v.function_id = f.id \
         WHERE f.user_id = ?",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    for r in &rows {
        let key: (String, Option<String>) = (r.try_get("sha256")?, r.try_get("artifact_sha256")?);
        if seen.insert(key) {
            let size: i64 = r.try_get("size")?;
            let artifact: Option<i64> = r.try_get("artifact_size")?;
            total = total
                .saturating_add(to_u64(size))
                .saturating_add(artifact.map_or(0, to_u64));
        }
    }
    if total > quotas.max_artifact_bytes {
        return Err(StoreError::QuotaExceeded {
            quota: "stored bytes per user",
            limit: quotas.max_artifact_bytes,
        });
    }
    Ok(())
}

async fn find_function(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    name: &FunctionName,
) -> Result<(i64, i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT id, live_version, latest_version FROM functions WHERE user_id = ? AND name = ?",
    )
    .bind(user_id)
    .bind(name.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no function named {name}")))?;
    Ok((
        row.try_get("id")?,
        row.try_get("live_version")?,
        row.try_get("latest_version")?,
    ))
}

async fn read_config(
    tx: &mut Transaction<'_, Any>,
    function_id: i64,
    version: i64,
) -> Result<FunctionConfig, StoreError> {
    let row =
        sqlx::query("SELECT config FROM function_versions WHERE function_id = ? AND version = ?")
            .bind(function_id)
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                StoreError::Inconsistent(format!("live version {version} is missing"))
            })?;
    let text: Option<String> = row.try_get("config")?;
    FunctionConfig::from_stored(text.as_deref())
        .map_err(|e| StoreError::Inconsistent(format!("stored config of version {version}: {e}")))
}

/// What a configuration change does to the secret values, beside the config.
enum SecretOp<'a> {
    None,
    Put {
        name: &'a str,
        value: &'a [u8],
        key: &'a SecretsKey,
    },
    Delete {
        name: &'a str,
    },
}

impl Store {
    /// The operator's quotas with `user_id`'s overrides.
    pub async fn user_quotas(&self, user_id: i64) -> Result<EffectiveQuotas, StoreError> {
        Ok(self.quotas.effective(&self.user_limits(user_id).await?))
    }

    pub(super) async fn user_quotas_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        user_id: i64,
    ) -> Result<EffectiveQuotas, StoreError> {
        let row = sqlx::query(
            "SELECT max_functions, max_versions, max_artifact_bytes, rps, max_instances \
             FROM user_limits WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
        let limits = row
            .map(|r| limits_from(&r))
            .transpose()?
            .unwrap_or_default();
        Ok(self.quotas.effective(&limits))
    }

    /// The live version's configuration.
    pub async fn live_config(
        &self,
        user_id: i64,
        name: &FunctionName,
    ) -> Result<LiveConfig, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (function_id, live, _) = find_function(&mut tx, user_id, name).await?;
        let config = read_config(&mut tx, function_id, live).await?;
        let rows =
            sqlx::query("SELECT name FROM function_secrets WHERE function_id = ? ORDER BY name")
                .bind(function_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let set: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        let secrets_set = config
            .secrets
            .iter()
            .filter(|n| set.contains(*n))
            .cloned()
            .collect();
        Ok(LiveConfig {
            function_id,
            version: live,
            config,
            secrets_set,
        })
    }

    /// Applies `change` to the live configuration and stores the result as a
    /// new live version with the live version's code. `change` may refuse
    /// (its error is returned and nothing is written).
    pub async fn change_config<F>(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        change: F,
    ) -> Result<ConfigVersion, StoreError>
    where
        F: Fn(&mut FunctionConfig) -> Result<(), StoreError>,
    {
        retrying(|| self.new_config_version(user_id, user_name, name, &change, SecretOp::None))
            .await
    }

    /// Sets secret `secret` of the function to `value` (sealed under `key`)
    /// and stores a new version naming it.
    pub async fn put_secret(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        secret: &str,
        value: &[u8],
        key: &SecretsKey,
    ) -> Result<ConfigVersion, StoreError> {
        let add = |c: &mut FunctionConfig| {
            c.env.remove(secret);
            c.secrets.insert(secret.to_owned());
            Ok(())
        };
        let op = || SecretOp::Put {
            name: secret,
            value,
            key,
        };
        retrying(|| self.new_config_version(user_id, user_name, name, &add, op())).await
    }

    /// Deletes secret `secret` (its value at once) and stores a new version
    /// without it. `NotFound` when the live version does not name it.
    pub async fn delete_secret(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        secret: &str,
    ) -> Result<ConfigVersion, StoreError> {
        let remove = |c: &mut FunctionConfig| {
            if c.secrets.remove(secret) {
                Ok(())
            } else {
                Err(StoreError::NotFound(format!(
                    "the function has no secret named {secret}"
                )))
            }
        };
        retrying(|| {
            self.new_config_version(
                user_id,
                user_name,
                name,
                &remove,
                SecretOp::Delete { name: secret },
            )
        })
        .await
    }

    async fn new_config_version<F>(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        change: &F,
        op: SecretOp<'_>,
    ) -> Result<ConfigVersion, StoreError>
    where
        F: Fn(&mut FunctionConfig) -> Result<(), StoreError>,
    {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, user_id).await?;
        let quotas = self.user_quotas_in(&mut tx, user_id).await?;
        let (function_id, live, latest) = find_function(&mut tx, user_id, name).await?;
        let mut config = read_config(&mut tx, function_id, live).await?;
        change(&mut config)?;
        config.check()?;
        match op {
            SecretOp::None => {}
            SecretOp::Put {
                name: secret,
                value,
                key,
            } => {
                let sealed = key.seal(function_id, secret, value);
                sqlx::query("DELETE FROM function_secrets WHERE function_id = ? AND name = ?")
                    .bind(function_id)
                    .bind(secret)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO function_secrets (function_id, name, sealed, updated_at) VALUES (?, ?, ?, ?)",
                )
                .bind(function_id)
                .bind(secret)
                .bind(sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            SecretOp::Delete { name: secret } => {
                sqlx::query("DELETE FROM function_secrets WHERE function_id = ? AND name = ?")
                    .bind(function_id)
                    .bind(secret)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let version = latest + 1;
        sqlx::query(
            "INSERT INTO function_versions (function_id, version, source, sha256, size, created_at, \
               source_type, entry, artifact, artifact_sha256, lock_file, config) \
             SELECT function_id, ?, source, sha256, size, ?, source_type, entry, artifact, \
               artifact_sha256, lock_file, ? \
             FROM function_versions WHERE function_id = ? AND version = ?",
        )
        .bind(version)
        .bind(now)
        .bind(config.to_stored())
        .bind(function_id)
        .bind(live)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE functions SET live_version = ?, latest_version = ?, updated_at = ? WHERE id = ?",
        )
        .bind(version)
        .bind(version)
        .bind(now)
        .bind(function_id)
        .execute(&mut *tx)
        .await?;
        prune_and_check_bytes(&mut tx, user_id, function_id, version, version, &quotas).await?;
        changes::record(&mut tx, user_name.as_str(), name.as_str(), now).await?;
        tx.commit().await?;
        Ok(ConfigVersion {
            function_id,
            version,
        })
    }

    /// Makes version `to` live (default: the newest version below the live
    /// one). Versions are not created or removed.
    pub async fn rollback(
        &self,
        user_id: i64,
        user_name: &UserName,
        name: &FunctionName,
        to: Option<i64>,
    ) -> Result<ConfigVersion, StoreError> {
        retrying(|| async move {
            let now = now_millis();
            let mut tx = self.pool.begin().await?;
            lock_user(&mut tx, user_id).await?;
            let (function_id, live, _) = find_function(&mut tx, user_id, name).await?;
            let target = match to {
                Some(v) => sqlx::query(
                    "SELECT version FROM function_versions WHERE function_id = ? AND version = ?",
                )
                .bind(function_id)
                .bind(v)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<i64, _>("version"))
                .transpose()?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("version {v} of {name} does not exist (or was pruned)"))
                })?,
                None => sqlx::query(
                    "SELECT MAX(version) AS v FROM function_versions WHERE function_id = ? AND version < ?",
                )
                .bind(function_id)
                .bind(live)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<Option<i64>, _>("v")?
                .ok_or_else(|| {
                    StoreError::NoRollbackTarget(format!(
                        "version {live} is the oldest kept version of {name}: there is nothing before it"
                    ))
                })?,
            };
            if target != live {
                sqlx::query("UPDATE functions SET live_version = ?, updated_at = ? WHERE id = ?")
                    .bind(target)
                    .bind(now)
                    .bind(function_id)
                    .execute(&mut *tx)
                    .await?;
                changes::record(&mut tx, user_name.as_str(), name.as_str(), now).await?;
            }
            tx.commit().await?;
            Ok(ConfigVersion {
                function_id,
                version: target,
            })
        })
        .await
    }

    /// Version `version`'s upload as it came (`/versions/<N>/code`).
    pub async fn version_upload(
        &self,
        user_id: i64,
        name: &FunctionName,
        version: i64,
    ) -> Result<Option<super::Upload>, StoreError> {
        let row = sqlx::query(
            "SELECT v.source, v.source_type FROM functions f JOIN function_versions v \
               ON v.function_id = f.id WHERE f.user_id = ? AND f.name = ? AND v.version = ?",
        )
        .bind(user_id)
        .bind(name.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(super::Upload {
                source: r.try_get("source")?,
                source_type: r.try_get("source_type")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// The configuration of one version with the sealed values of the secrets
    /// it names: what the data plane needs to start an instance. `None` when
    /// the version no longer exists.
    pub async fn instance_config(
        &self,
        function_id: i64,
        version: i64,
    ) -> Result<Option<InstanceConfig>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT config FROM function_versions WHERE function_id = ? AND version = ?",
        )
        .bind(function_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let text: Option<String> = row.try_get("config")?;
        let config = FunctionConfig::from_stored(text.as_deref()).map_err(|e| {
            StoreError::Inconsistent(format!("stored config of version {version}: {e}"))
        })?;
        let rows = sqlx::query("SELECT name, sealed FROM function_secrets WHERE function_id = ?")
            .bind(function_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut sealed = Vec::new();
        for r in &rows {
            let n: String = r.try_get("name")?;
            if config.secrets.contains(&n) {
                sealed.push((n, r.try_get("sealed")?));
            }
        }
        Ok(Some(InstanceConfig { config, sealed }))
    }

    /// Checks that `key` is the key the database's secrets are sealed with,
    /// and records it when the database has none yet (`record`, the
    /// manager's job: it owns the schema). A mismatch is `WrongSecretsKey`.
    pub async fn check_secrets_key(
        &self,
        key: &SecretsKey,
        record: bool,
    ) -> Result<(), StoreError> {
        let wrong = || StoreError::WrongSecretsKey {
            fingerprint: key.fingerprint(),
        };
        let row = sqlx::query("SELECT sealed FROM secrets_key_check WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(r) = row {
            let sealed: Vec<u8> = r.try_get("sealed")?;
            return if key.matches_key_check(&sealed) {
                Ok(())
            } else {
                Err(wrong())
            };
        }
        // No check value yet: secrets sealed before one existed must open.
        if let Some(r) =
            sqlx::query("SELECT function_id, name, sealed FROM function_secrets LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
        {
            let sealed: Vec<u8> = r.try_get("sealed")?;
            let name: String = r.try_get("name")?;
            if key.open(r.try_get("function_id")?, &name, &sealed).is_err() {
                return Err(wrong());
            }
        }
        if record {
            let inserted = sqlx::query("INSERT INTO secrets_key_check (id, sealed) VALUES (1, ?)")
                .bind(key.key_check())
                .execute(&self.pool)
                .await;
            match inserted.map_err(StoreError::from) {
                // Another manager recorded one first: check against that.
                Err(StoreError::Conflict) => {
                    return Box::pin(self.check_secrets_key(key, false)).await;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Re-seals every secret under `new` (they must all open under `old`) and
    /// records `new` as the key, in one transaction: a failure changes nothing.
    /// Returns how many secrets were re-sealed.
    pub async fn rotate_secrets_key(
        &self,
        old: &SecretsKey,
        new: &SecretsKey,
    ) -> Result<usize, StoreError> {
        self.check_secrets_key(old, false).await?;
        retrying(|| async move {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query("SELECT function_id, name, sealed FROM function_secrets")
                .fetch_all(&mut *tx)
                .await?;
            let mut resealed = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.try_get("function_id")?;
                let name: String = r.try_get("name")?;
                let sealed: Vec<u8> = r.try_get("sealed")?;
                let plain =
                    old.open(id, &name, &sealed)
                        .map_err(|_| StoreError::WrongSecretsKey {
                            fingerprint: old.fingerprint(),
                        })?;
                resealed.push((id, name.clone(), new.seal(id, &name, &plain)));
            }
            for (id, name, sealed) in &resealed {
                sqlx::query(
                    "UPDATE function_secrets SET sealed = ? WHERE function_id = ? AND name = ?",
                )
                .bind(sealed.as_slice())
                .bind(*id)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM secrets_key_check")
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO secrets_key_check (id, sealed) VALUES (1, ?)")
                .bind(new.key_check())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(resealed.len())
        })
        .await
    }

    /// `user_id`'s quota overrides (all `None` when there are none).
    pub async fn user_limits(&self, user_id: i64) -> Result<UserLimits, StoreError> {
        let row = sqlx::query(
            "SELECT max_functions, max_versions, max_artifact_bytes, rps, max_instances \
             FROM user_limits WHERE user_id = ?",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| limits_from(&r))
            .transpose()?
            .unwrap_or_default())
    }

    /// Replaces `user`'s overrides. Records a change with an empty function
    /// name, which tells routers to reload that user's limits.
    pub async fn set_user_limits(
        &self,
        user: &UserName,
        limits: &UserLimits,
    ) -> Result<(), StoreError> {
        let to_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        retrying(|| async move {
            let now = now_millis();
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query("SELECT id FROM users WHERE username = ?")
                .bind(user.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no user named {user}")))?;
            let id: i64 = row.try_get("id")?;
            sqlx::query("DELETE FROM user_limits WHERE user_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if *limits != UserLimits::default() {
                sqlx::query(
                    "INSERT INTO user_limits (user_id, max_functions, max_versions, max_artifact_bytes, \
                       rps, max_instances, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(to_i64(limits.max_functions))
                .bind(to_i64(limits.max_versions))
                .bind(to_i64(limits.max_artifact_bytes))
                .bind(to_i64(limits.rps))
                .bind(to_i64(limits.max_instances))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            changes::record(&mut tx, user.as_str(), "", now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Every user's overrides by user name (the router's rate limits).
    pub async fn all_user_limits(&self) -> Result<HashMap<String, UserLimits>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.username, l.max_functions, l.max_versions, l.max_artifact_bytes, l.rps, \
               l.max_instances FROM user_limits l JOIN users u ON u.id = l.user_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("username")?, limits_from(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The operator's quotas this store applies (see `with_quotas`).
    pub fn quotas(&self) -> &crate::fnconfig::Quotas {
        &self.quotas
    }
}

fn limits_from(r: &sqlx::any::AnyRow) -> Result<UserLimits, sqlx::Error> {
    Ok(UserLimits {
        max_functions: opt_u64(r, "max_functions")?,
        max_versions: opt_u64(r, "max_versions")?,
        max_artifact_bytes: opt_u64(r, "max_artifact_bytes")?,
        rps: opt_u64(r, "rps")?,
        max_instances: opt_u64(r, "max_instances")?,
    })
}
