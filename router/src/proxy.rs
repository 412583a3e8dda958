//! The request path: `/fn/<user>/<name>[/<rest>]` → the function's instance as
//! `<METHOD> /<rest>?<query>`, bodies streamed both ways, hop-by-hop headers
//! removed, forwarding headers rewritten (`forwarding.rs`). A WebSocket
//! upgrade keeps its `Connection`/`Upgrade` headers; when the instance
//! switches protocols both connections are handed to a tunnel (`tunnel.rs`).
//! Nothing here touches the database.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use skiff_core::names::{is_function_name, is_user_name};

use crate::access_log;
use crate::body::{BoxError, ProxyBody, json};
use crate::client_body::{ClientBody, ClientBodyError};
use crate::directory::FunctionRef;
use crate::error::RouterError;
use crate::forwarding::{self, Peer};
use crate::limits::{Admission, client_key};
use crate::metrics::{InFlight, Outcome, Refusal};
use crate::replay::SendError;
use crate::runtime::Upstream;
use crate::state::RouterState;
use crate::tunnel;

/// Splits `/fn/<user>/<name>[/<rest>]` into its parts; `None` for any other path
/// or for names that break the naming rules (no decoding: `%2F` or `..` in a
/// name is simply not a valid name).
pub fn parse_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/fn/")?;
    let (user, rest) = rest.split_once('/')?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (is_user_name(user) && is_function_name(name)).then_some((user, name, tail))
}

// Names as constants: a `&str` name would be parsed and hashed again on every
// request (callgrind: ~5,000 instructions per request before this).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names
/// (except `Host`: a caller listing it must not leave the function without one).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| *n != HOST)
            .collect();
        for h in listed {
            headers.remove(h);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// What a request holds while it is served: the instance lease, the
/// concurrency permit and its place among the function's requests in flight.
type Held = (Box<dyn Upstream>, Admission, Option<InFlight>);

/// A response body that keeps what the request holds until the last byte
/// has gone out, and counts the bytes.
struct Guarded {
    inner: Incoming,
    held: Held,
    sent: u64,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(g) = &self.held.2 {
            g.function().add_bytes_out(self.sent);
        }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.sent += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, any request
/// at most one. Two could name different hosts to the router and the function.
fn check_host(req: &Request<Incoming>) -> Result<(), RouterError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(RouterError::BadRequest("more than one Host header")),
        (None, _) if req.version() == http::Version::HTTP_11 => Err(RouterError::BadRequest(
            "an HTTP/1.1 request needs a Host header",
        )),
        _ => Ok(()),
    }
}

/// Whether a response status may be passed on. A `101 Switching Protocols`
/// needs a caller that asked to switch (a WebSocket upgrade); any other 101
/// is the function's own doing and would hand the caller's connection to it
/// unframed.
fn status_allowed(status: StatusCode, asked_upgrade: bool) -> bool {
    status != StatusCode::SWITCHING_PROTOCOLS || asked_upgrade
}

const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// Whether `headers` has `token` in a comma-separated `name` header.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 GET with
/// `Connection: upgrade` and `Upgrade: websocket`. The only upgrade passed on
/// (the router follows its frames); any other `Upgrade` is stripped as before.
fn asks_websocket<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.method() == http::Method::GET
        && has_token(req.headers(), CONNECTION, "upgrade")
        && has_token(req.headers(), UPGRADE, "websocket")
}

/// The upgrade headers stripped as hop-by-hop, put back for the next hop.
fn keep_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, UPGRADE_TOKEN);
    headers.insert(UPGRADE, WEBSOCKET);
}

/// The instance switched protocols: the caller gets the 101 (with the
/// handshake's end-to-end headers, e.g. `Sec-WebSocket-Accept`), and once
/// both sides have upgraded a task copies between them, holding the instance
/// lease and the concurrency slot for the connection's whole life.
fn switch_protocols(
    state: &RouterState,
    caller: OnUpgrade,
    mut resp: Response<Incoming>,
    held: Held,
) -> Result<Response<ProxyBody>, RouterError> {
    if !has_token(resp.headers(), UPGRADE, "websocket") {
        return Err(RouterError::BadGateway);
    }
    let instance = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    keep_upgrade(&mut parts.headers);
    let limits = state.tunnel_limits;
    let going_away = held.0.going_away();
    tokio::spawn(async move {
        let (caller, instance) = match tokio::join!(caller, instance) {
            (Ok(c), Ok(i)) => (TokioIo::new(c), TokioIo::new(i)),
            (c, i) => {
                tracing::debug!(
                    caller_ok = c.is_ok(),
                    instance_ok = i.is_ok(),
                    "an upgrade did not complete"
                );
                return;
            }
        };
        tunnel::run(caller, instance, limits, going_away).await;
        drop(held);
    });
    Ok(Response::from_parts(parts, crate::body::full("")))
}

