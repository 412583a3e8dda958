use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use skiff_core::names::UserName;
use skiff_core::store::StoreError;
use skiff_core::time::rfc3339;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::passwords;
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
    (status = 503, description = "The database is unavailable", body = ErrorBody)))]
pub async fn register(
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.allow_signup {
        return Err(ApiError::Forbidden {
            code: "signup_closed",
            message: "signup is closed on this server; ask an administrator for an account".into(),
        });
    }
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
    let Credentials { username, password } = body.into_inner();
    let addr = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    // Keys are bounded so a hostile name cannot grow the limiter's memory.
    let user_key: String = username.chars().take(64).collect();
    state
        .login_by_addr
        .hit(&addr)
        .and_then(|()| state.login_by_user.hit(&user_key))
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
    state.login_by_user.reset(&user_key);
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
