//! The router's private listener (`SKIFF_METRICS_LISTEN`), never the public
//! port, since the metrics name every tenant's functions. It answers two
//! things: `GET /metrics`, and `POST /sync`, by which the manager tells the
//! router of a deploy or a delete (`SKIFF_ROUTER_NOTIFY` on the manager): the
//! router polls the change feed at once and answers `204` once its directory
//! holds the change, instead of the next poll finding it. A `/sync` carries
//! nothing and only brings a poll forward; pokes that arrive together share
//! one poll, so a flood of them costs the database no more than polling
//! continuously would.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Asks the directory syncer to poll now; the sender answers once applied.
pub type SyncNow = mpsc::Sender<oneshot::Sender<()>>;

async fn answer(
    metrics: &Metrics,
    sync: Option<&SyncNow>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::POST, "/sync") => match sync {
            Some(sync) => {
                let (tx, rx) = oneshot::channel();
                let applied = sync.send(tx).await.is_ok() && rx.await.is_ok();
                if applied {
                    (
                        StatusCode::NO_CONTENT,
                        "text/plain; charset=utf-8",
                        String::new(),
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        "the router is stopping\n".to_owned(),
                    )
                }
            }
            None => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "no sync here\n".to_owned(),
            ),
        },
        (_, "/sync") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only POST\n".to_owned(),
        ),
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, metrics.render())
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "the metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Resolves once the stop flag is set (the guard is dropped inside, so the
/// futures holding this stay `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves `/metrics` (and `/sync` when `sync` is given) on `listener` until
/// `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    sync: Option<SyncNow>,
    mut stop: watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let metrics = metrics.clone();
        let sync = sync.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let (metrics, sync) = (metrics.clone(), sync.clone());
            async move { Ok::<_, Infallible>(answer(&metrics, sync.as_ref(), &req).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(&mut conn_stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
