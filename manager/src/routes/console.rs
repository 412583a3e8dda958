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

/// Where the page carries its style nonce (see `index`).
const NONCE_SLOT: &str = "__CSP_NONCE__";

/// The policy of every console file: scripts from this origin only (no
/// inline script), styles from this origin and the one `<style>` element the
/// editor adds with this response's nonce (no inline style attributes), API
/// calls to this origin, and the "try it" panel's calls to the router's
/// origin (`SKIFF_PUBLIC_URL`); no framing, no plugins, no forms posted
/// anywhere, no `<base>`.
pub fn content_security_policy(public_url: &str, nonce: &str) -> String {
    let router = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| format!(" {}", o.ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; \
         connect-src 'self'{router}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// A fresh nonce: 128 random bits, hex.
fn nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file(
    state: &AppState,
    content_type: &str,
    nonce: &str,
    body: impl actix_web::body::MessageBody + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((
            "Content-Security-Policy",
            content_security_policy(&state.config.public_url, nonce),
        ))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        // A new manager may ship a new console: always revalidate.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /`: the console's page, with a nonce of its own for the editor's
/// `<style>` element.
pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    let nonce = nonce();
    let page = String::from_utf8_lossy(INDEX).replace(NONCE_SLOT, &nonce);
    file(&state, "text/html; charset=utf-8", &nonce, page)
}

/// `GET /console/{file}`: its script and style sheet.
pub async fn asset(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match path.as_str() {
        "app.js" => Ok(file(
            &state,
            "text/javascript; charset=utf-8",
            &nonce(),
            APP_JS,
        )),
        "app.css" => Ok(file(&state, "text/css; charset=utf-8", &nonce(), APP_CSS)),
        _ => Err(ApiError::NotFound("no such console file".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_router_origin_and_nothing_inline() {
        let csp = content_security_policy("https://fn.example.com/base/", "abc");
        assert!(
            csp.contains("connect-src 'self' https://fn.example.com;"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(
            INDEX
                .windows(NONCE_SLOT.len())
                .any(|w| w == NONCE_SLOT.as_bytes())
        );
        // Each page gets its own nonce.
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
        // A public URL that is no origin adds nothing (and breaks nothing).
        assert!(csp.contains("style-src 'self' 'nonce-abc';"), "{csp}");
        let csp = content_security_policy("not a url", "abc");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
    }
}
