//! `/func/<name>/config`, `/secrets/<KEY>`, `/rollback` and
//! `/versions/<N>/code`: they parse, call the functions service
//! (`functions::config`) and shape its answers.
//!
//! A secret's value is read from the body into memory and handed on; no
//! answer, log line or error message here carries it.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_core::fnconfig::{FunctionSettings, MAX_CONFIG_BYTES, MAX_SECRET_VALUE_BYTES};
use skiff_core::store::ConfigVersion;
use utoipa::ToSchema;

use super::functions::read_body;
use crate::error::{ApiError, ErrorBody};
use crate::extract::NamedInPath;
use crate::functions::config::ConfigPatch;
use crate::state::AppState;
use crate::typecheck::UploadKind;

/// A new live version made by a configuration change or a rollback.
#[derive(Serialize, ToSchema)]
pub struct Changed {
    pub name: String,
    /// The live version now
    pub version: i64,
    pub url: String,
}

/// The live version's configuration. Settings are effective: the operator's
/// default where the function set none (`overrides` shows what it set).
#[derive(Serialize, ToSchema)]
pub struct ConfigAnswer {
    /// The live version
    pub version: i64,
    pub env: BTreeMap<String, String>,
    /// Names of the secrets that have a value; values are never returned
    pub secrets: Vec<String>,
    pub memory_mb: u64,
    pub timeout_secs: u64,
    pub concurrency: u64,
    pub min_instances: u64,
    pub max_instances: u64,
    pub idle_timeout_secs: u64,
    /// The settings the function set itself (the others follow the operator's defaults)
    #[schema(value_type = Object)]
    pub overrides: FunctionSettings,
}

fn changed(state: &AppState, target: &NamedInPath, c: ConfigVersion) -> HttpResponse {
    HttpResponse::Ok().json(Changed {
        name: target.name.to_string(),
        version: c.version,
        url: state
            .config
            .function_url(target.owner.name.as_str(), target.name.as_str()),
    })
}

const SETTINGS: [&str; 6] = [
    "memory_mb",
    "timeout_secs",
    "concurrency",
    "min_instances",
    "max_instances",
    "idle_timeout_secs",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_config", message)
}

/// Parses a `PATCH /config` body. Every refusal names the field.
pub fn parse_patch(body: &[u8]) -> Result<ConfigPatch, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(invalid(
            "the body must be a JSON object, e.g. {\"env\":{\"K\":\"v\"},\"memory_mb\":256}",
        ));
    };
    let mut patch = ConfigPatch::default();
    for (field, v) in fields {
        match field.as_str() {
            "env" => {
                let Value::Object(env) = v else {
                    return Err(invalid(
                        "env must be an object of names to string values (null unsets)",
                    ));
                };
                for (k, v) in env {
                    let v = match v {
                        Value::String(s) => Some(s),
                        Value::Null => None,
                        _ => {
                            return Err(invalid(format!(
                                "env.{k} must be a string, or null to unset it"
                            )));
                        }
                    };
                    patch.env.insert(k, v);
                }
            }
            "secrets" => {
                return Err(invalid(
                    "secrets cannot be set here: PUT /func/<name>/secrets/<KEY> with the value \
                     as the body sets one",
                ));
            }
            s if SETTINGS.contains(&s) => {
                let n = match v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_u64().ok_or_else(|| {
                        invalid(format!(
                            "{s} must be a whole number, or null for the default"
                        ))
                    })?),
                    _ => {
                        return Err(invalid(format!(
                            "{s} must be a whole number, or null for the default"
                        )));
                    }
                };
                let slot = match s {
                    "memory_mb" => &mut patch.memory_mb,
                    "timeout_secs" => &mut patch.timeout_secs,
                    "concurrency" => &mut patch.concurrency,
                    "min_instances" => &mut patch.min_instances,
                    "max_instances" => &mut patch.max_instances,
                    _ => &mut patch.idle_timeout_secs,
                };
                *slot = Some(n);
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(invalid(format!(
                    "unknown field {shown:?}; known: env, {}",
                    SETTINGS.join(", ")
                )));
            }
        }
    }
    Ok(patch)
}

