//! Extractors for what `/func` requests name: the framework hands handlers the
//! authenticated owner with a validated `FunctionName`, or answers with the
//! JSON error before the handler runs. The order of the answers is kept: a
//! path or query that does not decode is `400 invalid_path`/`invalid_query`
//! at once, then authentication (`401`), then the name (`400 missing_name`,
//! `400 invalid_name`), so no one learns whether a name is valid without a token.

use std::future::Future;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use skiff_core::names::FunctionName;

use crate::auth::AuthUser;
use crate::error::ApiError;

/// Authenticates, then validates the raw name `raw` resolves to.
fn owner_and_name<R>(
    req: &HttpRequest,
    payload: &mut Payload,
    raw: R,
) -> LocalBoxFuture<'static, Result<(AuthUser, FunctionName), actix_web::Error>>
where
    R: Future<Output = Result<Option<String>, actix_web::Error>> + 'static,
{
    let owner = AuthUser::from_request(req, payload);
    Box::pin(async move {
        let raw = raw.await?;
        let owner = owner.await?;
        let name = match raw.as_deref() {
            None | Some("") => {
                return Err(ApiError::bad_request(
                    "missing_name",
                    "name the function: POST /func?name=<name>",
                )
                .into());
            }
            Some(raw) => FunctionName::parse(raw).map_err(ApiError::from)?,
        };
        Ok((owner, name))
    })
}

/// `{name}` of a path, whatever other segments the path names.
#[derive(Deserialize)]
struct NameSegment {
    name: String,
}

/// The caller and the `{name}` of `/func/{name}…`.
#[derive(Debug, Clone)]
pub struct NamedInPath {
    pub owner: AuthUser,
    pub name: FunctionName,
}

impl FromRequest for NamedInPath {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Path decoding (and its `400 invalid_path`) stays actix's.
        let raw = web::Path::<NameSegment>::from_request(req, payload);
        let both = owner_and_name(req, payload, async move {
            raw.await.map(|p| Some(p.into_inner().name))
        });
        Box::pin(async move {
            let (owner, name) = both.await?;
            Ok(Self { owner, name })
        })
    }
}

#[derive(Deserialize)]
struct NameParam {
    name: Option<String>,
}

/// The caller and the `?name=` of `POST /func` (optional in the query only so
/// that a missing one gets its own `400 missing_name`).
#[derive(Debug, Clone)]
pub struct NamedInQuery {
    pub owner: AuthUser,
    pub name: FunctionName,
}

impl FromRequest for NamedInQuery {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Query decoding (and its `400 invalid_query`) stays actix's.
        let query = web::Query::<NameParam>::from_request(req, payload);
        let both = owner_and_name(req, payload, async move {
            query.await.map(|q| q.into_inner().name)
        });
        Box::pin(async move {
            let (owner, name) = both.await?;
            Ok(Self { owner, name })
        })
    }
}
