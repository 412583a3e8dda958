//! Each user's own limits (the operator's per-user overrides of the quotas), as
//! the request path and the process runtime read them: loaded at start and
//! reloaded by the directory syncer when the change feed has a row with an
//! EMPTY function name ("this user's limits changed", written by
//! `Store::set_user_limits`), and on every full reload. One table for every
//! user quota the router enforces (instances per user here; the request rate
//! reads the same table).

use std::collections::HashMap;
use std::sync::RwLock;

use skiff_core::fnconfig::UserLimits;
use skiff_core::store::{Store, StoreError};

pub struct UserLimitsTable {
    /// `SKIFF_QUOTA_INSTANCES`: running instances per user without an override.
    default_instances: u64,
    by_user: RwLock<HashMap<String, UserLimits>>,
}

impl UserLimitsTable {
    /// A table with no override (until `reload`).
    pub fn new(default_instances: u64) -> Self {
        Self {
            default_instances,
            by_user: RwLock::new(HashMap::new()),
        }
    }

    /// Reads every user's overrides again.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let all = store.all_user_limits().await?;
        *self.by_user.write().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }

    /// `user`'s overrides (all `None` when the operator set none).
    pub fn get(&self, user: &str) -> UserLimits {
        self.by_user
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied()
            .unwrap_or_default()
    }

    /// How many instances of `user`'s functions may run at once (0: none).
    pub fn max_instances(&self, user: &str) -> u64 {
        self.get(user)
            .max_instances
            .unwrap_or(self.default_instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_wins_over_the_default() {
        let t = UserLimitsTable::new(16);
        assert_eq!(t.max_instances("alice"), 16);
        t.by_user.write().unwrap().insert(
            "alice".into(),
            UserLimits {
                max_instances: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(t.max_instances("alice"), 2);
        assert_eq!(t.max_instances("bobby"), 16);
    }
}