/// The function's env, secret names and settings (the live version's).
#[utoipa::path(get, path = "/func/{name}/config", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello")),
    responses(
        (status = 200, description = "The live configuration", body = ConfigAnswer),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn get_config(
    target: NamedInPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .functions()
        .config(&target.owner, &target.name)
        .await?;
    let e = view.effective;
    Ok(HttpResponse::Ok().json(ConfigAnswer {
        version: view.version,
        env: view.env,
        secrets: view.secrets,
        memory_mb: e.memory_mb,
        timeout_secs: e.timeout_secs,
        concurrency: e.concurrency,
        min_instances: e.min_instances,
        max_instances: e.max_instances,
        idle_timeout_secs: e.idle_timeout_secs,
        overrides: view.overrides,
    }))
}

/// Change env vars and settings: a new version with the same code.
/// `{"env":{"K":"v","OLD":null},"memory_mb":512,"timeout_secs":null}` sets K,
/// unsets OLD, sets memory_mb and returns timeout_secs to the operator's default.
#[utoipa::path(patch, path = "/func/{name}/config", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello")),
    request_body(content = String, content_type = "application/json",
        description = "A JSON object with any of `env` and the six settings; not `secrets`",
        example = json!({"env": {"GREETING": "hi", "OLD": null}, "memory_mb": 512})),
    responses(
        (status = 200, description = "The new live version", body = Changed),
        (status = 400, description = "Malformed JSON (`invalid_json`) or a field breaking a rule (`invalid_config`, naming it); nothing was written", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A quota would be exceeded (`quota_exceeded`)", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn patch_config(
    target: NamedInPath,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Room for a full config of the largest size, with JSON's quoting.
    let body = read_body(&req, payload, 2 * MAX_CONFIG_BYTES, "the body").await?;
    let patch = parse_patch(&body)?;
    let c = state
        .functions()
        .patch_config(&target.owner, &target.name, patch)
        .await?;
    Ok(changed(&state, &target, c))
}

#[derive(Deserialize)]
pub struct SecretPath {
    key: String,
}

/// Set a secret: the body is its value, raw (UTF-8, at most 32 KiB). A new
/// version; the value is never returned by any endpoint.
#[utoipa::path(put, path = "/func/{name}/secrets/{key}", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello"),
        ("key" = String, Path, description = "The secret's name: `[A-Z_][A-Z0-9_]*`, up to 64 characters, not SKIFF_*", example = "API_KEY")),
    request_body(content = String, content_type = "text/plain", description = "The value"),
    responses(
        (status = 200, description = "The new live version", body = Changed),
        (status = 400, description = "Invalid secret name (`invalid_secret_name`), empty or non-UTF-8 value (`invalid_secret_value`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A quota would be exceeded (`quota_exceeded`)", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 413, description = "Value over 32 KiB", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn put_secret(
    target: NamedInPath,
    key: web::Path<SecretPath>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, MAX_SECRET_VALUE_BYTES, "the secret's value").await?;
    // The error says where, never what: the bytes are the secret.
    let value = String::from_utf8(body).map_err(|_| {
        ApiError::bad_request(
            "invalid_secret_value",
            "the secret's value is not UTF-8 text",
        )
    })?;
    if value.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_secret_value",
            "the secret's value is empty: send it as the request body",
        ));
    }
    let c = state
        .functions()
        .put_secret(&target.owner, &target.name, &key.key, &value)
        .await?;
    Ok(changed(&state, &target, c))
}

/// Delete a secret (its value at once): a new version without it.
#[utoipa::path(delete, path = "/func/{name}/secrets/{key}", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello"),
        ("key" = String, Path, description = "The secret's name", example = "API_KEY")),
    responses(
        (status = 200, description = "The new live version", body = Changed),
        (status = 400, description = "Invalid secret name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name (`not_found`), or it has no such secret (`secret_not_found`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn delete_secret(
    target: NamedInPath,
    key: web::Path<SecretPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let c = state
        .functions()
        .delete_secret(&target.owner, &target.name, &key.key)
        .await?;
    Ok(changed(&state, &target, c))
}

#[derive(Deserialize)]
pub struct RollbackParams {
    version: Option<String>,
}

/// A version number as a client wrote it: a whole number from 1.
fn parse_version(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
        let shown: String = raw.chars().take(32).collect();
        ApiError::bad_request(
            "invalid_version",
            format!("version must be a whole number from 1, not {shown:?}"),
        )
    })
}

/// Make an older (or newer) version live again: its code, env, settings and
/// secret names, each secret with its current value. No version is created.
#[utoipa::path(post, path = "/func/{name}/rollback", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello"),
        ("version" = Option<i64>, Query, description = "The version to make live [default: the newest one before the live one]", example = 3)),
    responses(
        (status = 200, description = "The live version now", body = Changed),
        (status = 400, description = "Invalid name or version (`invalid_version`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name (`not_found`), or no such version (`version_not_found`, pruned ones included)", body = ErrorBody),
        (status = 409, description = "Nothing before the live version (`no_previous_version`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn rollback(
    target: NamedInPath,
    params: web::Query<RollbackParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let to = params.version.as_deref().map(parse_version).transpose()?;
    let c = state
        .functions()
        .rollback(&target.owner, &target.name, to)
        .await?;
    Ok(changed(&state, &target, c))
}

#[derive(Deserialize)]
pub struct VersionPath {
    version: String,
}

/// Any kept version as it was uploaded, byte for byte.
#[utoipa::path(get, path = "/func/{name}/versions/{version}/code", tag = "configuration", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello"),
        ("version" = i64, Path, description = "The version", example = 2)),
    responses(
        (status = 200, description = "The source (or archive) of that version", body = String, content_type = "application/typescript"),
        (status = 400, description = "Invalid name or version (`invalid_version`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name (`not_found`), or no such version (`version_not_found`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn version_code(
    target: NamedInPath,
    version: web::Path<VersionPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let n = parse_version(&version.version)?;
    let upload = state
        .functions()
        .version_code(&target.owner, &target.name, n)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(UploadKind::from_stored(&upload.source_type).content_type())
        .body(upload.source))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_keeps_null_apart_from_absent() {
        let p = parse_patch(br#"{"env":{"A":"1","B":null},"memory_mb":512,"timeout_secs":null}"#)
            .unwrap();
        assert_eq!(p.env.get("A"), Some(&Some("1".to_owned())));
        assert_eq!(p.env.get("B"), Some(&None));
        assert_eq!(p.memory_mb, Some(Some(512)));
        assert_eq!(p.timeout_secs, Some(None));
        assert_eq!(p.concurrency, None);
    }

    #[test]
    fn a_patch_refuses_what_it_does_not_know() {
        for bad in [
            &br#"{"secrets":{"A":"x"}}"#[..],
            br#"{"memroy_mb":1}"#,
            br#"{"memory_mb":-1}"#,
            br#"{"memory_mb":1.5}"#,
            br#"{"memory_mb":"1"}"#,
            br#"{"env":{"A":1}}"#,
            br#"{"env":["A"]}"#,
            br#"[]"#,
        ] {
            let e = parse_patch(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ApiError::BadRequest {
                        code: "invalid_config",
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert!(matches!(
            parse_patch(b"{").unwrap_err(),
            ApiError::BadRequest {
                code: "invalid_json",
                ..
            }
        ));
    }
}
