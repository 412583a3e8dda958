//! The OpenAPI document (generated from the handlers' annotations) and a plain
//! HTML page rendered from it on the server, so the API reference works offline.

use std::fmt::Write;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, config, functions, health, logs, stats};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = api.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Skiff manager API",
        description = "Users, tokens and functions. Errors always have the body \
            `{\"error\":{\"code\":\"<snake_case>\",\"message\":\"<text>\"}}`."
    ),
    paths(
        health::healthz,
        health::readyz,
        accounts::register,
        accounts::login,
        accounts::revoke_tokens,
        functions::deploy,
        functions::list,
        functions::info,
        functions::code,
        functions::remove,
        logs::logs,
        stats::stats,
        config::get_config,
        config::patch_config,
        config::put_secret,
        config::delete_secret,
        config::rollback,
        config::version_code,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()))
}

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

pub async fn page() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let html = PAGE.get_or_init(|| {
        let doc: Value = serde_json::from_str(document()).unwrap_or(Value::Null);
        render(&doc)
    });
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html.as_str())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Renders every operation with its parameters, body and responses.
fn render(doc: &Value) -> String {
    let mut h = String::new();
    let title = esc(text(&doc["info"]["title"]));
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         code,pre{{background:#f4f4f4;padding:.1rem .3rem}}h2{{border-top:1px solid #ccc;padding-top:1rem}}\
         .m{{font-weight:bold;text-transform:uppercase}}td{{padding:.2rem .6rem;vertical-align:top}}</style>\
         </head><body><h1>{title}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>",
        esc(text(&doc["info"]["description"]))
    );
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                let _ = write!(
                    h,
                    "<h2><span class=\"m\">{}</span> <code>{}</code></h2><p>{}</p>",
                    esc(method),
                    esc(path),
                    esc(text(&op["summary"]))
                );
                if op.get("security").is_some() {
                    h.push_str("<p>Needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>");
                }
                if let Some(params) = op["parameters"].as_array() {
                    h.push_str("<h3>Parameters</h3><table>");
                    for p in params {
                        let _ = write!(
                            h,
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                            esc(text(&p["name"])),
                            esc(text(&p["in"])),
                            esc(text(&p["description"]))
                        );
                    }
                    h.push_str("</table>");
                }
                if let Some(body) = op["requestBody"]["content"].as_object() {
                    let kinds: Vec<_> = body.keys().map(|k| esc(k)).collect();
                    let _ = write!(h, "<h3>Body</h3><p>{}</p>", kinds.join(", "));
                }
                if let Some(resps) = op["responses"].as_object() {
                    h.push_str("<h3>Responses</h3><table>");
                    for (code, r) in resps {
                        let _ = write!(
                            h,
                            "<tr><td><code>{}</code></td><td>{}</td></tr>",
                            esc(code),
                            esc(text(&r["description"]))
                        );
                    }
                    h.push_str("</table>");
                }
            }
        }
    }
    h.push_str("</body></html>");
    h
}
