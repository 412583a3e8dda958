//! The router's error boundary: each failure has the status the README's API
//! section gives it and a JSON body `{"error":{"code","message"}}`. Messages
//! never carry a function's internals (its stderr goes to its owner's log, not
//! to the public caller).

use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{ProxyBody, json};
use crate::metrics::{Refusal, WakeOutcome};

/// `Retry-After` of a request held for a function waking from zero that did
/// not come up in time: it is probably about to.
pub const WAKING_RETRY_AFTER_SECS: u64 = 2;
/// `Retry-After` when the function could not be woken (the manager or the
/// cluster failing): give it longer.
pub const WAKE_FAILED_RETRY_AFTER_SECS: u64 = 10;

/// Why an instance could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("the function's instance exited while starting ({0})")]
    Exited(String),
    #[error("the function's instance did not become ready in time")]
    Timeout,
    #[error("the function no longer exists")]
    Gone,
    #[error("could not start an instance: {0}")]
    Host(String),
    /// The user runs as many instances as its quota allows, none of them idle.
    #[error("quota exceeded: running instances per user is {0}")]
    Quota(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("no such function")]
    NotFound,
    /// The caller's request is malformed (a bad body, conflicting Host headers).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The caller stopped sending its request body.
    #[error("the request body stalled: nothing arrived for {} s", .0.as_secs())]
    BodyTimeout(Duration),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the function is at its concurrency limit; retry shortly")]
    Busy,
    /// One client address already holds its share of the function's concurrency.
    #[error("this client already has {0} requests in flight to this function; retry shortly")]
    ClientBusy(usize),
    /// The function's owner is over their requests per second; retry after
    /// this many seconds.
    #[error("this user's functions are over their request rate; retry after {0} s")]
    RateLimited(u64),
    #[error("the function could not be started")]
    StartFailed(#[source] StartError),
    #[error("the function did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the function's instance failed or answered something that is not HTTP")]
    BadGateway,
    #[error("quota exceeded: running instances per user is {0}")]
    InstanceQuota(u64),
    /// The function was scaled to zero and woken, and did not come up while
    /// the request was held.
    #[error("the function is starting after being scaled to zero; retry shortly")]
    Waking,
    /// The function is scaled to zero and the wake failed (the manager's
    /// answer, for the log and metrics; not shown).
    #[error("the function is scaled to zero and could not be started")]
    WakeFailed(WakeOutcome),
}

impl RouterError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy | Self::ClientBusy(_) | Self::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::StartFailed(_) | Self::Waking | Self::WakeFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::InstanceQuota(_) => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::BodyTimeout(_) => "request_timeout",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Busy => "too_many_requests",
            Self::ClientBusy(_) | Self::RateLimited(_) => "rate_limited",
            Self::StartFailed(_) | Self::WakeFailed(_) => "function_unavailable",
            Self::Waking => "function_waking",
            Self::Timeout(_) => "function_timeout",
            Self::BadGateway => "bad_gateway",
            Self::InstanceQuota(_) => "quota_exceeded",
        }
    }
}

impl RouterError {
    /// What the metrics call this answer to a request for a known function.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            Self::NotFound => return None,
            Self::BadRequest(_) => Refusal::BadRequest,
            Self::BodyTimeout(_) => Refusal::BodyTimeout,
            Self::PayloadTooLarge(_) => Refusal::BodyTooLarge,
            Self::Busy => Refusal::QueueFull,
            Self::ClientBusy(_) => Refusal::ClientShare,
            Self::RateLimited(_) => Refusal::RateLimited,
            Self::StartFailed(_) => Refusal::StartFailed,
            Self::Timeout(_) => Refusal::Timeout,
            Self::BadGateway => Refusal::BadGateway,
            Self::InstanceQuota(_) => Refusal::InstanceQuota,
            Self::Waking | Self::WakeFailed(_) => Refusal::Waking,
        })
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        if let RouterError::RateLimited(secs) = self {
            return rate_limited(secs);
        }
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut r = json(self.status(), body.to_string());
        let retry_after = match self {
            RouterError::Busy | RouterError::ClientBusy(_) => Some(1),
            RouterError::Waking => Some(WAKING_RETRY_AFTER_SECS),
            RouterError::WakeFailed(_) => Some(WAKE_FAILED_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// The 429 of a user over their rate. A flood of these is the expected case,
/// so the body is a constant (no formatting, no JSON building).
fn rate_limited(retry_after_secs: u64) -> Response<ProxyBody> {
    const BODY: &str = r#"{"error":{"code":"rate_limited","message":"this user's functions are over their request rate; retry after the Retry-After delay"}}"#;
    let mut r = Response::new(crate::body::full(BODY));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

impl From<StartError> for RouterError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Gone => Self::NotFound,
            StartError::Quota(n) => Self::InstanceQuota(n),
            e => Self::StartFailed(e),
        }
    }
}
