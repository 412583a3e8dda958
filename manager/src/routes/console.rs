//! The web console (console/, built into console-dist/ by
//! scripts/build-console.sh): three files embedded in the binary, served with
//! a strict Content-Security-Policy. It talks to this API with the same
//! bearer tokens, so it needs no handler of its own.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &[u8] = include_bytes!("../../console-dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../console-dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../console-dist/app.css");

/// The policy of every console file: scripts and styles from this origin
/// only (no inline script or style), API calls to this origin, and the
/// "try it" panel's calls to the router's origin (`SKIFF_PUBLIC_URL`);
/// no framing, no plugins, no forms posted anywhere, no `<base>`.
pub fn content_security_policy(public_url: &str) -> String {
    let router = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| format!(" {}", o.ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{router}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

fn file(state: &AppState, content_type: &str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((
            "Content-Security-Policy",
            content_security_policy(&state.config.public_url),
        ))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        // A new manager may ship a new console: always revalidate.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /`: the console's page.
pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    file(&state, "text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: its script and style sheet.
pub async fn asset(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match path.as_str() {
        "app.js" => Ok(file(&state, "text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(file(&state, "text/css; charset=utf-8", APP_CSS)),
        _ => Err(ApiError::NotFound("no such console file".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_router_origin_and_nothing_inline() {
        let csp = content_security_policy("https://fn.example.com/base/");
        assert!(
            csp.contains("connect-src 'self' https://fn.example.com;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        // A public URL that is no origin adds nothing (and breaks nothing).
        let csp = content_security_policy("not a url");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
    }
}
