//! The manager's HTTP error boundary: every failure becomes
//! `{"error":{"code":"<snake_case>","message":"<human text>"}}` with a 4xx/5xx status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use skiff_core::names::NameError;
use skiff_core::store::StoreError;

use crate::functions::FunctionsError;
use crate::functions::logs::LogError;
use crate::typecheck::CheckError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A 404 with its own code (`version_not_found`, `secret_not_found`).
    #[error("{message}")]
    NotFoundCode { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("too many attempts; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Details go to the log only; the client sees a generic message.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case
    pub code: String,
    /// For humans
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn function_not_found() -> Self {
        Self::NotFound("no such function".into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::NotFoundCode { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request("invalid_name", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::Unavailable(_) => {
                // As before the source was kept: the driver's message, in the log only.
                tracing::warn!(error = %error_chain(&e), "database unavailable");
                Self::Unavailable {
                    code: "database_unavailable",
                    message: "the database is unavailable; try again shortly".into(),
                }
            }
            e @ StoreError::QuotaExceeded { .. } => Self::Forbidden {
                code: "quota_exceeded",
                message: e.to_string(),
            },
            StoreError::BadConfig(e) => Self::bad_request("invalid_config", e.to_string()),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::NoRollbackTarget(m) => Self::Conflict {
                code: "no_previous_version",
                message: m,
            },
            // A lock conflict that outlived the store's own retries: nothing was
            // written, and the client may simply try again.
            StoreError::Deadlock => Self::Unavailable {
                code: "database_busy",
                message: "the database is busy; try again".into(),
            },
            other => Self::Internal(other.into()),
        }
    }
}

impl From<FunctionsError> for ApiError {
    fn from(e: FunctionsError) -> Self {
        match e {
            FunctionsError::NotFound => Self::function_not_found(),
            FunctionsError::VersionNotFound(message) => Self::NotFoundCode {
                code: "version_not_found",
                message,
            },
            FunctionsError::SecretNotFound(message) => Self::NotFoundCode {
                code: "secret_not_found",
                message,
            },
            FunctionsError::NoPreviousVersion(message) => Self::Conflict {
                code: "no_previous_version",
                message,
            },
            FunctionsError::InvalidConfig(message) => Self::bad_request("invalid_config", message),
            FunctionsError::InvalidSecretName(message) => {
                Self::bad_request("invalid_secret_name", message)
            }
            FunctionsError::Check(CheckError::Unavailable(message)) => Self::Unavailable {
                code: "checker_unavailable",
                message,
            },
            FunctionsError::Check(CheckError::Internal(e)) => Self::Internal(e),
            FunctionsError::Check(CheckError::TooLarge(message)) => Self::PayloadTooLarge(message),
            FunctionsError::Check(e) => Self::BadRequest {
                code: e.code(),
                message: e.to_string(),
            },
            FunctionsError::Store(e) => e.into(),
            FunctionsError::Logs(e @ LogError::Unavailable(_)) => {
                tracing::warn!(error = %error_chain(&e), "function logs unavailable");
                Self::Unavailable {
                    code: "logs_unavailable",
                    message: "the function's logs cannot be read right now; try again shortly"
                        .into(),
                }
            }
            FunctionsError::Logs(e) => Self::Internal(e.into()),
        }
    }
}

/// `e` and each of its sources, `: `-separated, for one log field.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::NotFoundCode { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        if let Self::RateLimited { retry_after } = self {
            resp.insert_header(("Retry-After", retry_after.to_string()));
        }
        if matches!(self, Self::Unauthorized(_)) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        resp.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
        })
    }
}
