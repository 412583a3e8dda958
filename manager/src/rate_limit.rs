//! Fixed-window counters that limit login attempts per username and per client
//! address. In memory, per manager process: with several manager replicas each
//! one counts on its own (documented in README).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many keys, expired windows are swept before inserting.
const SWEEP_AT: usize = 10_000;

pub struct Limiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for `key`. `Err(seconds)` when the limit is reached:
    /// how long until the window ends.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut counts = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if counts.len() >= SWEEP_AT {
            counts.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forgets `key` (after a successful login, the user's own count restarts).
    pub fn reset(&self, key: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_reopens_after_the_window() {
        let l = Limiter::new(2, Duration::from_millis(50));
        assert!(l.hit("a").is_ok());
        assert!(l.hit("a").is_ok());
        assert!(l.hit("a").is_err());
        assert!(l.hit("b").is_ok(), "other keys are independent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.hit("a").is_ok());
        l.reset("a");
        assert!(l.hit("a").is_ok());
        assert!(l.hit("a").is_ok());
    }
}
