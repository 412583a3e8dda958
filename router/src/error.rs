//! The router's error boundary: each failure has the status SPEC.md gives it and a
//! JSON body `{"error":{"code","message"}}`. Messages never carry a function's
//! internals (its stderr goes to its owner's log, not to the public caller).

use std::time::Duration;

use http::StatusCode;

use crate::process::StartError;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("no such function")]
    NotFound,
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the function is at its concurrency limit; retry shortly")]
    Busy,
    #[error("the function could not be started")]
    StartFailed(#[source] StartError),
    #[error("the function did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the function's instance failed or answered something that is not HTTP")]
    BadGateway,
}

impl RouterError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::StartFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Busy => "too_many_requests",
            Self::StartFailed(_) => "function_unavailable",
            Self::Timeout(_) => "function_timeout",
            Self::BadGateway => "bad_gateway",
        }
    }
}
