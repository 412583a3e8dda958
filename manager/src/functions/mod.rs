//! The functions service: every use case of `/func` in one place, between the
//! handlers (which parse, call this and map its errors) and the store. A
//! deploy is check → store → runtime here and nowhere else.

pub mod archive;
pub mod config;
pub mod logs;

use skiff_core::fnconfig::SettingsPolicy;
use skiff_core::names::FunctionName;
use skiff_core::secrets::SecretsKey;
use std::collections::BTreeMap;

use skiff_core::store::{
    Deployed, FunctionInfo, FunctionSummary, NewVersion, Store, StoreError, Upload,
};

use self::logs::{LogError, LogSource, LoggedFunction};
use crate::auth::AuthUser;
use crate::runtime::{RuntimeStatus, SharedRuntime, after_delete, after_deploy};
use crate::typecheck::{BuildRequest, CheckError, TypeChecker, UploadKind};

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// The caller has no function of that name.
    #[error("no such function")]
    NotFound,
    /// The function exists; the version does not (or was pruned).
    #[error("{0}")]
    VersionNotFound(String),
    /// A rollback with nothing before the live version.
    #[error("{0}")]
    NoPreviousVersion(String),
    /// The function exists; the secret does not.
    #[error("{0}")]
    SecretNotFound(String),
    /// A configuration change breaks a rule (names the field); nothing was written.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidSecretName(String),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Logs(#[from] LogError),
}

/// A deploy as the handler parsed it.
pub struct DeployRequest {
    pub body: Vec<u8>,
    pub kind: UploadKind,
    pub entry: Option<String>,
    pub strict: bool,
}

/// A deploy that went through, with the build's advice.
pub struct DeployOutcome {
    pub deployed: Deployed,
    pub warnings: Vec<String>,
    pub resolved: BTreeMap<String, String>,
    pub artifact_sha256: String,
    pub entry: String,
}

/// A function with where its instances stand (Kubernetes runtime only).
pub struct FunctionDetail {
    pub function: FunctionInfo,
    pub runtime: Option<RuntimeStatus>,
}

/// What the service works with; borrowed from the application state for one
/// request (`AppState::functions`).
pub struct Functions<'a> {
    pub(crate) store: &'a Store,
    pub(crate) checker: &'a TypeChecker,
    pub(crate) runtime: Option<&'a SharedRuntime>,
    pub(crate) logs: &'a dyn LogSource,
    pub(crate) policy: &'a SettingsPolicy,
    pub(crate) secrets_key: &'a SecretsKey,
}

/// `Some` or the service's `NotFound`: the one look-up-or-404 of every use case.
fn found<T>(value: Option<T>) -> Result<T, FunctionsError> {
    value.ok_or(FunctionsError::NotFound)
}

impl Functions<'_> {
    /// Builds the upload, stores it with its artifact as the next version of
    /// `owner`'s function `name` and tells the runtime, which has applied it
    /// when this returns.
    pub async fn deploy(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        req: DeployRequest,
    ) -> Result<DeployOutcome, FunctionsError> {
        let DeployRequest {
            body,
            kind,
            entry,
            strict,
        } = req;
        let built = self
            .checker
            .build(BuildRequest {
                kind,
                entry,
                strict,
                tenant: Some(owner.name.to_string()),
                body: body.clone(),
            })
            .await?;
        let deployed = self
            .store
            .deploy_version(
                owner.id,
                &owner.name,
                name,
                NewVersion {
                    source: &body,
                    source_type: kind.as_str(),
                    entry: Some(&built.entry),
                    artifact: Some(built.artifact.as_bytes()),
                    lock: built.lock.as_deref(),
                },
            )
            .await?;
        tracing::info!(
            user = %owner.name,
            function = %name,
            version = deployed.version,
            shape = %built.shape,
            warnings = built.warnings.len(),
            "deployed"
        );
        after_deploy(self.runtime, owner.name.as_str(), name.as_str()).await;
        Ok(DeployOutcome {
            artifact_sha256: skiff_core::store::sha256_hex(built.artifact.as_bytes()),
            deployed,
            warnings: built.warnings,
            resolved: built.resolved,
            entry: built.entry,
        })
    }

    pub async fn list(&self, owner: &AuthUser) -> Result<Vec<FunctionSummary>, FunctionsError> {
        Ok(self.store.list_functions(owner.id).await?)
    }

    /// The function with all its versions, and the runtime's state of it.
    pub async fn info(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<FunctionDetail, FunctionsError> {
        let function = self.find(owner, name).await?;
        let runtime = match self.runtime {
            Some(rt) => rt.status(owner.id, name, function.version).await?,
            None => None,
        };
        Ok(FunctionDetail { function, runtime })
    }

    /// The live version's upload, byte for byte, with its kind.
    pub async fn code(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<Upload, FunctionsError> {
        found(self.store.live_upload(owner.id, name).await?)
    }

    /// Deletes the function with all its versions, then tells the runtime.
    pub async fn remove(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<(), FunctionsError> {
        if !self
            .store
            .delete_function(owner.id, &owner.name, name)
            .await?
        {
            return Err(FunctionsError::NotFound);
        }
        tracing::info!(user = %owner.name, function = %name, "deleted");
        after_delete(self.runtime, owner.name.as_str(), name.as_str()).await;
        Ok(())
    }

    /// At most the last `lines` lines of the function's output, oldest first.
    pub async fn logs(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        lines: usize,
    ) -> Result<Vec<String>, FunctionsError> {
        let function = self.find(owner, name).await?;
        let logged = LoggedFunction {
            id: function.id,
            user: &owner.name,
            name,
        };
        Ok(self.logs.tail(logged, lines).await?)
    }

    /// The function's statistics over the last `window`, every router's
    /// per-minute rows summed.
    pub async fn stats(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        window: std::time::Duration,
    ) -> Result<skiff_core::store::FunctionStats, FunctionsError> {
        self.store
            .function_stats(owner.id, name, window)
            .await?
            .ok_or(FunctionsError::NotFound)
    }

    async fn find(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<FunctionInfo, FunctionsError> {
        found(self.store.get_function(owner.id, name).await?)
    }
}
