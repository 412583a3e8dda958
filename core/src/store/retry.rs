//! The one retry policy for transactions that lost a race: a MySQL/MariaDB
//! deadlock or lock wait timeout, SQLite's `database is locked` / busy snapshot
//! (all `StoreError::Deadlock`). Such a transaction was rolled back and wrote
//! nothing, so running it again is safe; every write in the store goes through
//! [`retrying`], and callers never loop themselves.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// Runs after the first attempt, at most. With the backoff below the last one
/// starts about 0.8 s after the first: longer than any lock is held by a
/// transaction of this store, short enough to answer a client promptly.
pub(super) const RETRIES: u32 = 20;

/// Linear backoff, capped: 5 ms, 10 ms, … 50 ms, 50 ms, …
fn backoff(retry: u32) -> Duration {
    Duration::from_millis(5 * u64::from(retry.min(10)))
}

/// Runs `attempt` until it does not lose a lock conflict, or [`RETRIES`] more
/// times; the last error is returned as it is (`Deadlock` then means "busy").
pub(super) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut retry = 0;
    loop {
        match attempt().await {
            Err(StoreError::Deadlock) if retry < RETRIES => {
                retry += 1;
                tokio::time::sleep(backoff(retry)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn lost_races_are_run_again_until_they_win() {
        let tries = &AtomicU32::new(0);
        let done = retrying(|| async move {
            if tries.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(StoreError::Deadlock)
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(done.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_race_lost_every_time_ends_busy() {
        let tries = &AtomicU32::new(0);
        let done: Result<(), _> = retrying(|| async move {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Deadlock)
        })
        .await;
        assert!(matches!(done, Err(StoreError::Deadlock)));
        assert_eq!(tries.load(Ordering::SeqCst), RETRIES + 1);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let tries = &AtomicU32::new(0);
        let done: Result<(), _> = retrying(|| async move {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict)
        })
        .await;
        assert!(matches!(done, Err(StoreError::Conflict)));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
