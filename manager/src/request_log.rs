//! What the manager logs about each request: method, path, real client
//! address and status — never the query string, headers or body.
//!
//! `tracing-actix-web`'s default span records the full request target
//! (`/login?password=…`), the `User-Agent` and a client address any client can
//! set with `X-Forwarded-For`, and its `emit_event_on_error` feature (turned
//! off in the workspace `Cargo.toml`) logs each error's `Debug` form, which can
//! hold what the client sent (a type checker's diagnostics quote the uploaded
//! source). This builder replaces both.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{Error, web};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

use crate::rate_limit::client_ip;
use crate::state::AppState;

/// Longer paths are cut in the log (a path can be 64 KiB).
const MAX_LOGGED_PATH: usize = 256;

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let client = request
            .app_data::<web::Data<AppState>>()
            .map(|state| {
                client_ip(
                    request.peer_addr(),
                    request.headers(),
                    &state.config.trusted_proxies,
                )
            })
            .unwrap_or_else(|| request.peer_addr().map(|a| a.ip()));
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %loggable_path(request.path()),
            client = %client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        )
    }

    fn on_request_end<B: MessageBody>(_span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        // Called inside the request's span, so these events carry its fields.
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        log_answer(status, is_probe(outcome));
    }
}

fn log_answer(status: StatusCode, probe: bool) {
    let code = status.as_u16();
    if status.is_server_error() {
        tracing::warn!(status = code, "answered");
    } else if probe {
        // Kubernetes probes every few seconds; they would drown everything else.
        tracing::debug!(status = code, "answered");
    } else {
        tracing::info!(status = code, "answered");
    }
}

fn is_probe<B>(outcome: &Result<ServiceResponse<B>, Error>) -> bool {
    outcome
        .as_ref()
        .is_ok_and(|r| matches!(r.request().path(), "/healthz" | "/readyz"))
}

/// The path alone (`ServiceRequest::path` has no query), cut at a character
/// boundary.
fn loggable_path(path: &str) -> &str {
    if path.len() <= MAX_LOGGED_PATH {
        return path;
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(loggable_path("/login"), "/login");
        let long = format!("/{}", "é".repeat(300));
        let cut = loggable_path(&long);
        assert!(cut.len() <= MAX_LOGGED_PATH && long.starts_with(cut));
    }
}
