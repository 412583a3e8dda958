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
use crate::functions::{DeployRequest, FunctionDetail as Detail};
use crate::runtime::RuntimeStatus;
use crate::state::AppState;
use crate::typecheck::UploadKind;

#[derive(Serialize, ToSchema)]
pub struct Deployed {
    pub name: String,
    pub version: i64,
    /// Where anyone can call it
    pub url: String,
    /// Type errors and other advice; the deploy went through
    pub warnings: Vec<String>,
    /// Bare imports the upload did not map, and the specifier each was resolved as
    pub resolved: std::collections::BTreeMap<String, String>,
    /// The entry module of the upload
    pub entry: String,
    /// SHA-256 of the artifact (the bundled module every router runs)
    pub artifact_sha256: String,
}

/// `POST /func`'s query besides the name.
#[derive(serde::Deserialize)]
pub struct DeployParams {
    entry: Option<String>,
    check: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    pub size: i64,
    pub created_at: String,
    /// Whether this is the live version (a rollback can make an older one live)
    pub live: bool,
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
    /// Of the live version's artifact (the bundled module the routers run)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// How the live version was uploaded: `file`, `tar.gz`, `tar` or `zip`
    pub source_type: String,
    /// The live version's entry module
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Every kept version, oldest first (the oldest are pruned past the versions quota)
    pub versions: Vec<VersionDetail>,
    /// Kubernetes runtime only: where the function's objects stand
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStatus>,
}

/// Reads the request body, refusing it as soon as it passes `limit` bytes.
/// `what` names it in the error (never its content).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("{what} is larger than the limit of {limit} bytes"));
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

/// Create a function, or deploy a new version of it. The body is one module, or a
/// directory as a tar.gz, tar or zip archive (by `Content-Type`).
#[utoipa::path(post, path = "/func", tag = "functions",
    params(("name" = String, Query, example = "hello", min_length = 1, max_length = 40,
        pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$",
        description = "The function's name: 1–40 characters of `[a-z0-9-]`, starting with a letter, not ending with `-`"),
        ("entry" = Option<String>, Query, example = "main.ts",
        description = "The module to serve: a path inside an archive (default: the first of main.ts, index.ts, mod.ts, main.js, index.js), or a single module's file name (default main.ts)"),
        ("check" = Option<String>, Query, example = "strict",
        description = "`strict`: refuse the deploy on any type error (by default type errors are warnings)")),
    request_body(description = "The module, raw (any text type), or an archive of a directory",
        content(
            (String = "application/typescript", example = "export default (req: Request) => new Response('hello');"),
            (String = "text/plain"),
            (Vec<u8> = "application/gzip"),
            (Vec<u8> = "application/x-tar"),
            (Vec<u8> = "application/zip"))),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created at version 1", body = Deployed),
        (status = 200, description = "Updated to a new version", body = Deployed),
        (status = 400, description = "Bad name, empty or non-UTF-8 source, hostile archive (`bad_archive`), no entry (`no_entry`), syntax error (`syntax_error`), forbidden import (`import_not_allowed`), dependency that cannot be downloaded (`dependency_unavailable`), no handler (`no_handler`), module that throws while loading (`module_failed`), or type errors with `check=strict` (`type_check_failed`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "Upload or artifact over the size limit", body = ErrorBody),
        (status = 503, description = "The checker (`checker_unavailable`) or the database (`database_unavailable`) is unavailable", body = ErrorBody)))]
pub async fn deploy(
    target: NamedInQuery,
    params: web::Query<DeployParams>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let answer = deploy_upload(target, params, &state, req, payload).await;
    let result = match &answer {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    state.metrics.deploy_finished(result, started.elapsed());
    answer
}

async fn deploy_upload(
    target: NamedInQuery,
    params: web::Query<DeployParams>,
    state: &AppState,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let NamedInQuery { owner, name } = target;
    let DeployParams { entry, check } = params.into_inner();
    let strict = match check.as_deref() {
        None | Some("" | "warn") => false,
        Some("strict") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("check must be `strict` or `warn`, not {other:?}"),
            ));
        }
    };
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = UploadKind::from_content_type(content_type);
    let limit = if kind == UploadKind::Module {
        state.config.max_source_bytes
    } else {
        state.config.checker.archive.max_archive_bytes
    };
    let body = read_body(&req, payload, limit, "the source").await?;
    let done = state
        .functions()
        .deploy(
            &owner,
            &name,
            DeployRequest {
                body,
                kind,
                entry,
                strict,
            },
        )
        .await?;
    let answer = Deployed {
        url: state
            .config
            .function_url(owner.name.as_str(), name.as_str()),
        name: name.to_string(),
        version: done.deployed.version,
        warnings: done.warnings,
        resolved: done.resolved,
        entry: done.entry,
        artifact_sha256: done.artifact_sha256,
    };
    Ok(if done.deployed.created {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
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
        artifact_sha256: f.artifact_sha256,
        source_type: f.source_type,
        entry: f.entry,
        versions: f
            .versions
            .into_iter()
            .map(|v| VersionDetail {
                live: v.version == f.version,
                version: v.version,
                sha256: v.sha256,
                artifact_sha256: v.artifact_sha256,
                size: v.size,
                created_at: rfc3339(v.created_at),
            })
            .collect(),
    }))
}

/// The live version as it was uploaded, byte for byte: the module, or the archive.
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
    let upload = state.functions().code(&target.owner, &target.name).await?;
    Ok(HttpResponse::Ok()
        .content_type(UploadKind::from_stored(&upload.source_type).content_type())
        .body(upload.source))
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
