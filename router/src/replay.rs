//! Sending a request again when it never reached the function: the
//! connection was refused (a pod that just stopped listening, a Service with
//! no ready endpoint for an instant) or failed before it was made. Only while
//! the caller's body has not been read, so a replay sends exactly what the
//! caller sent. A request that reached the function is never sent twice.
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

use crate::body::{BoxError, ProxyBody};
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

/// Sends `parts` + `body` through `upstream`, and again (up to
/// `upstream.unsent_retries()` times) while an attempt fails before a
/// connection was made and the body is still unread.
///
/// `&mut`: a future holding `&dyn Upstream` across an await would need the
/// upstream to be `Sync`; `&mut` needs only `Send`.
pub async fn send(
    upstream: &mut dyn Upstream,
    parts: Parts,
    body: ProxyBody,
) -> Result<http::Response<Incoming>, ClientError> {
    let retries = upstream.unsent_retries();
    if retries == 0 {
        return upstream.send(Request::from_parts(parts, body)).await;
    }
    let slot: Slot = Arc::new(Mutex::new(Some(body)));
    let mut retry = 0;
    loop {
        let attempt = Deferred {
            slot: slot.clone(),
            taken: None,
        }
        .boxed_unsync();
        let result = upstream
            .send(Request::from_parts(parts.clone(), attempt))
            .await;
        let e = match result {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        let unread = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if retry >= retries || !unread || !never_sent(&e) {
            return Err(e);
        }
        retry += 1;
        tracing::debug!(error = %e, retry, "request never reached the function: sending it again");
        tokio::time::sleep(backoff(retry)).await;
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
    }

    fn endpoints(endpoints: Vec<SocketAddr>, retries: u32) -> Endpoints {
        Endpoints {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            endpoints,
            attempts: AtomicUsize::new(0),
            retries,
        }
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
        let r = send(&mut up, parts, body).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body_of(r).await, "payload");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stop_at_the_bound() {
        let mut up = endpoints(vec![refused().await], 3);
        let (parts, body) = post();
        let e = send(&mut up, parts, body).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_request_the_function_read_is_never_sent_twice() {
        let mut up = endpoints(vec![reads_then_resets().await, echo().await], 3);
        let (parts, body) = post();
        let e = send(&mut up, parts, body).await.unwrap_err();
        assert!(!e.is_connect(), "{e:?}");
        assert_eq!(up.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_runtime_without_retries_sends_once() {
        let mut up = endpoints(vec![refused().await, echo().await], 0);
        let (parts, body) = post();
        assert!(send(&mut up, parts, body).await.unwrap_err().is_connect());
        assert_eq!(up.attempts.load(Ordering::SeqCst), 1);
    }
}
