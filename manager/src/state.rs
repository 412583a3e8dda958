//! What every handler can reach: the store, the token keys, the type checker,
//! the account rate limits and the configuration.

use skiff_core::store::Store;
use skiff_core::tokens::TokenKeys;

use crate::config::ManagerConfig;
use crate::rate_limit::AccountLimits;
use crate::runtime::SharedRuntime;
use crate::typecheck::TypeChecker;

pub struct AppState {
    pub store: Store,
    pub tokens: TokenKeys,
    pub checker: TypeChecker,
    pub config: ManagerConfig,
    pub limits: AccountLimits,
    /// Where functions run; `None` is the process runtime (the router starts
    /// instances itself). Told after every committed deploy and delete.
    pub runtime: Option<SharedRuntime>,
}

impl AppState {
    pub fn new(
        store: Store,
        tokens: TokenKeys,
        checker: TypeChecker,
        config: ManagerConfig,
    ) -> Self {
        Self {
            limits: AccountLimits::new(&config),
            store,
            tokens,
            checker,
            config,
            runtime: None,
        }
    }

    pub fn with_runtime(mut self, runtime: Option<SharedRuntime>) -> Self {
        self.runtime = runtime;
        self
    }
}
