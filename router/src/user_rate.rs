//! Requests per second per user at this router: one token bucket per user
//! (refilled at the user's `rps` quota, holding at most 2 s worth), checked
//! right after the path's function is found, before anything else is done for
//! the request. Over the rate the caller gets `429 rate_limited` with the
//! whole seconds until a token is back as `Retry-After`.
//!
//! Cheap by design: one uncontended mutex, one hash lookup by `&str`, a little
//! float arithmetic, no await and no allocation (except the first request of a
//! user, which inserts its bucket). A bucket exists only for a user the
//! directory knows (the caller has found one of their functions), and goes
//! when that user's last function does, so the map is bounded by the users
//! with functions, whatever callers send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use skiff_core::names::UserName;

use crate::user_limits::UserLimitsTable;

/// `Retry-After` when a user's rate is 0 (every request refused): no token is
/// ever coming back, so this only paces clients that honour the header.
const RETRY_WHEN_BLOCKED_SECS: u64 = 60;
/// How many seconds of the rate a bucket holds (the burst a quiet user may send).
const BURST_SECS: f64 = 2.0;

struct Bucket {
    tokens: f64,
    last: Instant,
    rps: u64,
    /// `UserLimitsTable::generation()` when `rps` was read.
    generation: u64,
}

pub struct UserRate {
    limits: Arc<UserLimitsTable>,
    buckets: Mutex<HashMap<UserName, Bucket>>,
}

impl UserRate {
    pub fn new(limits: Arc<UserLimitsTable>) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `user`'s bucket: `Ok` to go on, `Err(secs)` when the
    /// user is over their rate, with the seconds until a token is back.
    pub fn check(&self, user: &UserName) -> Result<(), u64> {
        self.check_at(user, Instant::now())
    }

    fn check_at(&self, user: &UserName, now: Instant) -> Result<(), u64> {
        let generation = self.limits.generation();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(user.as_str()) {
            if b.generation != generation {
                b.generation = generation;
                b.rps = self.limits.get(user.as_str()).rps;
            }
            return b.take(now);
        }
        // A new bucket starts full: a user's first burst is always allowed.
        let rps = self.limits.get(user.as_str()).rps;
        let mut b = Bucket {
            tokens: capacity(rps),
            last: now,
            rps,
            generation,
        };
        let verdict = b.take(now);
        buckets.insert(user.clone(), b);
        verdict
    }

    /// Drops the buckets of users `keep` says no longer have a function.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|u, _| keep(u.as_str()));
    }

    /// How many users have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn capacity(rps: u64) -> f64 {
    rps as f64 * BURST_SECS
}

impl Bucket {
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        if self.rps == 0 {
            return Err(RETRY_WHEN_BLOCKED_SECS);
        }
        let rate = self.rps as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        // Also clamps a bucket whose rate was just lowered.
        self.tokens = (self.tokens + elapsed * rate).min(capacity(self.rps));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use skiff_core::fnconfig::{Quotas, UserLimits};

    use super::*;

    fn rate(rps: u64) -> (Arc<UserLimitsTable>, UserRate) {
        let q = match skiff_core::settings::defaults::<Quotas>() {
            Ok(q) => Quotas { rps, ..q },
            Err(e) => panic!("{e}"),
        };
        let t = Arc::new(UserLimitsTable::new(q));
        (t.clone(), UserRate::new(t))
    }

    fn user(s: &str) -> UserName {
        match UserName::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_burst_of_two_seconds_then_the_rate() {
        let (_, r) = rate(5);
        let (alice, bob) = (user("alice"), user("bob"));
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(r.check_at(&alice, t0), Ok(()), "request {i} of the burst");
        }
        assert_eq!(r.check_at(&alice, t0), Err(1));
        assert_eq!(r.check_at(&bob, t0), Ok(()), "bob has his own bucket");
        // 5/s: one token every 200 ms.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(r.check_at(&alice, t1), Ok(()));
        assert_eq!(r.check_at(&alice, t1), Err(1));
        // A long pause refills no more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(r.check_at(&alice, t2), Ok(()));
        }
        assert!(r.check_at(&alice, t2).is_err());
        assert_eq!(r.len(), 2);
        r.retain(|u| u != "bob");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let (t, r) = rate(1000);
        let alice = user("alice");
        t.set_user(
            "alice",
            &UserLimits {
                rps: Some(1),
                ..Default::default()
            },
        );
        let t0 = Instant::now();
        assert_eq!(r.check_at(&alice, t0), Ok(()));
        assert_eq!(r.check_at(&alice, t0), Ok(()));
        assert_eq!(r.check_at(&alice, t0), Err(1));
        t.set_user(
            "alice",
            &UserLimits {
                rps: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(
            r.check_at(&alice, t0 + Duration::from_secs(9)),
            Err(RETRY_WHEN_BLOCKED_SECS),
            "a rate of 0 refuses everything"
        );
    }

    #[test]
    fn a_changed_override_applies_to_an_existing_bucket() {
        let (t, r) = rate(2);
        let alice = user("alice");
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(r.check_at(&alice, t0), Ok(()));
        }
        assert!(r.check_at(&alice, t0).is_err());
        t.set_user(
            "alice",
            &UserLimits {
                rps: Some(100),
                ..Default::default()
            },
        );
        // 100/s: 10 ms later there is a token again.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(r.check_at(&alice, t1), Ok(()));
    }
}
