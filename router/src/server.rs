//! The HTTP/1.1 server loop: accepts connections, serves each with hyper, and
//! on shutdown stops accepting and lets open requests finish (bounded).

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy;
use crate::state::RouterState;

/// Slow clients get this long to send their request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers above this size are refused (431).
const MAX_HEADER_BYTES: usize = 64 * 1024;

pub async fn serve(
    listener: TcpListener,
    state: Arc<RouterState>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let peer = proxy::peer_header(peer);
                let svc = service_fn(move |req| proxy::handle(state.clone(), peer.clone(), req));
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = crate::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}
