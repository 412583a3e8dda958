//! The configuration use cases of `/func/<name>`: env, secrets, settings,
//! rollback and reading old versions. Each change is a new version, told to
//! the runtime exactly like a deploy (see `Store::change_config`).
//!
//! A secret's value passes through here on its way to the store, sealed
//! there; it is never logged, returned or put into an error message.

use std::collections::BTreeMap;

use skiff_core::fnconfig::{
    EffectiveSettings, FunctionConfig, FunctionSettings, MAX_ENV_VALUE_BYTES, check_env_name,
};
use skiff_core::names::FunctionName;
use skiff_core::store::{ConfigVersion, StoreError, Upload};

use super::{Functions, FunctionsError, found};
use crate::auth::AuthUser;
use crate::runtime::after_deploy;

/// The live configuration as `GET /func/<name>/config` shows it.
pub struct ConfigView {
    pub version: i64,
    pub env: BTreeMap<String, String>,
    /// Secret names that have a value (never the values).
    pub secrets: Vec<String>,
    /// Every setting with the operator's defaults filled in.
    pub effective: EffectiveSettings,
    /// What the function set itself.
    pub overrides: FunctionSettings,
}

/// A validated `PATCH /func/<name>/config`: `None` unsets / returns a setting
/// to the operator's default.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigPatch {
    pub env: BTreeMap<String, Option<String>>,
    pub memory_mb: Option<Option<u64>>,
    pub timeout_secs: Option<Option<u64>>,
    pub concurrency: Option<Option<u64>>,
    pub min_instances: Option<Option<u64>>,
    pub max_instances: Option<Option<u64>>,
    pub idle_timeout_secs: Option<Option<u64>>,
}

impl ConfigPatch {
    fn apply(&self, c: &mut FunctionConfig) {
        for (k, v) in &self.env {
            match v {
                Some(v) => {
                    c.env.insert(k.clone(), v.clone());
                }
                None => {
                    c.env.remove(k);
                }
            }
        }
        let s = &mut c.settings;
        for (field, patch) in [
            (&mut s.memory_mb, self.memory_mb),
            (&mut s.timeout_secs, self.timeout_secs),
            (&mut s.concurrency, self.concurrency),
            (&mut s.min_instances, self.min_instances),
            (&mut s.max_instances, self.max_instances),
            (&mut s.idle_timeout_secs, self.idle_timeout_secs),
        ] {
            if let Some(v) = patch {
                *field = v;
            }
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Maps what only the configuration routes can meet; the rest goes on as a
/// store error (quotas, bad config, the database).
fn config_error(e: StoreError) -> FunctionsError {
    match e {
        StoreError::NotFound(_) => FunctionsError::NotFound,
        StoreError::BadConfig(e) => FunctionsError::InvalidConfig(e.to_string()),
        other => FunctionsError::Store(other),
    }
}

impl Functions<'_> {
    /// The live version's env, secret names and settings.
    pub async fn config(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<ConfigView, FunctionsError> {
        let live = self
            .store
            .live_config(owner.id, name)
            .await
            .map_err(config_error)?;
        Ok(ConfigView {
            version: live.version,
            effective: self.policy.effective(&live.config.settings),
            overrides: live.config.settings,
            env: live.config.env,
            secrets: live.secrets_set,
        })
    }

    /// Applies `patch` to the live configuration as a new version.
    pub async fn patch_config(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        patch: ConfigPatch,
    ) -> Result<ConfigVersion, FunctionsError> {
        if patch.is_empty() {
            return Err(FunctionsError::InvalidConfig(
                "the body changes nothing: give env and/or settings to change".into(),
            ));
        }
        for (k, v) in &patch.env {
            check_env_name(k).map_err(|e| FunctionsError::InvalidConfig(format!("env: {e}")))?;
            if v.as_ref().is_some_and(|v| v.len() > MAX_ENV_VALUE_BYTES) {
                return Err(FunctionsError::InvalidConfig(format!(
                    "env: the value of {k} is over {MAX_ENV_VALUE_BYTES} bytes"
                )));
            }
        }
        let policy = self.policy;
        let changed = self
            .store
            .change_config(owner.id, &owner.name, name, |c| {
                patch.apply(c);
                policy.check(&c.settings).map_err(StoreError::BadConfig)
            })
            .await
            .map_err(config_error)?;
        self.changed(owner, name, changed, "configuration changed")
            .await
    }

    /// Sets secret `secret` to `value` as a new version.
    pub async fn put_secret(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        secret: &str,
        value: &str,
    ) -> Result<ConfigVersion, FunctionsError> {
        check_env_name(secret).map_err(|e| FunctionsError::InvalidSecretName(e.to_string()))?;
        let changed = self
            .store
            .put_secret(
                owner.id,
                &owner.name,
                name,
                secret,
                value.as_bytes(),
                self.secrets_key,
            )
            .await
            .map_err(config_error)?;
        self.changed(owner, name, changed, "secret set").await
    }

    /// Deletes secret `secret` as a new version.
    pub async fn delete_secret(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        secret: &str,
    ) -> Result<ConfigVersion, FunctionsError> {
        check_env_name(secret).map_err(|e| FunctionsError::InvalidSecretName(e.to_string()))?;
        // Tells "no such function" from "no such secret" (both 404).
        let live = self
            .store
            .live_config(owner.id, name)
            .await
            .map_err(config_error)?;
        if !live.config.secrets.contains(secret) {
            return Err(FunctionsError::SecretNotFound(format!(
                "{name} has no secret named {secret}"
            )));
        }
        let changed = match self
            .store
            .delete_secret(owner.id, &owner.name, name, secret)
            .await
        {
            // Deleted by another request in between.
            Err(StoreError::NotFound(m)) => Err(FunctionsError::SecretNotFound(m)),
            other => other.map_err(config_error),
        }?;
        self.changed(owner, name, changed, "secret deleted").await
    }

    /// Makes version `to` live (default: the one before the live one).
    pub async fn rollback(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        to: Option<i64>,
    ) -> Result<ConfigVersion, FunctionsError> {
        // Tells "no such function" from "no such version" (both 404).
        self.find(owner, name).await?;
        let changed = match self.store.rollback(owner.id, &owner.name, name, to).await {
            Err(StoreError::NotFound(m)) => Err(FunctionsError::VersionNotFound(m)),
            Err(StoreError::NoRollbackTarget(m)) => Err(FunctionsError::NoPreviousVersion(m)),
            other => other.map_err(config_error),
        }?;
        self.changed(owner, name, changed, "rolled back").await
    }

    /// Version `version`'s upload, byte for byte, with its kind.
    pub async fn version_code(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        version: i64,
    ) -> Result<Upload, FunctionsError> {
        if let Some(upload) = self.store.version_upload(owner.id, name, version).await? {
            return Ok(upload);
        }
        found(self.store.get_function(owner.id, name).await?)?;
        Err(FunctionsError::VersionNotFound(format!(
            "version {version} of {name} does not exist (or was pruned)"
        )))
    }

    /// Logs a committed change (never a value) and tells the runtime, which
    /// rolls to the new live version like after a deploy.
    async fn changed(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        changed: ConfigVersion,
        what: &'static str,
    ) -> Result<ConfigVersion, FunctionsError> {
        tracing::info!(user = %owner.name, function = %name, version = changed.version, "{what}");
        after_deploy(self.runtime, owner.name.as_str(), name.as_str()).await;
        Ok(changed)
    }
}
