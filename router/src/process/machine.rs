//! One function's instance life in the process runtime, as a pure state
//! machine: no processes, no clocks, no locks. The runtime holds one `Machine`
//! per function id under one lock, feeds it events, and carries out the
//! actions it returns; every transition is here and unit-tested without Deno.
//!
//! ```text
//!            want                 started
//!   Idle ───────────▶ Starting ────────────▶ Ready ◀──────────────┐
//!    ▲                   │ start failed       │ │ want/deploy newer │ started
//!    │ exited, idle,     ▼                    │ ▼                   │ (old one drains)
//!    │ unresponsive    Failed{at, reason}     │ Replacing ──────────┘
//!    └────────────────────────────────────────┘    │ start failed: old drains, Failed
//!   any ── deleted ──▶ Gone (instances stopped, files removed; ids are never reused)
//! ```
//! Instances that were replaced drain beside the state (`draining`) until
//! their last request ends.

use std::time::{Duration, Instant};

use crate::error::StartError;

/// After a failed start, requests for that version fail fast for this long
/// instead of each spawning a process that will fail the same way.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// What the machine needs to know of an instance: which one it is.
pub trait Member: Clone {
    fn id(&self) -> u64;
}

#[derive(Debug, Clone, PartialEq)]
pub enum State<I> {
    /// No instance; the next request starts one.
    Idle,
    /// An instance of `version` is being started; requests wait for it.
    Starting { version: i64 },
    /// `instance` (of `version`) takes requests.
    Ready { instance: I, version: i64 },
    /// `instance` still takes requests for versions up to its own while an
    /// instance of the newer `next` starts (a deploy: start new, then drain old).
    Replacing {
        instance: I,
        version: i64,
        next: i64,
    },
    /// The start of `version` failed at `at`; requests for it fail fast for a while.
    Failed {
        version: i64,
        at: Instant,
        reason: StartError,
    },
    /// Deleted. Final.
    Gone,
}

/// The answer to a request that wants an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Want<I> {
    /// Send it here (the caller leases the instance under the same lock).
    Use(I),
    /// A start is under way: wait for the machine to change, then ask again.
    Wait,
    Fail(StartError),
}

/// What the runtime must do after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<I> {
    /// Start an instance of this version; report `started` or `start_failed`.
    Spawn { version: i64 },
    /// Let in-flight requests finish, then stop it; report `drained`.
    Drain(I),
    /// Stop it now.
    Stop(I),
    /// The function is deleted: once `stop`ped (briefly drained), remove its files.
    RemoveAll { stop: Vec<I> },
}

pub type Actions<I> = Vec<Action<I>>;

#[derive(Debug, Clone)]
pub struct Machine<I> {
    state: State<I>,
    /// Replaced instances finishing their requests.
    draining: Vec<I>,
    /// The newest version anyone asked for or deployed: a start of an older
    /// one is followed by a start of this one.
    wanted: i64,
}

impl<I> Default for Machine<I> {
    fn default() -> Self {
        Self {
            state: State::Idle,
            draining: Vec::new(),
            wanted: 0,
        }
    }
}

impl<I: Member> Machine<I> {
    pub fn state(&self) -> &State<I> {
        &self.state
    }

    pub fn draining(&self) -> &[I] {
        &self.draining
    }

    /// The instance taking requests now, if any.
    pub fn serving(&self) -> Option<&I> {
        match &self.state {
            State::Ready { instance, .. } | State::Replacing { instance, .. } => Some(instance),
            _ => None,
        }
    }

    pub fn is_gone(&self) -> bool {
        matches!(self.state, State::Gone)
    }

    /// Whether a newer version is starting beside the serving instance.
    pub fn is_replacing(&self) -> bool {
        matches!(self.state, State::Replacing { .. })
    }

    /// A request for `version` (the live version as the directory knows it).
    pub fn want(&mut self, version: i64, now: Instant) -> (Want<I>, Actions<I>) {
        self.wanted = self.wanted.max(version);
        // A start always starts the newest version known.
        let newest = self.wanted;
        let mut actions = Vec::new();
        let answer = match &mut self.state {
            State::Gone => Want::Fail(StartError::Gone),
            // A newer version than the caller saw is fine: it is what is live now.
            State::Ready {
                instance,
                version: v,
            }
            | State::Replacing {
                instance,
                version: v,
                ..
            } if *v >= version => Want::Use(instance.clone()),
            State::Ready {
                instance,
                version: v,
            } => {
                let (instance, v) = (instance.clone(), *v);
                self.state = State::Replacing {
                    instance,
                    version: v,
                    next: newest,
                };
                actions.push(Action::Spawn { version: newest });
                Want::Wait
            }
            State::Replacing { .. } | State::Starting { .. } => Want::Wait,
            State::Failed {
                version: v,
                at,
                reason,
            } if *v >= version && now.saturating_duration_since(*at) < FAILURE_BACKOFF => {
                Want::Fail(reason.clone())
            }
            State::Idle | State::Failed { .. } => {
                self.state = State::Starting { version: newest };
                actions.push(Action::Spawn { version: newest });
                Want::Wait
            }
        };
        (answer, actions)
    }

