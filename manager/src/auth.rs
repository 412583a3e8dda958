//! The bearer-token extractor. A request is authenticated when its JWT verifies
//! (HS256, unexpired) AND the user it names still exists with the same id and
//! token generation — so deleted users and revoked tokens are refused at once.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use skiff_core::names::UserName;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub name: UserName,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            let token = token.ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing bearer token: send Authorization: Bearer <token>".into(),
                )
            })?;
            let claims = state
                .tokens
                .verify(&token)
                .map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))?;
            let user = state.store.find_user(&claims.sub).await?;
            match user {
                // The name must match exactly: MySQL's default collation would
                // also find `alice` for `ALICE` or `alice `.
                Some(u)
                    if u.id == claims.uid
                        && u.username == claims.sub
                        && u.token_generation == claims.r#gen =>
                {
                    // Stored names were validated when the user was made.
                    let name = UserName::parse(&u.username).map_err(|e| {
                        ApiError::Internal(anyhow::Error::new(e).context("a stored user name"))
                    })?;
                    Ok(AuthUser { id: u.id, name })
                }
                _ => Err(ApiError::Unauthorized(
                    "token revoked or user removed".into(),
                )),
            }
        })
    }
}
