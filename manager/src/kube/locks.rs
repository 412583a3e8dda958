//! One lock per function, so a deploy and a reconcile pass never apply the same
//! function at once (the later one could roll back the newer version). Entries
//! are weak: a lock nobody holds or waits for costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            // A poisoned map only means another thread panicked while holding
            // it; the map itself is still consistent.
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, weak| weak.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_key_is_exclusive_and_others_are_not() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("alice/a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("alice/b")).await;
        assert!(other.is_ok());
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("alice/a")).await;
        assert!(same.is_err());
        drop(held);
        drop(other);
        let _again = locks.lock("alice/a").await;
        assert_eq!(locks.len(), 1, "released entries are dropped");
    }
}
