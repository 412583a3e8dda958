//! Scale to zero, decided (pure): a function is idle when nothing has used it
//! for `SKIFF_K8S_IDLE_SECS`. Its uses are the calls the routers counted (per
//! minute, in the database: a call somewhere in a minute counts as at its
//! end, the latest it can have been) and what the manager itself saw: a
//! deploy, a wake, its own start (so a manager that restarts never scales
//! down a function whose recent calls it has not seen).

use std::time::Duration;

use skiff_core::store::MINUTE_MS;

/// What is known of one function's last use, in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUse {
    /// Start of the last minute a router counted a call in, if any.
    pub called_minute: Option<i64>,
    /// The manager's last deploy or wake of it, or its own start.
    pub touched: i64,
}

impl LastUse {
    /// The latest moment the function can have been used.
    pub fn latest(self) -> i64 {
        let called = self
            .called_minute
            .map_or(i64::MIN, |m| m.saturating_add(MINUTE_MS));
        called.max(self.touched)
    }
}

/// What the reconcile pass does with one function's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Nothing: in use, scale to zero is off, or already at zero.
    Keep,
    /// Scale its Deployment to 0.
    ScaleToZero,
}

/// `idle`: `None` when scale to zero is off. `at_zero`: the manager already
/// scaled it to 0 (and nothing woke it since).
pub fn decide(now: i64, idle: Option<Duration>, last: LastUse, at_zero: bool) -> IdleAction {
    let Some(idle) = idle else {
        return IdleAction::Keep;
    };
    let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
    if at_zero || now.saturating_sub(last.latest()) < idle_ms {
        IdleAction::Keep
    } else {
        IdleAction::ScaleToZero
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS;
    const IDLE: Option<Duration> = Some(Duration::from_secs(600));

    fn used(called_minute: Option<i64>, touched: i64) -> LastUse {
        LastUse {
            called_minute,
            touched,
        }
    }

    #[test]
    fn a_call_counts_until_the_end_of_its_minute() {
        let last = used(Some(T0), 0);
        assert_eq!(last.latest(), T0 + MINUTE_MS);
        // 10 minutes after the minute's start is only 9 after its end.
        assert_eq!(
            decide(T0 + 10 * MINUTE_MS, IDLE, last, false),
            IdleAction::Keep
        );
        assert_eq!(
            decide(T0 + 11 * MINUTE_MS - 1, IDLE, last, false),
            IdleAction::Keep
        );
        assert_eq!(
            decide(T0 + 11 * MINUTE_MS, IDLE, last, false),
            IdleAction::ScaleToZero
        );
    }

    #[test]
    fn a_deploy_wake_or_restart_after_the_last_call_restarts_the_clock() {
        let last = used(Some(T0), T0 + 30 * MINUTE_MS);
        assert_eq!(
            decide(T0 + 35 * MINUTE_MS, IDLE, last, false),
            IdleAction::Keep
        );
        assert_eq!(
            decide(T0 + 40 * MINUTE_MS, IDLE, last, false),
            IdleAction::ScaleToZero
        );
        // Never called: idle from the deploy (or the manager's start) on.
        let never = used(None, T0);
        assert_eq!(
            decide(T0 + 9 * MINUTE_MS, IDLE, never, false),
            IdleAction::Keep
        );
        assert_eq!(
            decide(T0 + 10 * MINUTE_MS, IDLE, never, false),
            IdleAction::ScaleToZero
        );
    }

    #[test]
    fn off_or_already_at_zero_keeps() {
        let long_ago = used(Some(0), 0);
        assert_eq!(decide(T0, None, long_ago, false), IdleAction::Keep);
        assert_eq!(decide(T0, IDLE, long_ago, true), IdleAction::Keep);
        assert_eq!(decide(T0, IDLE, long_ago, false), IdleAction::ScaleToZero);
    }

    #[test]
    fn a_clock_behind_the_last_use_keeps() {
        // A router's clock ahead of the manager's: its minute is in the future.
        let last = used(Some(T0 + 5 * MINUTE_MS), 0);
        assert_eq!(decide(T0, IDLE, last, false), IdleAction::Keep);
    }
}
