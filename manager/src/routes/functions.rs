//! `/func` handlers: they parse (the extractors hand them the owner and a
//! valid name), call the functions service and shape its answers.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Serialize;
use skiff_core::time::rfc3339;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{NamedInPath, NamedInQuery};
use crate::functions::FunctionDetail as Detail;
use crate::runtime::RuntimeStatus;
use crate::state::AppState;

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
    target: NamedInQuery,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let NamedInQuery { owner, name } = target;
    let source = read_source(&req, payload, state.config.max_source_bytes).await?;
    let done = state.functions().deploy(&owner, &name, &source).await?;
    let body = Deployed {
        url: state
            .config
            .function_url(owner.name.as_str(), name.as_str()),
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
        .functions()
        .list(&user)
        .await?
        .into_iter()
        .map(|f| FunctionListItem {
            url: state.config.function_url(user.name.as_str(), &f.name),
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
    target: NamedInPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let NamedInPath { owner, name } = target;
    let Detail {
        function: f,
        runtime,
    } = state.functions().info(&owner, &name).await?;
    Ok(HttpResponse::Ok().json(FunctionDetail {
        runtime,
        url: state.config.function_url(owner.name.as_str(), &f.name),
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
    target: NamedInPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let source = state.functions().code(&target.owner, &target.name).await?;
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
    target: NamedInPath,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .functions()
        .remove(&target.owner, &target.name)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
