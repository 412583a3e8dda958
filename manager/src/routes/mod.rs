//! HTTP handlers. They parse, authorise and shape answers; SQL lives in the store.

pub mod accounts;
pub mod docs;
pub mod functions;
pub mod health;
pub mod logs;

use actix_web::{HttpResponse, web};

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/register").post(accounts::register))
        .service(web::resource("/login").post(accounts::login))
        .service(
            web::resource("/func")
                .get(functions::list)
                .post(functions::deploy)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/func/{name}")
                .get(functions::info)
                .delete(functions::remove)
                .default_service(web::to(method_not_allowed)),
        )
        .service(web::resource("/func/{name}/code").get(functions::code))
        .service(web::resource("/func/{name}/logs").get(logs::logs))
        .service(web::resource("/openapi.json").get(docs::openapi_json))
        .service(web::resource("/docs").get(docs::page));
}

pub async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            code: "method_not_allowed".into(),
            message: "this method is not allowed on this path".into(),
        },
    })
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint".into()))
}
