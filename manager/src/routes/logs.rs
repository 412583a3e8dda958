use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::extract::NamedInPath;
use crate::state::AppState;

pub const MAX_TAIL: usize = 10_000;

#[derive(Deserialize, IntoParams)]
pub struct LogParams {
    /// How many of the most recent lines (default 100, at most 10000)
    #[param(minimum = 1, maximum = 10000, example = 100)]
    pub tail: Option<usize>,
}

/// The function's recent stdout/stderr lines, oldest first, each prefixed with
/// its time and stream.
#[utoipa::path(get, path = "/func/{name}/logs", tag = "functions", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello",
        min_length = 1, max_length = 40, pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$"), LogParams),
    responses(
        (status = 200, description = "Log lines: `<RFC 3339 time> <stream> | <text>`; the stream is `stdout`, `stderr` or `skiff` with the process runtime, and the pod's name with the Kubernetes runtime (whose pod logs hold stdout and stderr together)", body = String, content_type = "text/plain"),
        (status = 400, description = "Invalid name or tail", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database (`database_unavailable`) or, with the Kubernetes runtime, the Kubernetes API (`logs_unavailable`) is unavailable", body = ErrorBody)))]
pub async fn logs(
    target: NamedInPath,
    state: web::Data<AppState>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    let tail = params.tail.unwrap_or(100);
    if tail == 0 || tail > MAX_TAIL {
        return Err(ApiError::bad_request(
            "invalid_tail",
            format!("tail must be between 1 and {MAX_TAIL}"),
        ));
    }
    let lines = state
        .functions()
        .logs(&target.owner, &target.name, tail)
        .await?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body))
}
