//! The functions service: every use case of `/func` in one place, between the
//! handlers (which parse, call this and map its errors) and the store. A
//! deploy is check → store → runtime here and nowhere else.

pub mod archive;
pub mod logs;

use skiff_core::names::FunctionName;
use skiff_core::store::{Deployed, FunctionInfo, FunctionSummary, Store, StoreError};

use self::logs::{LogError, LogSource, LoggedFunction};
use crate::auth::AuthUser;
use crate::runtime::{RuntimeStatus, SharedRuntime, after_delete, after_deploy};
use crate::typecheck::{CheckError, TypeChecker};

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// The caller has no function of that name.
    #[error("no such function")]
    NotFound,
    #[error("the request body must be the function's TypeScript source")]
    EmptySource,
    #[error("the source is not valid UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Logs(#[from] LogError),
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
}

/// `Some` or the service's `NotFound`: the one look-up-or-404 of every use case.
fn found<T>(value: Option<T>) -> Result<T, FunctionsError> {
    value.ok_or(FunctionsError::NotFound)
}

impl Functions<'_> {
    /// Checks `source`, stores it as the next version of `owner`'s function
    /// `name` and tells the runtime, which has applied it when this returns.
    pub async fn deploy(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
        source: &[u8],
    ) -> Result<Deployed, FunctionsError> {
        if source.iter().all(u8::is_ascii_whitespace) {
            return Err(FunctionsError::EmptySource);
        }
        let text = std::str::from_utf8(source).map_err(FunctionsError::NotUtf8)?;
        self.checker.check(text).await?;
        let done = self
            .store
            .deploy(owner.id, &owner.name, name, source)
            .await?;
        tracing::info!(user = %owner.name, function = %name, version = done.version, "deployed");
        after_deploy(self.runtime, owner.name.as_str(), name.as_str()).await;
        Ok(done)
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

    /// The live version's source, byte for byte.
    pub async fn code(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<Vec<u8>, FunctionsError> {
        found(self.store.live_source(owner.id, name).await?)
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

    async fn find(
        &self,
        owner: &AuthUser,
        name: &FunctionName,
    ) -> Result<FunctionInfo, FunctionsError> {
        found(self.store.get_function(owner.id, name).await?)
    }
}