    /// The directory says `version` is live now. A running function starts
    /// it ahead of its next request; an idle one waits for a request.
    pub fn deployed(&mut self, version: i64) -> Actions<I> {
        self.wanted = self.wanted.max(version);
        match &self.state {
            State::Ready {
                instance,
                version: v,
            } if *v < version => {
                self.state = State::Replacing {
                    instance: instance.clone(),
                    version: *v,
                    next: version,
                };
                vec![Action::Spawn { version }]
            }
            // A newer version ends the back-off of an older one's failure.
            State::Failed { version: v, .. } if *v < version => {
                self.state = State::Idle;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The start of `version` succeeded with `instance`.
    pub fn started(&mut self, version: i64, instance: I) -> Actions<I> {
        let mut actions = Vec::new();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Starting { version: v } if v == version => {
                self.state = State::Ready { instance, version };
            }
            State::Replacing {
                instance: old,
                next,
                ..
            } if next == version => {
                self.state = State::Ready { instance, version };
                self.draining.push(old.clone());
                actions.push(Action::Drain(old));
            }
            State::Gone => {
                self.state = State::Gone;
                // Deleted while it started: it goes, and so do any files it wrote.
                actions.push(Action::RemoveAll {
                    stop: vec![instance],
                });
                return actions;
            }
            other => {
                // Not the start this state waits for (it was superseded).
                self.state = other;
                actions.push(Action::Stop(instance));
                return actions;
            }
        }
        // Deployed again while it started: start the newest next.
        if self.wanted > version {
            actions.extend(self.deployed(self.wanted));
        }
        actions
    }

    /// The start of `version` failed.
    pub fn start_failed(&mut self, version: i64, reason: StartError, now: Instant) -> Actions<I> {
        let failed = State::Failed {
            version,
            at: now,
            reason,
        };
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Starting { version: v } if v == version => {
                self.state = failed;
                Vec::new()
            }
            // The new version cannot start: requests are for it, so the old
            // instance only finishes what it holds.
            State::Replacing {
                instance: old,
                next,
                ..
            } if next == version => {
                self.state = failed;
                self.draining.push(old.clone());
                vec![Action::Drain(old)]
            }
            State::Gone => {
                self.state = State::Gone;
                vec![Action::RemoveAll { stop: Vec::new() }]
            }
            other => {
                self.state = other;
                Vec::new()
            }
        }
    }

    /// The instance `id` exited (crashed, or was stopped).
    pub fn exited(&mut self, id: u64) -> Actions<I> {
        self.draining.retain(|i| i.id() != id);
        match &self.state {
            State::Ready { instance, .. } if instance.id() == id => self.state = State::Idle,
            State::Replacing { instance, next, .. } if instance.id() == id => {
                self.state = State::Starting { version: *next };
            }
            _ => {}
        }
        Vec::new()
    }

    /// The instance `id` finished draining.
    pub fn drained(&mut self, id: u64) {
        self.draining.retain(|i| i.id() != id);
    }

    /// The serving instance `id` has had no request for the idle timeout.
    pub fn idle(&mut self, id: u64) -> Actions<I> {
        match &self.state {
            State::Ready { instance, .. } if instance.id() == id => {
                let i = instance.clone();
                self.state = State::Idle;
                vec![Action::Stop(i)]
            }
            _ => Vec::new(),
        }
    }

    /// The serving instance `id` stopped answering (its event loop is stuck):
    /// it is stopped, and a new one starts on the next request.
    pub fn unresponsive(&mut self, id: u64) -> Actions<I> {
        match &self.state {
            State::Ready { instance, .. } if instance.id() == id => {
                let i = instance.clone();
                self.state = State::Idle;
                vec![Action::Stop(i)]
            }
            State::Replacing { instance, next, .. } if instance.id() == id => {
                let i = instance.clone();
                self.state = State::Starting { version: *next };
                vec![Action::Stop(i)]
            }
            _ => {
                if let Some(i) = self.draining.iter().find(|i| i.id() == id).cloned() {
                    self.draining.retain(|d| d.id() != id);
                    vec![Action::Stop(i)]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// The function was deleted: every instance goes, then its files.
    pub fn deleted(&mut self) -> Actions<I> {
        let mut stop: Vec<I> = std::mem::take(&mut self.draining);
        if let Some(i) = self.serving() {
            stop.push(i.clone());
        }
        let was_gone = self.is_gone();
        self.state = State::Gone;
        if was_gone {
            Vec::new()
        } else {
            vec![Action::RemoveAll { stop }]
        }
    }

    /// Every instance, for shutdown.
    pub fn all_instances(&self) -> Vec<I> {
        let mut all = self.draining.clone();
        all.extend(self.serving().cloned());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct I(u64);

    impl Member for I {
        fn id(&self) -> u64 {
            self.0
        }
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn ready(version: i64, id: u64) -> Machine<I> {
        let mut m = Machine::default();
        m.want(version, now());
        m.started(version, I(id));
        m
    }

    #[test]
    fn a_first_request_starts_one_instance_and_later_ones_wait_for_it() {
        let mut m: Machine<I> = Machine::default();
        let (w, a) = m.want(1, now());
        assert_eq!((w, a), (Want::Wait, vec![Action::Spawn { version: 1 }]));
        // concurrent first requests share the start
        let (w, a) = m.want(1, now());
        assert_eq!((w, a), (Want::Wait, vec![]));
        assert!(m.started(1, I(7)).is_empty());
        assert_eq!(m.want(1, now()), (Want::Use(I(7)), vec![]));
        assert_eq!(
            m.state(),
            &State::Ready {
                instance: I(7),
                version: 1
            }
        );
    }

    #[test]
    fn a_crash_makes_the_next_request_start_a_fresh_instance() {
        let mut m = ready(1, 7);
        assert!(m.exited(7).is_empty());
        assert_eq!(m.state(), &State::Idle);
        assert_eq!(
            m.want(1, now()),
            (Want::Wait, vec![Action::Spawn { version: 1 }])
        );
        // an exit of some other, older instance changes nothing
        m.started(1, I(8));
        m.exited(7);
        assert_eq!(m.serving(), Some(&I(8)));
    }

    #[test]
    fn a_failed_start_is_remembered_briefly_then_retried() {
        let mut m: Machine<I> = Machine::default();
        let t0 = now();
        m.want(1, t0);
        let reason = StartError::Exited("exit code 1: boom".into());
        assert!(m.start_failed(1, reason.clone(), t0).is_empty());
        assert_eq!(
            m.want(1, t0 + Duration::from_millis(500)),
            (Want::Fail(reason.clone()), vec![])
        );
        // after the back-off, a request tries again
        assert_eq!(
            m.want(1, t0 + FAILURE_BACKOFF),
            (Want::Wait, vec![Action::Spawn { version: 1 }])
        );
        // a new version does not wait for the back-off of the old one
        m.start_failed(1, reason, t0);
        assert!(m.deployed(2).is_empty());
        assert_eq!(m.state(), &State::Idle);
        assert_eq!(
            m.want(2, t0),
            (Want::Wait, vec![Action::Spawn { version: 2 }])
        );
    }

    #[test]
    fn a_deploy_starts_the_new_version_then_drains_the_old() {
        let mut m = ready(1, 7);
        assert_eq!(m.deployed(2), vec![Action::Spawn { version: 2 }]);
        // while it starts, requests that saw the old version still go to the old
        // instance; requests for the new one wait for it
        assert_eq!(m.want(1, now()), (Want::Use(I(7)), vec![]));
        assert_eq!(m.want(2, now()), (Want::Wait, vec![]));
        assert_eq!(m.started(2, I(8)), vec![Action::Drain(I(7))]);
        assert_eq!(m.draining(), &[I(7)]);
        assert_eq!(m.want(2, now()), (Want::Use(I(8)), vec![]));
        m.drained(7);
        assert!(m.draining().is_empty());
    }

    #[test]
    fn a_request_for_a_newer_version_replaces_a_ready_instance() {
        // the directory learned of v2 before the runtime did
        let mut m = ready(1, 7);
        assert_eq!(
            m.want(2, now()),
            (Want::Wait, vec![Action::Spawn { version: 2 }])
        );
        assert!(matches!(m.state(), State::Replacing { next: 2, .. }));
    }

    #[test]
    fn a_deploy_whose_new_version_cannot_start_drains_the_old_and_fails_fast() {
        let mut m = ready(1, 7);
        m.deployed(2);
        let reason = StartError::Timeout;
        let t0 = now();
        assert_eq!(
            m.start_failed(2, reason.clone(), t0),
            vec![Action::Drain(I(7))]
        );
        assert_eq!(m.want(2, t0), (Want::Fail(reason), vec![]));
    }

    #[test]
    fn a_deploy_while_starting_starts_the_newest_once_the_first_is_up() {
        let mut m: Machine<I> = Machine::default();
        m.want(1, now());
        assert!(m.deployed(2).is_empty(), "one start at a time");
        assert!(m.deployed(3).is_empty());
        assert_eq!(m.started(1, I(7)), vec![Action::Spawn { version: 3 }]);
        assert_eq!(m.want(3, now()), (Want::Wait, vec![]));
        assert_eq!(m.started(3, I(9)), vec![Action::Drain(I(7))]);
    }

    #[test]
    fn a_request_that_saw_an_older_version_starts_the_newest() {
        let mut m: Machine<I> = Machine::default();
        m.deployed(3);
        assert_eq!(
            m.want(2, now()),
            (Want::Wait, vec![Action::Spawn { version: 3 }])
        );
    }

    #[test]
    fn a_start_that_was_superseded_is_stopped() {
        let mut m = ready(2, 7);
        assert_eq!(m.started(1, I(5)), vec![Action::Stop(I(5))]);
        assert_eq!(m.serving(), Some(&I(7)));
        assert!(m.start_failed(1, StartError::Timeout, now()).is_empty());
        assert_eq!(m.serving(), Some(&I(7)));
    }

    #[test]
    fn an_idle_instance_is_stopped_and_the_next_request_starts_one() {
        let mut m = ready(1, 7);
        assert!(m.idle(8).is_empty(), "not the serving instance");
        assert_eq!(m.idle(7), vec![Action::Stop(I(7))]);
        assert_eq!(m.state(), &State::Idle);
        assert!(m.exited(7).is_empty());
        assert_eq!(
            m.want(1, now()),
            (Want::Wait, vec![Action::Spawn { version: 1 }])
        );
    }

    #[test]
    fn a_stuck_instance_is_stopped_and_replaced() {
        let mut m = ready(1, 7);
        assert_eq!(m.unresponsive(7), vec![Action::Stop(I(7))]);
        assert_eq!(
            m.want(1, now()),
            (Want::Wait, vec![Action::Spawn { version: 1 }])
        );
        // stuck while a new version starts: the start goes on, requests wait for it
        let mut m = ready(1, 7);
        m.deployed(2);
        assert_eq!(m.unresponsive(7), vec![Action::Stop(I(7))]);
        assert_eq!(m.state(), &State::Starting { version: 2 });
        assert_eq!(m.want(1, now()), (Want::Wait, vec![]));
        // stuck while draining: stopped at once
        let mut m = ready(1, 7);
        m.deployed(2);
        m.started(2, I(8));
        assert_eq!(m.unresponsive(7), vec![Action::Stop(I(7))]);
        assert!(m.draining().is_empty());
        assert_eq!(m.serving(), Some(&I(8)));
    }

    #[test]
    fn a_crash_of_the_old_instance_while_replacing_keeps_the_start() {
        let mut m = ready(1, 7);
        m.deployed(2);
        m.exited(7);
        assert_eq!(m.state(), &State::Starting { version: 2 });
        assert!(m.started(2, I(8)).is_empty(), "nothing left to drain");
    }

    #[test]
    fn a_delete_stops_everything_and_is_final() {
        let mut m = ready(1, 7);
        m.deployed(2);
        m.started(2, I(8));
        // delete while draining: the draining and the serving instance both go
        assert_eq!(
            m.deleted(),
            vec![Action::RemoveAll {
                stop: vec![I(7), I(8)]
            }]
        );
        assert!(m.deleted().is_empty(), "once");
        assert_eq!(
            m.want(2, now()),
            (Want::Fail(StartError::Gone), vec![]),
            "a request that raced the delete does not start it again"
        );
        assert!(m.deployed(3).is_empty());
        assert!(m.is_gone());
    }

    #[test]
    fn a_delete_while_starting_stops_the_instance_when_it_arrives() {
        let mut m: Machine<I> = Machine::default();
        m.want(1, now());
        assert_eq!(m.deleted(), vec![Action::RemoveAll { stop: vec![] }]);
        // whatever the start wrote goes too
        assert_eq!(
            m.started(1, I(7)),
            vec![Action::RemoveAll { stop: vec![I(7)] }]
        );
        assert_eq!(
            m.start_failed(1, StartError::Timeout, now()),
            vec![Action::RemoveAll { stop: vec![] }]
        );
        assert!(m.is_gone());
    }
}
