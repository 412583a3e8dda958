use std::time::Duration;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use skiff_core::names::FunctionName;
use skiff_core::store::StoreError;
use skiff_core::time::rfc3339;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::runtime::{RuntimeStatus, after_delete, after_deploy};
use crate::state::AppState;
use crate::typecheck::CheckError;

/// The query of `POST /func`. `name` is optional here only so that a missing
/// one gets a clear `400`; the OpenAPI document marks it required.
#[derive(Deserialize)]
pub struct DeployParams {
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Deployed {
    pub name: String,
    pub version: i64,
    /// Where anyone can call it
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct FunctionListItem {
    pub name: String,
    pub version: i64,
    pub url: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct FunctionList {
    pub functions: Vec<FunctionListItem>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionDetail {
    pub version: i64,
    pub sha256: String,
    pub size: i64,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct FunctionDetail {
    pub name: String,
    /// The live version
    pub version: i64,
    pub url: String,
    pub created_at: String,
    pub updated_at: String,
    /// The highest version stored
    pub latest_version: i64,
    /// Of the live version's source
    pub sha256: String,
    /// Of the live version's source, in bytes
    pub size: i64,
    /// Every stored version, oldest first
    pub versions: Vec<VersionDetail>,
    /// Kubernetes runtime only: where the function's objects stand
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStatus>,
}

/// How often a delete that lost a lock race is run again before answering 503.
const DELETE_ATTEMPTS: u64 = 20;

fn parse_name(raw: &str) -> Result<FunctionName, ApiError> {
    Ok(FunctionName::parse(raw)?)
}

/// Reads the request body, refusing it as soon as it passes `limit` bytes.
async fn read_source(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the source is larger than the limit of {limit} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_body", format!("could not read the request body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.to_vec())
}

/// Create a function, or deploy a new version of it. The body is the TypeScript source.
#[utoipa::path(post, path = "/func", tag = "functions",
    params(("name" = String, Query, example = "hello", min_length = 1, max_length = 40,
        pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$",
        description = "The function's name: 1–40 characters of `[a-z0-9-]`, starting with a letter, not ending with `-`")),
    request_body(description = "The TypeScript module, raw (any content type is accepted)",
        content(
            (String = "application/typescript", example = "export default (req: Request) => new Response('hello');"),
            (String = "text/plain"))),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created at version 1", body = Deployed),
        (status = 200, description = "Updated to a new version", body = Deployed),
        (status = 400, description = "Bad name, empty or non-UTF-8 source, forbidden import, or type errors (the compiler's diagnostics are in `message`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "Source over the size limit", body = ErrorBody),
        (status = 503, description = "The type checker (`checker_unavailable`) or the database (`database_unavailable`) is unavailable", body = ErrorBody)))]
pub async fn deploy(
    user: AuthUser,
    state: web::Data<AppState>,
    params: web::Query<DeployParams>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = match params.name.as_deref() {
        None | Some("") => {
            return Err(ApiError::bad_request(
                "missing_name",
                "name the function: POST /func?name=<name>",
            ));
        }
        Some(raw) => parse_name(raw)?,
    };
    let source = read_source(&req, payload, state.config.max_source_bytes).await?;
    if source.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_source",
            "the request body must be the function's TypeScript source",
        ));
    }
    let text = std::str::from_utf8(&source).map_err(|e| {
        ApiError::bad_request(
            "invalid_source",
            format!("the source is not valid UTF-8: {e}"),
        )
    })?;
    state.checker.check(text).await.map_err(|e| match e {
        CheckError::Rejected(message) => ApiError::BadRequest {
            code: "type_check_failed",
            message,
        },
        CheckError::ImportNotAllowed(message) => ApiError::BadRequest {
            code: "import_not_allowed",
            message,
        },
        CheckError::Unavailable(message) => ApiError::Unavailable {
            code: "checker_unavailable",
            message,
        },
        CheckError::Internal(e) => ApiError::Internal(e),
    })?;
    let done = state
        .store
        .deploy(user.id, &user.name, &name, &source)
        .await?;
    tracing::info!(user = %user.name, function = %name, version = done.version, "deployed");
    after_deploy(state.runtime.as_ref(), &user.name, name.as_str()).await;
    let body = Deployed {
        url: state.config.function_url(&user.name, name.as_str()),
        name: name.to_string(),
        version: done.version,
    };
    Ok(if done.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// List your functions.
#[utoipa::path(get, path = "/func", tag = "functions", security(("bearer" = [])), responses(
    (status = 200, description = "Your functions, by name", body = FunctionList),
    (status = 401, description = "No valid token", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let functions = state
        .store
        .list_functions(user.id)
        .await?
        .into_iter()
        .map(|f| FunctionListItem {
            url: state.config.function_url(&user.name, &f.name),
            name: f.name,
            version: f.version,
            updated_at: rfc3339(f.updated_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(FunctionList { functions }))
}

/// One of your functions, with all its versions.
#[utoipa::path(get, path = "/func/{name}", tag = "functions", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello",
        min_length = 1, max_length = 40, pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$")),
    responses(
        (status = 200, description = "The function", body = FunctionDetail),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn info(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    let f = state
        .store
        .get_function(user.id, &name)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    let runtime = match &state.runtime {
        Some(rt) => rt.status(user.id, &name, f.version).await?,
        None => None,
    };
    Ok(HttpResponse::Ok().json(FunctionDetail {
        runtime,
        url: state.config.function_url(&user.name, &f.name),
        name: f.name,
        version: f.version,
        created_at: rfc3339(f.created_at),
        updated_at: rfc3339(f.updated_at),
        latest_version: f.latest_version,
        sha256: f.sha256,
        size: f.size,
        versions: f
            .versions
            .into_iter()
            .map(|v| VersionDetail {
                version: v.version,
                sha256: v.sha256,
                size: v.size,
                created_at: rfc3339(v.created_at),
            })
            .collect(),
    }))
}

/// The source of the live version, byte for byte.
#[utoipa::path(get, path = "/func/{name}/code", tag = "functions", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello",
        min_length = 1, max_length = 40, pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$")),
    responses(
        (status = 200, description = "The TypeScript source", body = String, content_type = "application/typescript"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn code(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    let source = state
        .store
        .live_source(user.id, &name)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("application/typescript; charset=utf-8")
        .body(source))
}

/// Delete a function and all its versions.
#[utoipa::path(delete, path = "/func/{name}", tag = "functions", security(("bearer" = [])),
    params(("name" = String, Path, description = "Function name", example = "hello",
        min_length = 1, max_length = 40, pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "You have no function of that name", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn remove(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = parse_name(&path)?;
    // A delete reads, then writes; on SQLite a concurrent commit in between makes
    // it lose the lock race (nothing was written), so it is simply run again.
    let mut attempt = 0u64;
    let deleted = loop {
        match state
            .store
            .delete_function(user.id, &user.name, &name)
            .await
        {
            Err(StoreError::Deadlock) if attempt < DELETE_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 * attempt.min(10))).await;
            }
            other => break other?,
        }
    };
    if !deleted {
        return Err(ApiError::function_not_found());
    }
    tracing::info!(user = %user.name, function = %name, "deleted");
    after_delete(state.runtime.as_ref(), &user.name, name.as_str()).await;
    Ok(HttpResponse::NoContent().finish())
}
