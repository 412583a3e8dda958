//! Waking a function scaled to zero (Kubernetes, `SKIFF_K8S_WAKE_URL`).
//!
//! A function the manager scaled to zero has a Service with no ready
//! endpoint: kube-proxy refuses every connection to it. When a request
//! could not connect at all (its body unread, `replay.rs`), the router asks
//! the manager's wake endpoint (`POST <wake url>/wake/<user>/<function>`) to
//! scale it up, then keeps trying to connect until the pod answers or the
//! request's hold ends. The router never talks to the Kubernetes API: it
//! learns the pod is ready when kube-proxy stops refusing.
//!
//! Per function, a small state machine ([`Wakes`]) makes concurrent
//! requests share one call:
//!
//! - *asleep* (no entry): the next refused request calls the manager;
//! - *waking*: a call is in flight; requests arriving now wait for its answer;
//! - *woken* (until the hold ends): the manager said it is scaling up; a
//!   refused connection now is the pod still starting, not a reason to call
//!   again. When the hold ends the entry goes, so a function scaled down
//!   again later is woken again.
//!
//! A failed call leaves no entry: the next request calls again.
//!
//! The call itself is behind [`WakeCall`], so the state machine is tested
//! without HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::metrics::{Metrics, WakeOutcome};
use crate::runtime::BoxFuture;

/// The longest a call to the wake endpoint may take (the manager's own
/// patch to the API server is bounded well under this).
pub const WAKE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest wake answer read (`{"outcome":"already_up"}` is 24 bytes).
const MAX_ANSWER_BYTES: usize = 4096;

/// One call to the manager's wake endpoint.
pub trait WakeCall: Send + Sync + 'static {
    fn call<'a>(&'a self, user: &'a str, function: &'a str) -> BoxFuture<'a, WakeOutcome>;
}

/// What the manager's answer means (SPEC of the wake endpoint, in
/// docs/kubernetes.md): `200 {"outcome": …}`, `404`, `400`, `503`.
pub fn outcome_of(status: StatusCode, body: &[u8]) -> WakeOutcome {
    match status {
        StatusCode::OK => {
            let outcome = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("outcome")?.as_str().map(str::to_owned));
            match outcome.as_deref() {
                Some("scaled") => WakeOutcome::Scaled,
                Some("shared") => WakeOutcome::Shared,
                Some("already_up") => WakeOutcome::AlreadyUp,
                _ => WakeOutcome::Failed,
            }
        }
        StatusCode::NOT_FOUND => WakeOutcome::NotFound,
        _ => WakeOutcome::Failed,
    }
}

/// The wake endpoint over HTTP.
pub struct HttpWakeCall {
    client: Client<HttpConnector, ProxyBody>,
    /// `http://host:port`, without a trailing slash.
    base: String,
}

impl HttpWakeCall {
    pub fn new(base: &str) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        Self {
            // Wakes are minutes apart: a pooled connection would be one the
            // manager has closed since. A new one each time.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(http),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn post(&self, user: &str, function: &str) -> WakeOutcome {
        // Names are `[a-z0-9-]` (checked before any routing): no escaping.
        let uri = match format!("{}/wake/{user}/{function}", self.base).parse::<Uri>() {
            Ok(u) => u,
            Err(_) => return WakeOutcome::Failed,
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(http::header::CONTENT_LENGTH, "0")
            .body(crate::body::full(Bytes::new()));
        let Ok(req) = req else {
            return WakeOutcome::Failed;
        };
        let answer = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some(outcome_of(status, &body))
        };
        match tokio::time::timeout(WAKE_CALL_TIMEOUT, answer).await {
            Ok(Some(o)) => o,
            Ok(None) | Err(_) => WakeOutcome::Unreachable,
        }
    }
}

impl WakeCall for HttpWakeCall {
    fn call<'a>(&'a self, user: &'a str, function: &'a str) -> BoxFuture<'a, WakeOutcome> {
        Box::pin(self.post(user, function))
    }
}

/// The answer of a call in flight, for whoever waits on it (`None` until it
/// comes).
type Answer = watch::Receiver<Option<WakeOutcome>>;

/// One function's wake state (no entry: asleep, or never seen refusing).
enum State {
    /// A call is in flight.
    Waking(Answer),
    /// The manager woke it; refusals until `until` are the pod starting.
    Woken { until: Instant },
}

