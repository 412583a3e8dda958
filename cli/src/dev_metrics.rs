//! `skiff dev --metrics-addr`: one Prometheus endpoint (`GET /metrics`) for
//! both services of the process.
//!
//! Both run here, so each scrape asks each for its text in-process (the
//! Prometheus text format) and joins them; neither service opens a metrics
//! listener of its own. Their family names differ (the manager's are about
//! deploys, logins and its API, the router's about requests and instances),
//! so the joined text is one valid exposition.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use skiff_manager::metrics::{CONTENT_TYPE as TEXT_FORMAT, Metrics};
use tokio::net::TcpListener;

/// A service's metrics in the Prometheus text format.
pub type Render = Box<dyn Fn() -> String + Send + Sync>;

/// Whose metrics one scrape joins.
pub struct Sources {
    pub manager: Arc<Metrics>,
    /// The router's text (`None`: a router without metrics).
    pub router: Option<Render>,
}

impl Sources {
    /// Both services' families, the router's first.
    pub fn text(&self) -> String {
        let mut text = self.router.as_ref().map(|r| r()).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&self.manager.encode_text());
        text
    }
}

/// Answers `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&req, &sources);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended early");
            }
        });
    }
}

fn answer(req: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let mut res = Response::new(Full::new(Bytes::from(sources.text())));
    res.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(TEXT_FORMAT),
    );
    res
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manager() -> Arc<Metrics> {
        let m = Metrics::new(false);
        m.deploy_finished("ok", Duration::from_millis(10));
        Arc::new(m)
    }

    #[test]
    fn the_routers_families_come_first_then_the_managers() {
        let sources = Sources {
            manager: manager(),
            router: Some(Box::new(|| {
                "# TYPE skiff_requests_total counter\nskiff_requests_total 3".to_owned()
            })),
        };
        let text = sources.text();
        assert!(
            text.starts_with("# TYPE skiff_requests_total counter\nskiff_requests_total 3\n# HELP"),
            "{text}"
        );
        assert!(
            text.contains("skiff_deploys_total{result=\"ok\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn without_router_metrics_the_managers_are_served() {
        let m = manager();
        let sources = Sources {
            manager: m.clone(),
            router: None,
        };
        assert_eq!(sources.text(), m.encode_text());
    }
}
