//! CORS for the web console's "try it" panel, and for nothing else.
//!
//! The console is served by the manager, another origin than the router. The
//! router lets exactly the origins in `SKIFF_CONSOLE_ORIGINS` (`skiff dev`:
//! its own manager) read a function's answer, and only without credentials:
//! it never sends `Access-Control-Allow-Credentials`, so a browser will not
//! attach cookies or HTTP auth to such a call, and any other web page still
//! cannot read what a function answers a visitor (a function on an intranet
//! stays unreadable from the internet). A function that sets
//! `Access-Control-Allow-Origin` itself keeps its own policy.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderValue, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{ProxyBody, full};
use crate::forwarding::Peer;
use crate::proxy;
use crate::state::RouterState;

/// The origins allowed to read answers, normalised (`scheme://host[:port]`,
/// lower case, no default port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleOrigins(pub Vec<String>);

impl std::str::FromStr for ConsoleOrigins {
    type Err = String;

    /// A comma-separated list of origins such as `https://skiff.example.com`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(normalise(part).ok_or_else(|| {
                format!(
                    "{part:?} is not an origin: write scheme://host[:port], e.g. https://console.example.com"
                )
            })?);
        }
        Ok(ConsoleOrigins(out))
    }
}

fn normalise(origin: &str) -> Option<String> {
    let lower = origin.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let ok = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    if host.is_empty() || !host.chars().all(ok) || host.starts_with(':') {
        return None;
    }
    let host = host.strip_suffix(default_port).unwrap_or(host);
    Some(format!("{scheme}://{host}"))
}

/// The allowed origins; `skiff dev` sets them once its manager listens.
#[derive(Debug, Default)]
pub struct AllowedOrigins(RwLock<Arc<[String]>>);

impl AllowedOrigins {
    pub fn new(origins: &ConsoleOrigins) -> Self {
        Self(RwLock::new(origins.0.clone().into()))
    }

    pub fn set(&self, origins: &ConsoleOrigins) {
        if let Ok(mut w) = self.0.write() {
            *w = origins.0.clone().into();
        }
    }

    fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        let list = self.0.read().ok()?.clone();
        let text = origin.to_str().ok()?;
        list.iter().any(|o| o == text).then(|| origin.clone())
    }
}

/// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// from an allowed origin; `None`: the request goes to the function.
pub fn preflight(
    method: &Method,
    headers: &HeaderMap,
    allowed: &AllowedOrigins,
) -> Option<Response<ProxyBody>> {
    if method != Method::OPTIONS {
        return None;
    }
    let asked = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.clone();
    let origin = allowed.allowed(headers)?;
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, asked);
    if let Some(names) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, names.clone());
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.append(VARY, HeaderValue::from_static("Origin"));
    Some(res)
}

/// Lets an allowed origin read `res` (unless the function set its own policy).
pub fn allow_reading(request: &HeaderMap, res: &mut Response<ProxyBody>, allowed: &AllowedOrigins) {
    if let Some(origin) = allowed.allowed(request) {
        grant(origin, res);
    }
}

/// Lets `origin` (already found allowed) read `res`.
fn grant(origin: HeaderValue, res: &mut Response<ProxyBody>) {
    let h = res.headers_mut();
    if h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
    h.append(VARY, HeaderValue::from_static("Origin"));
}

/// The router's service: the console's CORS around the proxy.
pub async fn handle(
    state: Arc<RouterState>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if !req.headers().contains_key(ORIGIN) {
        return proxy::handle(state, peer, req).await;
    }
    if let Some(res) = preflight(req.method(), req.headers(), &state.console_origins) {
        return Ok(res);
    }
    // Decided before the request is handed on: one header kept, not a copy
    // of them all.
    let origin = state.console_origins.allowed(req.headers());
    let mut res = proxy::handle(state, peer, req).await?;
    if let Some(origin) = origin {
        grant(origin, &mut res);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &str) -> AllowedOrigins {
        AllowedOrigins::new(&list.parse().unwrap_or_default())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_are_normalised_and_anything_else_refused() {
        let o: ConsoleOrigins = " HTTPS://Console.Example.com:443/ , http://127.0.0.1:8080"
            .parse()
            .unwrap_or_default();
        assert_eq!(
            o.0,
            ["https://console.example.com", "http://127.0.0.1:8080"]
        );
        for bad in [
            "*",
            "console.example.com",
            "ftp://x",
            "https://",
            "https://x/path",
            "https://a b",
        ] {
            assert!(bad.parse::<ConsoleOrigins>().is_err(), "{bad}");
        }
        assert_eq!(
            "".parse::<ConsoleOrigins>().ok(),
            Some(ConsoleOrigins(vec![]))
        );
    }

    #[test]
    fn only_the_console_origin_may_read_and_never_with_credentials() {
        let a = allowed("http://127.0.0.1:8080");
        let mut res = Response::new(full("hi"));
        allow_reading(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            &mut res,
            &a,
        );
        assert_eq!(
            res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://127.0.0.1:8080"
        );
        assert!(
            !res.headers()
                .contains_key("access-control-allow-credentials")
        );
        assert_eq!(res.headers()[VARY], "Origin");
        for other in ["https://evil.example", "http://127.0.0.1:8081", "null"] {
            let mut res = Response::new(full("hi"));
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static(other));
            allow_reading(&h, &mut res, &a);
            assert!(
                !res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                "{other}"
            );
        }
        // None configured: nobody.
        let mut res = Response::new(full("hi"));
        allow_reading(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            &mut res,
            &allowed(""),
        );
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn a_function_keeps_its_own_cors_policy() {
        let a = allowed("http://127.0.0.1:8080");
        let mut res = Response::new(full("hi"));
        res.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://mine.example"),
        );
        allow_reading(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            &mut res,
            &a,
        );
        assert_eq!(
            res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://mine.example"
        );
    }

    #[test]
    fn preflights_of_the_console_are_answered_others_reach_the_function() {
        let a = allowed("http://127.0.0.1:8080");
        let asked = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type,x-demo"),
        ]);
        let res = preflight(&Method::OPTIONS, &asked, &a);
        let res = res.as_ref().map(|r| (r.status(), r.headers().clone()));
        let (status, h) = res.unwrap_or_else(|| panic!("no preflight answer"));
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "content-type,x-demo");
        // Another origin's preflight, or a plain OPTIONS: the function's.
        let other = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(preflight(&Method::OPTIONS, &other, &a).is_none());
        let plain = headers(&[("origin", "http://127.0.0.1:8080")]);
        assert!(preflight(&Method::OPTIONS, &plain, &a).is_none());
        assert!(preflight(&Method::GET, &asked, &a).is_none());
    }
}
