//! Each user's quotas as the router applies them: the operator's `Quotas`
//! with the per-user overrides of `skiff-manager user limits` on top. Loaded
//! at start, reloaded for one user when the change feed carries a row with an
//! empty function name for them, and wholly on every full directory reload.
//! Reads are one short read lock and one hash lookup, never a database query.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use skiff_core::fnconfig::{EffectiveQuotas, Quotas, UserLimits};
use skiff_core::store::{Store, StoreError};

pub struct UserLimitsTable {
    quotas: Quotas,
    /// Only users with an override; everyone else gets `quotas` as they are.
    overrides: RwLock<HashMap<String, EffectiveQuotas>>,
    /// Bumped on every change, so a reader caching a user's quotas (the rate
    /// limiter's buckets) can tell cheaply whether to look again.
    generation: AtomicU64,
}

impl UserLimitsTable {
    /// A table with no override yet (see `reload_all`).
    pub fn new(quotas: Quotas) -> Self {
        Self {
            quotas,
            overrides: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The operator's defaults.
    pub fn defaults(&self) -> EffectiveQuotas {
        self.quotas.effective(&UserLimits::default())
    }

    /// `user`'s quotas (the defaults for a user without an override, and for
    /// one that does not exist).
    pub fn get(&self, user: &str) -> EffectiveQuotas {
        let map = self.overrides.read().unwrap_or_else(|p| p.into_inner());
        map.get(user).copied().unwrap_or_else(|| self.defaults())
    }

    /// How many instances of `user`'s functions may run at once (process runtime).
    pub fn max_instances(&self, user: &str) -> u64 {
        self.get(user).max_instances
    }

    /// Changes whenever any user's quotas may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces every override with `all` (username → overrides).
    pub fn replace_all(&self, all: HashMap<String, UserLimits>) {
        let fresh: HashMap<String, EffectiveQuotas> = all
            .into_iter()
            .filter(|(_, l)| *l != UserLimits::default())
            .map(|(u, l)| (u, self.quotas.effective(&l)))
            .collect();
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        if *map != fresh {
            *map = fresh;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Sets one user's overrides (`UserLimits::default()` removes them).
    pub fn set_user(&self, user: &str, limits: &UserLimits) {
        let mut map = self.overrides.write().unwrap_or_else(|p| p.into_inner());
        let changed = if *limits == UserLimits::default() {
            map.remove(user).is_some()
        } else {
            let q = self.quotas.effective(limits);
            map.insert(user.to_owned(), q) != Some(q)
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Reads every user's overrides from the store.
    pub async fn reload_all(&self, store: &Store) -> Result<(), StoreError> {
        self.replace_all(store.all_user_limits().await?);
        Ok(())
    }

    /// Reads `user`'s overrides from the store (a user that no longer exists
    /// has none).
    pub async fn reload_user(&self, store: &Store, user: &str) -> Result<(), StoreError> {
        let limits = match store.find_user(user).await? {
            Some(u) => store.user_limits(u.id).await?,
            None => UserLimits::default(),
        };
        self.set_user(user, &limits);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Quotas {
        match skiff_core::settings::defaults::<Quotas>() {
            Ok(q) => Quotas { rps: 10, ..q },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn overrides_apply_per_user_and_bump_the_generation_only_on_change() {
        let t = UserLimitsTable::new(quotas());
        assert_eq!(t.get("alice").rps, 10);
        let g0 = t.generation();
        let five = UserLimits {
            rps: Some(5),
            ..Default::default()
        };
        t.set_user("alice", &five);
        assert_eq!(t.get("alice").rps, 5);
        assert_eq!(t.get("bob").rps, 10, "others keep the default");
        let g1 = t.generation();
        assert_ne!(g0, g1);
        t.set_user("alice", &five);
        assert_eq!(t.generation(), g1, "same value, no change");
        t.replace_all(HashMap::from([("bob".to_owned(), five)]));
        assert_eq!(t.get("alice").rps, 10, "alice's override is gone");
        assert_eq!(t.get("bob").rps, 5);
        assert_ne!(t.generation(), g1);
        t.set_user("bob", &UserLimits::default());
        assert_eq!(t.get("bob"), t.defaults());
    }
}
