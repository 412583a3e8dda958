//! The web console's "try it" through the router: the console's origin
//! (`SKIFF_CONSOLE_ORIGINS`) may read a function's answers, another page may
//! not, nobody is offered credentials, and a function's own CORS policy wins.

use skiff_router::config::RouterConfig;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, stack_with};

const CONSOLE: &str = "http://console.example:8080";

const FUNCTION: &str = r#"export default (req: Request) => {
  if (new URL(req.url).pathname === "/own") {
    return new Response("own", {
      headers: { "access-control-allow-origin": "https://partner.example" },
    });
  }
  return new Response("hi " + req.method);
};
"#;

fn console_allowed(r: &mut RouterConfig) {
    r.console_origins = CONSOLE.parse().unwrap_or_default();
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn only_the_console_origin_reads_answers_and_never_with_credentials() {
    let s = stack_with(
        TestBackend::Sqlite,
        Opts {
            tune_router: console_allowed,
            ..Opts::default()
        },
    )
    .await;
    let t = s.token("alice").await;
    s.deploy(&t, "cors", FUNCTION).await;
    s.until("alice", "cors", |st, _| st == 200).await;
    let url = s.url("alice", "cors", "/");
    let call = |method: reqwest::Method, origin: Option<&str>| {
        let mut r = s.client.request(method, &url);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };

    // The console reads the answer, without credentials.
    let r = call(reqwest::Method::GET, Some(CONSOLE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(CONSOLE)
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(header(&r, "vary").is_some_and(|v| v.contains("Origin")));
    assert_eq!(r.text().await.unwrap(), "hi GET");

    // Any other page's call still reaches the function, but the browser is
    // not let read it; neither is a call with no origin given anything.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let r = call(reqwest::Method::GET, origin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            None,
            "{origin:?}"
        );
    }

    // The console's preflight is answered by the router…
    let r = call(reqwest::Method::OPTIONS, Some(CONSOLE))
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "x-custom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(CONSOLE)
    );
    assert_eq!(
        header(&r, "access-control-allow-methods").as_deref(),
        Some("PUT")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers").as_deref(),
        Some("x-custom")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    // …another page's goes to the function, which allows nothing.
    let r = call(reqwest::Method::OPTIONS, Some("https://evil.example"))
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(r.text().await.unwrap(), "hi OPTIONS");

    // A function with a policy of its own keeps it, even for the console.
    let r = s
        .client
        .get(s.url("alice", "cors", "/own"))
        .header("origin", CONSOLE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://partner.example")
    );
}
