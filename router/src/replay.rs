//! Sending a request again when it never reached the function: the
//! connection was refused (a pod that just stopped listening, a Service with
//! no ready endpoint for an instant) or failed before it was made. Only while
//! the caller's body has not been read, so a replay sends exactly what the
//! caller sent. A request that reached the function is never sent twice.
//!
//! A function scaled to zero refuses every connection: with a wake path
//! (`Upstream::wake`), the request is then held while it is woken.
//!
//! A pooled connection the function closed before the request was written is
//! retried by hyper's client itself (`retry_canceled_requests`, on by default).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Error as ClientError;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};
use crate::metrics::WakeOutcome;
use crate::runtime::Upstream;

/// Pause before attempt n (1-based retries): short, the next endpoint is
/// usually there at once; the request's own timeout bounds the whole.
fn backoff(retry: u32) -> Duration {
    Duration::from_millis(25 * u64::from(retry))
}

/// The caller's body, left in place until the upstream first reads it.
type Slot = Arc<Mutex<Option<ProxyBody>>>;

/// What an attempt sends: it takes the caller's body from the shared slot on
/// its first read. If the attempt fails before that, the body is still in
/// the slot for the next one.
struct Deferred {
    slot: Slot,
    taken: Option<ProxyBody>,
}

impl Deferred {
    fn with_slot<R>(&self, f: impl FnOnce(Option<&ProxyBody>) -> R) -> R {
        let guard = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.as_ref())
    }
}

impl Body for Deferred {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        match this.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            // Another attempt took it: cannot happen (attempts run in turn).
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.with_slot(|b| b.is_none_or(Body::is_end_stream)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.with_slot(|b| b.map_or_else(|| SizeHint::with_exact(0), Body::size_hint)),
        }
    }
}

/// Whether `e` says the request never left the router: no connection was
/// made, so no byte of it reached the function.
fn never_sent(e: &ClientError) -> bool {
    e.is_connect()
}

/// Pause before attempt n (1-based) at a woken function: 100 ms doubling to
/// 1 s. The pod's start takes about half a second at best (see
/// docs/kubernetes.md), its readiness probe and the endpoint update more.
fn wake_backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(4));
    Duration::from_millis(ms.min(1000))
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// The exchange failed (or never started, with nothing to wake).
    Client(ClientError),
    /// The function is scaled to zero: the wake failed (`Some`, the
    /// manager's answer), or it did not come up while the request was held
    /// (`None`). The request never reached the function.
    Asleep(Option<WakeOutcome>),
}

impl SendError {
    /// The client error, if this is one.
    pub fn client(&self) -> Option<&ClientError> {
        match self {
            Self::Client(e) => Some(e),
            Self::Asleep(_) => None,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => e.fmt(f),
            Self::Asleep(Some(o)) => write!(f, "the function could not be woken ({})", o.as_str()),
            Self::Asleep(None) => f.write_str("the woken function did not come up in time"),
        }
    }
}

