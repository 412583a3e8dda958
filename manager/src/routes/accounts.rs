use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use skiff_core::names::UserName;
use skiff_core::store::StoreError;
use skiff_core::time::rfc3339;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::passwords;
use crate::rate_limit::{ClientKey, client_ip};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3–32 characters of `[a-z0-9-]`, starting with a letter, not ending with `-`
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$"
    )]
    pub username: String,
    /// At least 8 characters, at most 1024 bytes
    #[schema(example = "correct horse battery", min_length = 8, max_length = 1024)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedIn {
    /// Send as `Authorization: Bearer <token>`
    pub token: String,
    /// RFC 3339
    pub expires_at: String,
}

/// Create an account (when signup is open).
#[utoipa::path(post, path = "/register", tag = "accounts", request_body = Credentials, responses(
    (status = 201, description = "Created", body = Registered),
    (status = 400, description = "Invalid name, password or JSON", body = ErrorBody),
    (status = 403, description = "Signup is closed", body = ErrorBody),
    (status = 409, description = "The name is taken", body = ErrorBody),
    (status = 429, description = "Too many registrations from this address", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
    (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.allow_signup {
        return Err(ApiError::Forbidden {
            code: "signup_closed",
            message: "signup is closed on this server; ask an administrator for an account".into(),
        });
    }
    // Every attempt counts, not only those that reach the password hash: a
    // `409` also tells which names exist.
    state
        .limits
        .register_attempt(client_key(&req, &state))
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let Credentials { username, password } = body.into_inner();
    let username = UserName::parse(&username)?;
    passwords::check_policy(&password)?;
    let hash = passwords::hash(password).await?;
    match state.store.create_user(&username, &hash).await {
        Ok(user) => Ok(HttpResponse::Created().json(Registered {
            username: user.username,
        })),
        Err(StoreError::Conflict) => Err(ApiError::Conflict {
            code: "username_taken",
            message: format!("the username {username} is taken"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Exchange a username and password for a token.
#[utoipa::path(post, path = "/login", tag = "accounts", request_body = Credentials, responses(
    (status = 200, description = "Logged in", body = LoggedIn),
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 401, description = "Wrong username or password", body = ErrorBody),
    (status = 429, description = "Too many attempts", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
    (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let answer = check_login(&req, &state, body.into_inner()).await;
    state.metrics.login(match &answer {
        Ok(_) => "ok",
        Err(ApiError::Unauthorized(_)) => "bad_credentials",
        Err(ApiError::RateLimited { .. }) => "rate_limited",
        Err(ApiError::Unavailable { .. }) => "unavailable",
        Err(_) => "error",
    });
    answer
}

async fn check_login(
    req: &HttpRequest,
    state: &AppState,
    credentials: Credentials,
) -> Result<HttpResponse, ApiError> {
    let Credentials { username, password } = credentials;
    let client = client_key(req, state);
    state
        .limits
        .login_attempt(&username, client)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let denied = || ApiError::Unauthorized("wrong username or password".into());
    if password.len() > passwords::MAX_PASSWORD_LEN {
        return Err(denied());
    }
    // Exact match only: MySQL's default collation compares `ALICE` and `alice `
    // equal to `alice`, SQLite does not; a login must not depend on the backend.
    let user = state
        .store
        .find_user(&username)
        .await?
        .filter(|u| u.username == username);
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    if !passwords::verify(password, hash).await {
        return Err(denied());
    }
    let user = user.ok_or_else(denied)?;
    state.limits.login_succeeded(&user.username, client);
    let now = chrono::Utc::now().timestamp();
    let (token, exp) = state
        .tokens
        .issue(&user.username, user.id, user.token_generation, now)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok().json(LoggedIn {
        token,
        expires_at: rfc3339(exp * 1000),
    }))
}

/// The unit the account limits count: the real client address (behind
/// `SKIFF_TRUSTED_PROXIES`), IPv6 by /64.
fn client_key(req: &HttpRequest, state: &AppState) -> ClientKey {
    ClientKey::of(client_ip(
        req.peer_addr(),
        req.headers(),
        &state.config.trusted_proxies,
    ))
}

/// Revokes every token of the caller (the console's "sign out everywhere",
/// the same as `skiff-manager user revoke-tokens`): the token that asked
/// included, each is refused from the next request on.
#[utoipa::path(post, path = "/tokens/revoke", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 204, description = "Every token of the caller is revoked"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn revoke_tokens(
    user: crate::auth::AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A user deleted since the token was checked: nothing is left to revoke.
    state.store.revoke_tokens(&user.name).await?;
    Ok(HttpResponse::NoContent().finish())
}
