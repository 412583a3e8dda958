//! HTTP handlers. They parse, authorise and shape answers; SQL lives in the store.

pub mod accounts;
pub mod config;
pub mod console;
pub mod docs;
pub mod functions;
pub mod health;
pub mod logs;
pub mod stats;

use actix_web::http::header::ALLOW;
use actix_web::{HttpResponse, web};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").get(health::healthz))
        .service(resource("/readyz", "GET").get(health::readyz))
        .service(resource("/register", "POST").post(accounts::register))
        .service(resource("/login", "POST").post(accounts::login))
        .service(resource("/tokens/revoke", "POST").post(accounts::revoke_tokens))
        .service(
            resource("/func", "GET, POST")
                .get(functions::list)
                .post(functions::deploy),
        )
        .service(
            resource("/func/{name}", "GET, DELETE")
                .get(functions::info)
                .delete(functions::remove),
        )
        .service(resource("/func/{name}/code", "GET").get(functions::code))
        .service(resource("/func/{name}/logs", "GET").get(logs::logs))
        .service(resource("/func/{name}/stats", "GET").get(stats::stats))
        .service(
            resource("/func/{name}/config", "GET, PATCH")
                .get(config::get_config)
                .patch(config::patch_config),
        )
        .service(
            resource("/func/{name}/secrets/{key}", "PUT, DELETE")
                .put(config::put_secret)
                .delete(config::delete_secret),
        )
        .service(resource("/func/{name}/rollback", "POST").post(config::rollback))
        .service(resource("/func/{name}/versions/{version}/code", "GET").get(config::version_code))
        .service(resource("/openapi.json", "GET").get(docs::openapi_json))
        .service(resource("/docs", "GET").get(docs::page))
        .service(resource("/", "GET").get(console::index))
        .service(resource("/console/{file}", "GET").get(console::asset));
}

/// A resource whose other methods answer `405` with the JSON error body and an
/// `Allow` header naming the methods it has (RFC 9110, section 15.5.6).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move { method_not_allowed(allow) }))
}

pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((ALLOW, allow))
        .json(crate::error::ErrorBody {
            error: crate::error::ErrorDetail {
                code: "method_not_allowed".into(),
                message: format!("this method is not allowed on this path; allowed: {allow}"),
            },
        })
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint".into()))
}
