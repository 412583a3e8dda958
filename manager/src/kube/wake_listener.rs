//! The wake endpoint the routers call for a function at zero:
//! `POST /wake/<user>/<function>`, on a listener of its own
//! (`SKIFF_K8S_WAKE_LISTEN`, off by default), never on the public API's.
//!
//! Why a private listener and not a shared secret: it needs no secret handed
//! to every router and rotated, and the operator fences it like the metrics
//! port (a NetworkPolicy letting in only the router pods; a CNI enforcing
//! NetworkPolicy is already required). What a caller could do with it is
//! bounded anyway: start one pod of a function that exists.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use serde_json::json;
use skiff_core::names::{FunctionName, UserName};

use super::controller::{KubeRuntime, WakeError, WakeOutcome};

/// Binds the wake listener and builds its server (one worker: a wake is one
/// API call, shared by concurrent callers).
pub fn serve(addr: SocketAddr, runtime: Arc<KubeRuntime>) -> anyhow::Result<(Server, SocketAddr)> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the wake listener {addr}"))?;
    let bound = listener.local_addr()?;
    let runtime = web::Data::from(runtime);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(runtime.clone())
            .route("/wake/{user}/{function}", web::post().to(wake))
            .default_service(web::to(|| async {
                error(HttpResponse::NotFound(), "not_found", "no such endpoint")
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, bound))
}

fn error(mut builder: actix_web::HttpResponseBuilder, code: &str, message: &str) -> HttpResponse {
    builder.json(json!({"error": code, "message": message}))
}

async fn wake(runtime: web::Data<KubeRuntime>, path: web::Path<(String, String)>) -> HttpResponse {
    let (user, function) = path.into_inner();
    if UserName::parse(&user).is_err() || FunctionName::parse(&function).is_err() {
        return error(
            HttpResponse::BadRequest(),
            "invalid_name",
            "not a user and function name",
        );
    }
    let runtime = runtime.into_inner();
    match runtime.wake(&user, &function).await {
        Ok(outcome) => HttpResponse::Ok().json(json!({"outcome": match outcome {
            WakeOutcome::Scaled => "scaled",
            WakeOutcome::Shared => "shared",
            WakeOutcome::AlreadyUp => "already_up",
        }})),
        Err(WakeError::NoSuchFunction) => {
            error(HttpResponse::NotFound(), "not_found", "no such function")
        }
        Err(e) => {
            tracing::warn!(user, function, error = %e, "waking a function failed");
            error(
                HttpResponse::ServiceUnavailable(),
                "wake_failed",
                "the function could not be woken; try again",
            )
        }
    }
}
