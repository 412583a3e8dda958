//! `GET /func/<name>/stats?window=…`: the function's invocations, errors,
//! cold starts, latency percentiles and per-minute series, summed over every
//! router's per-minute rows (`skiff_core::store::stats`).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::extract::NamedInPath;
use crate::state::AppState;

/// The longest window: what the routers' rows are kept for.
pub const MAX_WINDOW: Duration = skiff_core::store::RETENTION;

#[derive(Deserialize, IntoParams)]
pub struct StatsParams {
    /// How far back: a number and a unit, `m`, `h` or `d` (default `1h`, at least `1m`, at most `7d`)
    #[param(example = "1h", pattern = "^[0-9]{1,5}[mhd]$")]
    pub window: Option<String>,
}

/// Parses `15m`, `1h`, `7d`; refuses anything else, or a window outside
/// one minute..`MAX_WINDOW`, naming what is allowed.
pub fn parse_window(text: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_window",
            format!(
                "window must be a number and a unit (m, h or d) between 1m and {}d, e.g. 15m, 1h, 7d",
                MAX_WINDOW.as_secs() / 86_400
            ),
        )
    };
    let Some(unit) = text.chars().last() else {
        return Err(bad());
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    let secs_per: u64 = match unit {
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let window = Duration::from_secs(n * secs_per);
    if n == 0 || window > MAX_WINDOW {
        return Err(bad());
    }
    Ok(window)
}

/// The function's statistics over the window: counts, latency percentiles
/// (null when nothing was served) and one point per minute, oldest first.
#[utoipa::path(get, path = "/func/{name}/stats", tag = "functions", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello",
        min_length = 1, max_length = 40, pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$"), StatsParams),
    responses(
        (status = 200, description = "`{invocations, errors, cold_starts, p50_ms, p95_ms, p99_ms, series: [{t, invocations, errors, cold_starts, p50_ms, p95_ms, p99_ms}]}`; `t` is the minute's start in ms since the epoch, a minute's percentiles are null when it served nothing; errors are answers with status ≥ 500", body = Object),
        (status = 400, description = "Invalid name or window", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn stats(
    target: NamedInPath,
    state: web::Data<AppState>,
    params: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let window = parse_window(params.window.as_deref().unwrap_or("1h"))?;
    let stats = state
        .functions()
        .stats(&target.owner, &target.name, window)
        .await?;
    Ok(HttpResponse::Ok().json(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_a_number_and_a_unit_within_retention() {
        assert_eq!(parse_window("15m").ok(), Some(Duration::from_secs(900)));
        assert_eq!(parse_window("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_window("7d").ok(), Some(MAX_WINDOW));
        for bad in [
            "",
            "h",
            "0m",
            "8d",
            "1w",
            "-1h",
            "1.5h",
            "99999999999m",
            "1 h",
            "１h",
            "1é",
            "é",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }
}