/// Sends `parts` + `body` through `upstream`, and again (up to
/// `upstream.unsent_retries()` times) while an attempt fails before a
/// connection was made and the body is still unread.
///
/// When those retries are spent too and the upstream can wake its function
/// (`Upstream::wake`: Kubernetes, a function that may be at zero), it wakes
/// it and keeps trying, with a growing pause, for the wake's hold, never at
/// or past `deadline` (the request's timeout).
///
/// `woken` is set, when the function was woken for this request, to how
/// long the request waited for it (from its first attempt to the one that
/// got through): a cold start.
///
/// `&mut`: a future holding `&dyn Upstream` across an await would need the
/// upstream to be `Sync`; `&mut` needs only `Send`.
pub async fn send(
    upstream: &mut dyn Upstream,
    parts: Parts,
    body: ProxyBody,
    deadline: Instant,
    woken: &mut Option<Duration>,
) -> Result<http::Response<Incoming>, SendError> {
    let retries = upstream.unsent_retries();
    if retries == 0 {
        return upstream
            .send(Request::from_parts(parts, body))
            .await
            .map_err(SendError::Client);
    }
    let slot: Slot = Arc::new(Mutex::new(Some(body)));
    let mut retry = 0;
    let first = Instant::now();
    // Once woken: the end of the hold, and the attempts since the wake.
    let mut hold: Option<(Instant, u32)> = None;
    loop {
        let attempt = Deferred {
            slot: slot.clone(),
            taken: None,
        }
        .boxed_unsync();
        let started = Instant::now();
        let result = upstream
            .send(Request::from_parts(parts.clone(), attempt))
            .await;
        let e = match result {
            Ok(r) => {
                if hold.is_some() {
                    *woken = Some(started.duration_since(first));
                }
                return Ok(r);
            }
            Err(e) => e,
        };
        let unread = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !unread || !never_sent(&e) {
            return Err(SendError::Client(e));
        }
        if retry < retries {
            retry += 1;
            tracing::debug!(error = %e, retry, "request never reached the function: sending it again");
            tokio::time::sleep(backoff(retry)).await;
            continue;
        }
        // No endpoint takes connections: the function may be at zero.
        let (until, attempts) = match hold {
            Some(w) => w,
            None => {
                let Some(wake) = upstream.wake() else {
                    return Err(SendError::Client(e));
                };
                let until = deadline.min(Instant::now() + wake.wait);
                tracing::debug!(error = %e, "no endpoint takes connections: waking the function");
                match tokio::time::timeout_at(until, wake.call).await {
                    Err(_) => return Err(SendError::Asleep(None)),
                    Ok(Err(outcome)) => return Err(SendError::Asleep(Some(outcome))),
                    // Up or starting: try at once (it may have been up).
                    Ok(Ok(())) => {
                        hold = Some((until, 0));
                        continue;
                    }
                }
            }
        };
        // Never an attempt at or past the end of the hold: one started at
        // the request's deadline would end as its timeout, not as this.
        let attempts = attempts + 1;
        hold = Some((until, attempts));
        let next = Instant::now() + wake_backoff(attempts);
        if next >= until {
            tokio::time::sleep_until(until).await;
            return Err(SendError::Asleep(None));
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::uri::Authority;
    use http::{Method, Response};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::{Client, ResponseFuture};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::body::full;

    /// Stands in for a Service behind kube-proxy: each attempt goes to the
    /// next endpoint in `endpoints` (the last one repeats).
    struct Endpoints {
        client: Client<HttpConnector, ProxyBody>,
        endpoints: Vec<SocketAddr>,
        attempts: AtomicUsize,
        retries: u32,
        /// What a wake answers and how long a request is held for it.
        wake: Option<(Result<(), WakeOutcome>, Duration)>,
        wakes: Arc<AtomicUsize>,
    }

    impl Upstream for Endpoints {
        fn authority(&self) -> Authority {
            Authority::from_static("fn.skiff-functions.svc:80")
        }
        fn send(&self, mut req: Request<ProxyBody>) -> ResponseFuture {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            let at = self.endpoints[n.min(self.endpoints.len() - 1)];
            *req.uri_mut() = format!("http://{at}{}", req.uri().path()).parse().unwrap();
            self.client.request(req)
        }
        fn unsent_retries(&self) -> u32 {
            self.retries
        }
        fn wake(&self) -> Option<crate::runtime::Wake> {
            let (answer, wait) = self.wake?;
            let wakes = self.wakes.clone();
            Some(crate::runtime::Wake {
                call: Box::pin(async move {
                    wakes.fetch_add(1, Ordering::SeqCst);
                    answer
                }),
                wait,
            })
        }
    }

    fn endpoints(endpoints: Vec<SocketAddr>, retries: u32) -> Endpoints {
        Endpoints {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            endpoints,
            attempts: AtomicUsize::new(0),
            retries,
            wake: None,
            wakes: Arc::default(),
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// A port nothing listens on: connecting is refused.
    async fn refused() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// Answers each request with the body it received.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(Response::new(full(body)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// Reads the request's head and body, then drops the connection without
    /// an answer: the function got the request.
    async fn reads_then_resets() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.ends_with(b"payload") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                drop(tcp);
            }
        });
        addr
    }

    fn post() -> (Parts, ProxyBody) {
        let (parts, ()) = Request::builder()
            .method(Method::POST)
            .uri("http://fn.skiff-functions.svc:80/echo")
            .header("content-length", "7")
            .body(())
            .unwrap()
            .into_parts();
        (parts, full("payload"))
    }

    async fn body_of(r: http::Response<Incoming>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_refused_connection_is_sent_again_with_the_whole_body() {
        let mut up = endpoints(vec![refused().await, refused().await, echo().await], 3);
        let (parts, body) = post();
        let mut woken = None;
        let r = send(&mut up, parts, body, far(), &mut woken).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body_of(r).await, "payload");
        assert_eq!(woken, None, "nothing was woken");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stop_at_the_bound() {
        let mut up = endpoints(vec![refused().await], 3);
        let (parts, body) = post();
        let e = send(&mut up, parts, body, far(), &mut None)
            .await
            .unwrap_err();
        assert!(e.client().is_some_and(ClientError::is_connect), "{e:?}");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_request_the_function_read_is_never_sent_twice() {
        let mut up = endpoints(vec![reads_then_resets().await, echo().await], 3);
        let (parts, body) = post();
        let e = send(&mut up, parts, body, far(), &mut None)
            .await
            .unwrap_err();
        assert!(e.client().is_some_and(|e| !e.is_connect()), "{e:?}");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_runtime_without_retries_sends_once() {
        let mut up = endpoints(vec![refused().await, echo().await], 0);
        let (parts, body) = post();
        let e = send(&mut up, parts, body, far(), &mut None)
            .await
            .unwrap_err();
        assert!(e.client().is_some_and(ClientError::is_connect));
        assert_eq!(up.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_sleeping_function_is_woken_once_and_gets_the_whole_body() {
        // Refused through the retries and the first attempts after the wake
        // (the pod starting), then up.
        let mut list = vec![refused().await; 6];
        list.push(echo().await);
        let mut up = endpoints(list, 3);
        up.wake = Some((Ok(()), Duration::from_secs(30)));
        let (parts, body) = post();
        let mut woken = None;
        let r = send(&mut up, parts, body, far(), &mut woken).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body_of(r).await, "payload");
        assert!(woken.is_some(), "the wait is a cold start");
        assert_eq!(up.wakes.load(Ordering::SeqCst), 1);
        assert_eq!(up.attempts.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn a_failed_wake_ends_the_request_without_more_attempts() {
        let mut up = endpoints(vec![refused().await], 1);
        up.wake = Some((Err(WakeOutcome::Failed), Duration::from_secs(30)));
        let (parts, body) = post();
        let e = send(&mut up, parts, body, far(), &mut None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, SendError::Asleep(Some(WakeOutcome::Failed))),
            "{e:?}"
        );
        assert_eq!(up.attempts.load(Ordering::SeqCst), 2);
        assert_eq!(up.wakes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_woken_function_that_never_comes_up_ends_with_the_hold_or_the_deadline() {
        for (wait, deadline) in [
            (Duration::from_millis(300), far()),
            (
                Duration::from_secs(30),
                Instant::now() + Duration::from_millis(300),
            ),
        ] {
            let mut up = endpoints(vec![refused().await], 1);
            up.wake = Some((Ok(()), wait));
            let (parts, body) = post();
            let e = send(&mut up, parts, body, deadline, &mut None)
                .await
                .unwrap_err();
            assert!(matches!(e, SendError::Asleep(None)), "{e:?}");
            assert_eq!(up.wakes.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn the_pause_at_a_woken_function_grows_to_a_second() {
        let ms: Vec<u128> = (1..=7).map(|n| wake_backoff(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