/// How long a refusal for being over the user's rate is held (see `route`):
/// 40, 45, 50, 55 or 60 ms, taken in turn. A flooder's connections refused
/// together come back in five batches instead of one: each batch is a fifth
/// of the burst that other tenants' requests queue behind on the router's
/// worker, and its answers still go out together. (Holds spread evenly over
/// 25–75 ms were tried: each answer then woke the client's threads alone, and
/// on a 2-vCPU VM those cross-CPU wake-ups, `kvm_kick_cpu`, took 62 % of the
/// router's samples; B's p99 under the flood went from 7.5 to 39–78 ms.)
fn rate_limited_hold() -> Duration {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 5;
    Duration::from_millis(40 + 5 * u64::from(slot))
}

/// What `route` learned of a request, for its metrics, its `Server-Timing`
/// and its access-log line.
#[derive(Default)]
struct Seen {
    function: Option<Arc<FunctionRef>>,
    /// The path and query the function sees (access log only; a clone of
    /// what is forwarded, which shares its bytes).
    path: Option<PathAndQuery>,
    /// The wait for an instance start, when this request paid one.
    cold: Option<Duration>,
    /// From forwarding the request to the function's response head.
    upstream: Option<Duration>,
}

pub async fn handle(
    state: Arc<RouterState>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrived = Instant::now();
    let has_body = req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let method = state.access_log.is_some().then(|| req.method().clone());
    let mut seen = Seen::default();
    let routed = route(&state, &peer, req, &mut seen).await;
    let refusal = routed.as_ref().err().and_then(RouterError::refusal);
    let mut resp = routed.unwrap_or_else(|e| {
        let mut r = e.into_response();
        // Answered before the body was read: say the connection ends, so a
        // client or proxy does not send its next request into a closed socket.
        if has_body {
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        r
    });
    match seen.function.take() {
        Some(f) => observe(&state, &f, &mut seen, &mut resp, arrived, refusal, method),
        None if resp.status() == StatusCode::NOT_FOUND && state.metrics.enabled() => {
            state.metrics.unmatched()
        }
        None => {}
    }
    Ok(resp)
}

/// Counts an answered request of function `f`, adds its `Server-Timing`,
/// and hands its access-log line to the writer.
fn observe(
    state: &RouterState,
    f: &FunctionRef,
    seen: &mut Seen,
    resp: &mut Response<ProxyBody>,
    arrived: Instant,
    refusal: Option<Refusal>,
    method: Option<http::Method>,
) {
    let elapsed = arrived.elapsed();
    if state.server_timing
        && let Some(v) = server_timing(seen.cold, seen.upstream)
    {
        // Appended: a Server-Timing the function set stays.
        resp.headers_mut().append(SERVER_TIMING, v);
    }
    if !state.metrics.enabled() {
        return;
    }
    let status = resp.status().as_u16();
    f.metrics(&state.metrics).answered(Outcome {
        status,
        elapsed,
        cold: seen.cold,
        refusal,
    });
    if let Some(c) = seen.cold {
        state.metrics.cold_start(c);
    }
    // Not for a refusal over the owner's request rate: a flood of those would
    // rotate the function's own output out of its log (they are counted).
    if refusal == Some(Refusal::RateLimited) {
        return;
    }
    if let (Some(log), Some(method), Some(path)) = (&state.access_log, method, seen.path.take()) {
        log.record(access_log::Entry {
            function_id: f.function_id,
            at_millis: skiff_core::time::now_millis(),
            method,
            path,
            status,
            elapsed,
            cold: seen.cold.is_some(),
        });
    }
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `cold;dur=<ms>` when the request waited for a start, `fn;dur=<ms>` for
/// the function's time to its response head.
fn server_timing(cold: Option<Duration>, upstream: Option<Duration>) -> Option<HeaderValue> {
    let mut text = String::with_capacity(32);
    if let Some(c) = cold {
        text.push_str("cold;dur=");
        access_log::push_millis(&mut text, c);
    }
    if let Some(u) = upstream {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str("fn;dur=");
        access_log::push_millis(&mut text, u);
    }
    if text.is_empty() {
        return None;
    }
    HeaderValue::try_from(text).ok()
}

async fn route(
    state: &RouterState,
    peer: &Peer,
    req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<ProxyBody>, RouterError> {
    let (function, tail_and_query) = {
        let uri = req.uri();
        let path = uri.path();
        if path == "/healthz" {
            return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()));
        }
        let (user, name, tail) = parse_path(path).ok_or(RouterError::NotFound)?;
        let function = state
            .directory
            .lookup(user, name)
            .ok_or(RouterError::NotFound)?;
        seen.function = Some(function.clone());
        // First, so a user flooding past their rate costs the least possible.
        if let Err(retry_after) = state.user_rate.check(&function.user) {
            // A closed-loop flooder sends its next request as soon as it has
            // the answer: holding the refusal briefly bounds its request rate
            // by its connections, not by how fast the router can say no.
            tokio::time::sleep(rate_limited_hold()).await;
            return Err(RouterError::RateLimited(retry_after));
        }
        let tail_and_query = match uri.query() {
            Some(q) => PathAndQuery::try_from([tail, "?", q].concat()),
            None => PathAndQuery::try_from(tail),
        }
        .map_err(|_| RouterError::NotFound)?;
        if state.access_log.is_some() {
            seen.path = Some(tail_and_query.clone());
        }
        (function, tail_and_query)
    };
    check_host(&req)?;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(RouterError::PayloadTooLarge(state.max_body_bytes));
    }
    let client = peer.client_ip(req.headers(), &state.trusted_proxies);
    // The live version's own timeout and concurrency (or the defaults).
    let settings = state.defaults.effective(&function.settings);
    let admission = state
        .limits
        .acquire(
            function.function_id,
            settings.concurrency,
            client_key(client),
        )
        .await?;
    let in_flight = state
        .metrics
        .enabled()
        .then(|| function.metrics(&state.metrics).in_flight());
    let mut req = req;
    let caller_upgrade = asks_websocket(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if caller_upgrade.is_some() {
        keep_upgrade(&mut parts.headers);
    }
    forwarding::rewrite(&mut parts.headers, &parts.uri, peer, client);
    let body = ClientBody::new(body, state.max_body_bytes, state.body_read_timeout)
        .counting(in_flight.as_ref().map(|g| g.function().clone()))
        .boxed_unsync();

    let mut upstream = state.runtime.upstream(&function).await?;
    seen.cold = upstream.cold_start();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(upstream.authority());
    uri.path_and_query = Some(tail_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| RouterError::NotFound)?;
    parts.version = http::Version::HTTP_11;
    let forwarded = Instant::now();
    let deadline = tokio::time::Instant::from_std(forwarded) + settings.timeout;
    // Sent again, within the timeout, if it never reached the function (and
    // held while it wakes, if it is scaled to zero: `replay.rs`).
    let mut woken = None;
    let sent = crate::replay::send(upstream.as_mut(), parts, body, deadline, &mut woken);
    let answer = tokio::time::timeout_at(deadline, sent).await;
    seen.upstream = Some(forwarded.elapsed());
    // A function woken from zero for this request: its wait was a cold start.
    if woken.is_some() {
        seen.cold = woken;
    }
    let resp = match answer {
        Err(_) => {
            upstream.timed_out();
            return Err(RouterError::Timeout(settings.timeout));
        }
        Ok(Err(SendError::Asleep(None))) => return Err(RouterError::Waking),
        Ok(Err(SendError::Asleep(Some(outcome)))) => {
            return Err(RouterError::WakeFailed(outcome));
        }
        Ok(Err(SendError::Client(e))) => {
            // The caller's body failed: its fault, not the instance's.
            if let Some(client_error) = ClientBodyError::find(&e) {
                return Err(client_error.to_router_error());
            }
            tracing::debug!(user = %function.user, function = %function.name, error = %e, "upstream failed");
            upstream.failed(&e).await;
            return Err(RouterError::BadGateway);
        }
        Ok(Ok(r)) => r,
    };
    if !status_allowed(resp.status(), caller_upgrade.is_some()) {
        tracing::debug!(user = %function.user, function = %function.name, status = %resp.status(), "unsolicited status from the function");
        return Err(RouterError::BadGateway);
    }
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(caller)) = (resp.status(), caller_upgrade) {
        return switch_protocols(state, caller, resp, (upstream, admission, in_flight));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Guarded {
        inner: body,
        held: (upstream, admission, in_flight),
        sent: 0,
    }
    .map_err(|e| -> BoxError { Box::new(e) })
    .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_only_for_valid_names() {
        assert_eq!(parse_path("/fn/alice/hello"), Some(("alice", "hello", "/")));
        assert_eq!(
            parse_path("/fn/alice/hello/"),
            Some(("alice", "hello", "/"))
        );
        assert_eq!(
            parse_path("/fn/alice/hello/a/b%2F"),
            Some(("alice", "hello", "/a/b%2F"))
        );
        for bad in [
            "/fn/alice",
            "/fn/alice/",
            "/fn/../bob/x",
            "/fn/a%2Fb/x",
            "/fn/alice/..%2Fbob",
            "/fn//hello",
            "/fn/Alice/hello",
            "/x/alice/hello",
            "/fn/alice/%2e%2e",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_including_listed_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
        // `Connection: host` does not take the Host header away
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("host, x-a"));
        h.insert("host", HeaderValue::from_static("h"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["host"], "h");
    }

    #[test]
    fn only_websocket_upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, CONNECTION, "upgrade"));
        assert!(!has_token(&h, CONNECTION, "close"));
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        assert!(has_token(&h, UPGRADE, "websocket"));
        strip_hop_by_hop(&mut h);
        keep_upgrade(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k", "end to end, kept");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn only_an_http11_get_asking_for_websocket_is_an_upgrade() {
        let ask = |method: &str, version, upgrade: &str, connection: &str| {
            let req = Request::builder()
                .method(method)
                .version(version)
                .header("upgrade", upgrade)
                .header("connection", connection)
                .body(())
                .unwrap();
            asks_websocket(&req)
        };
        use http::Version;
        assert!(ask("GET", Version::HTTP_11, "websocket", "Upgrade"));
        assert!(ask(
            "GET",
            Version::HTTP_11,
            "WebSocket",
            "keep-alive, upgrade"
        ));
        assert!(!ask("POST", Version::HTTP_11, "websocket", "upgrade"));
        assert!(!ask("GET", Version::HTTP_10, "websocket", "upgrade"));
        assert!(!ask("GET", Version::HTTP_2, "websocket", "upgrade"));
        assert!(!ask("GET", Version::HTTP_11, "h2c", "upgrade"));
        assert!(!ask("GET", Version::HTTP_11, "websocket", "keep-alive"));
    }

    #[test]
    fn refusals_are_held_in_five_batches_around_50_ms() {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..1000 {
            *seen.entry(rate_limited_hold().as_millis()).or_insert(0) += 1;
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            [40, 45, 50, 55, 60]
        );
        // Taken in turn: each batch gets a fifth.
        assert!(seen.values().all(|&n| (190..=210).contains(&n)), "{seen:?}");
    }

    #[test]
    fn server_timing_names_the_cold_start_and_the_function() {
        let ms = Duration::from_millis;
        let v = |c, u| server_timing(c, u).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(v(None, None), None);
        assert_eq!(v(None, Some(ms(3))).as_deref(), Some("fn;dur=3.0"));
        assert_eq!(
            v(Some(ms(40)), Some(Duration::from_micros(1250))).as_deref(),
            Some("cold;dur=40.0, fn;dur=1.3")
        );
        assert_eq!(v(Some(ms(7)), None).as_deref(), Some("cold;dur=7.0"));
    }

    #[test]
    fn only_a_solicited_101_passes() {
        assert!(!status_allowed(StatusCode::SWITCHING_PROTOCOLS, false));
        assert!(status_allowed(StatusCode::SWITCHING_PROTOCOLS, true));
        assert!(status_allowed(StatusCode::OK, false));
        assert!(status_allowed(StatusCode::BAD_GATEWAY, false));
    }
}