/// The per-function wake states, shared by all requests of this router.
pub struct Wakes {
    call: Arc<dyn WakeCall>,
    /// How long a request is held for a woken function; also how long a
    /// successful wake stands before a refusal calls the manager again.
    wait: Duration,
    states: Mutex<HashMap<String, State>>,
    metrics: Option<Arc<Metrics>>,
}

impl Wakes {
    pub fn new(call: Arc<dyn WakeCall>, wait: Duration, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            call,
            wait,
            states: Mutex::default(),
            metrics,
        }
    }

    /// How long a request is held for a woken function.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Makes sure `user/function` is being woken: joins the call in flight,
    /// or makes one, or (woken moments ago) returns at once. `Ok`: it is up
    /// or on its way up; `Err`: the outcome of the failed call.
    pub async fn wake(self: &Arc<Self>, user: &str, function: &str) -> Result<(), WakeOutcome> {
        let mut answer = self.join_or_start(user, function);
        let Some(answer) = answer.as_mut() else {
            return Ok(());
        };
        // The caller may give up (its hold ends): the call goes on in its
        // own task for the others.
        let outcome = match answer.wait_for(Option::is_some).await {
            Ok(v) => *v,
            // The task ended without an answer (the runtime is stopping).
            Err(_) => None,
        };
        match outcome {
            Some(o) if o.woke() => Ok(()),
            Some(o) => Err(o),
            None => Err(WakeOutcome::Unreachable),
        }
    }

    /// The answer to wait for, `None` when the function was woken already.
    fn join_or_start(self: &Arc<Self>, user: &str, function: &str) -> Option<Answer> {
        let key = format!("{user}/{function}");
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        match states.get(&key) {
            Some(State::Waking(answer)) => return Some(answer.clone()),
            Some(State::Woken { until }) if *until > now => return None,
            _ => {}
        }
        // Asleep: this request makes the call. Expired entries go now
        // (the map holds only functions woken within the last hold).
        states.retain(|_, s| !matches!(s, State::Woken { until } if *until <= now));
        let (tx, rx) = watch::channel(None);
        states.insert(key.clone(), State::Waking(rx.clone()));
        drop(states);
        let this = self.clone();
        let (user, function) = (user.to_owned(), function.to_owned());
        tokio::spawn(async move {
            let outcome = this.call.call(&user, &function).await;
            if let Some(m) = &this.metrics {
                m.wake(outcome);
            }
            {
                let mut states = this.states.lock().unwrap_or_else(PoisonError::into_inner);
                if outcome.woke() {
                    let until = Instant::now() + this.wait;
                    states.insert(key, State::Woken { until });
                } else {
                    states.remove(&key);
                }
            }
            if outcome.woke() {
                tracing::info!(%user, %function, outcome = outcome.as_str(), "woke a function scaled to zero");
            } else {
                tracing::warn!(%user, %function, outcome = outcome.as_str(), "could not wake a function scaled to zero");
            }
            let _ = tx.send(Some(outcome));
        });
        Some(rx)
    }

    /// Whether a wake of `user/function` is in flight or stands (tests).
    pub fn state_of(&self, user: &str, function: &str) -> &'static str {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        match states.get(&format!("{user}/{function}")) {
            None => "asleep",
            Some(State::Waking(_)) => "waking",
            Some(State::Woken { until }) if *until > Instant::now() => "woken",
            Some(State::Woken { .. }) => "asleep",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    /// A wake endpoint that answers `outcomes` in turn (the last repeats),
    /// each call waiting for a permit of `gate`.
    struct Fake {
        calls: AtomicUsize,
        outcomes: Vec<WakeOutcome>,
        gate: Semaphore,
    }

    impl Fake {
        fn new(outcomes: Vec<WakeOutcome>, open: bool) -> Arc<Self> {
            let gate = Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 });
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                outcomes,
                gate,
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl WakeCall for Fake {
        fn call<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, WakeOutcome> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if let Ok(p) = self.gate.acquire().await {
                    p.forget();
                }
                self.outcomes[n.min(self.outcomes.len() - 1)]
            })
        }
    }

    fn wakes(fake: &Arc<Fake>, wait: Duration) -> Arc<Wakes> {
        let metrics = Arc::new(Metrics::new(true, 10));
        Arc::new(Wakes::new(fake.clone(), wait, Some(metrics)))
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_call() {
        let fake = Fake::new(vec![WakeOutcome::Scaled], false);
        let w = wakes(&fake, Duration::from_secs(30));
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let w = w.clone();
            waiters.push(tokio::spawn(async move { w.wake("alice", "hello").await }));
        }
        // Every waiter is in before the call answers.
        while fake.calls() == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(w.state_of("alice", "hello"), "waking");
        fake.gate.add_permits(1);
        for t in waiters {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(fake.calls(), 1);
        assert_eq!(w.state_of("alice", "hello"), "woken");
        // Woken: a request refused while the pod starts does not call again.
        assert_eq!(w.wake("alice", "hello").await, Ok(()));
        assert_eq!(fake.calls(), 1);
        // Another function is another call.
        fake.gate.add_permits(1);
        assert_eq!(w.wake("alice", "other").await, Ok(()));
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn a_failed_wake_lets_the_next_request_try_again() {
        let fake = Fake::new(
            vec![
                WakeOutcome::Failed,
                WakeOutcome::Unreachable,
                WakeOutcome::AlreadyUp,
            ],
            true,
        );
        let w = wakes(&fake, Duration::from_secs(30));
        assert_eq!(w.wake("alice", "hello").await, Err(WakeOutcome::Failed));
        assert_eq!(w.state_of("alice", "hello"), "asleep");
        assert_eq!(
            w.wake("alice", "hello").await,
            Err(WakeOutcome::Unreachable)
        );
        assert_eq!(w.wake("alice", "hello").await, Ok(()));
        assert_eq!(fake.calls(), 3);
        let text = w.metrics.as_ref().unwrap().render();
        for o in ["failed", "unreachable", "already_up"] {
            assert!(
                text.contains(&format!("skiff_wakes_total{{outcome=\"{o}\"}} 1")),
                "{text}"
            );
        }
        assert!(text.contains("skiff_wakes_total{outcome=\"scaled\"} 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_stands_for_the_hold_then_the_function_is_asleep_again() {
        let fake = Fake::new(vec![WakeOutcome::Scaled], true);
        let w = wakes(&fake, Duration::from_secs(5));
        assert_eq!(w.wake("alice", "hello").await, Ok(()));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(w.wake("alice", "hello").await, Ok(()));
        assert_eq!(fake.calls(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(w.state_of("alice", "hello"), "asleep");
        assert_eq!(w.wake("alice", "hello").await, Ok(()));
        assert_eq!(fake.calls(), 2, "scaled down again since: called again");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_call_to_the_others() {
        let fake = Fake::new(vec![WakeOutcome::Shared], false);
        let w = wakes(&fake, Duration::from_secs(30));
        let first = tokio::time::timeout(Duration::from_millis(20), w.wake("alice", "hello")).await;
        assert!(first.is_err(), "held until the call answers");
        let w2 = w.clone();
        let second = tokio::spawn(async move { w2.wake("alice", "hello").await });
        fake.gate.add_permits(1);
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(fake.calls(), 1);
    }

    #[test]
    fn the_managers_answers_map_to_outcomes() {
        let ok = StatusCode::OK;
        assert_eq!(
            outcome_of(ok, br#"{"outcome":"scaled"}"#),
            WakeOutcome::Scaled
        );
        assert_eq!(
            outcome_of(ok, br#"{"outcome":"shared"}"#),
            WakeOutcome::Shared
        );
        assert_eq!(
            outcome_of(ok, br#"{"outcome":"already_up"}"#),
            WakeOutcome::AlreadyUp
        );
        assert_eq!(
            outcome_of(ok, br#"{"outcome":"maybe"}"#),
            WakeOutcome::Failed
        );
        assert_eq!(outcome_of(ok, b"not json"), WakeOutcome::Failed);
        let err = br#"{"error":{"code":"x","message":"y"}}"#;
        assert_eq!(
            outcome_of(StatusCode::NOT_FOUND, err),
            WakeOutcome::NotFound
        );
        assert_eq!(
            outcome_of(StatusCode::SERVICE_UNAVAILABLE, err),
            WakeOutcome::Failed
        );
        assert_eq!(
            outcome_of(StatusCode::BAD_REQUEST, err),
            WakeOutcome::Failed
        );
        for o in WakeOutcome::ALL {
            assert_eq!(
                o.woke(),
                matches!(o.as_str(), "scaled" | "shared" | "already_up")
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let call = HttpWakeCall::new(&format!("http://{addr}/"));
        assert_eq!(call.call("alice", "hello").await, WakeOutcome::Unreachable);
    }
}
