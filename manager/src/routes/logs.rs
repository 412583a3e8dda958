use actix_web::{HttpResponse, web};
use serde::Deserialize;
use skiff_core::layout::Layout;
use skiff_core::names::FunctionName;
use utoipa::IntoParams;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
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
        (status = 200, description = "Log lines: `<RFC 3339 time> <stdout|stderr|skiff> | <text>`", body = String, content_type = "text/plain"),
        (status = 400, description = "Invalid name or tail", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn logs(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<LogParams>,
) -> Result<HttpResponse, ApiError> {
    let name = FunctionName::parse(&path)?;
    let tail = params.tail.unwrap_or(100);
    if tail == 0 || tail > MAX_TAIL {
        return Err(ApiError::bad_request(
            "invalid_tail",
            format!("tail must be between 1 and {MAX_TAIL}"),
        ));
    }
    let Some(info) = state.store.get_function(user.id, &name).await? else {
        return Err(ApiError::function_not_found());
    };
    let layout = Layout::new(&state.config.data_dir);
    let lines = web::block(move || skiff_core::logs::tail(&layout, info.id, tail))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("log reader: {e}")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading the log: {e}")))?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body))
}
