//! The HTTP/1.1 server loop: accepts connections, serves each with hyper, and
//! on shutdown stops accepting and lets open requests finish (bounded).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};

use crate::console_cors;
use crate::forwarding::Peer;
use crate::state::RouterState;

/// Slow clients get this long to send their request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers above this size are refused (431).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Resolves once the stop flag is set (the watch guard is dropped inside, so
/// callers' futures stay `Send`).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<RouterState>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    // Each connection task holds a clone; the receiver sees `None` once all ended.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
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
                // Who the peer is and whether it is trusted: decided once per connection.
                let peer = Peer::new(peer, &state.trusted_proxies);
                let io = TimedWrite::new(stream, state.response_write_timeout);
                let state = state.clone();
                let svc = service_fn(move |req| console_cors::handle(state.clone(), peer.clone(), req));
                // `with_upgrades`: a WebSocket's 101 hands the connection to its tunnel.
                let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
                tokio::spawn(serve_until_stopped(conn, stop.clone(), open_tx.clone()));
            }
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    drop(open_tx);
    let _ = tokio::time::timeout(grace, open_rx.recv()).await;
}

/// Serves one connection; once the router stops, lets its open request
/// finish and then ends it (hyper-util's `GracefulShutdown` does not take
/// connections that may upgrade). `_open` says the connection is still served.
async fn serve_until_stopped<C>(conn: C, mut stop: watch::Receiver<bool>, _open: mpsc::Sender<()>)
where
    C: Future + GracefulEnd,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped(&mut stop) => conn.as_mut().end_gracefully(),
    }
    conn.await;
}

/// A connection that can be asked to finish its current request and end.
trait GracefulEnd {
    fn end_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulEnd for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn end_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The client's socket, failing writes once the client has taken none of our
/// bytes for `limit`: hyper then drops the connection, and with it the response
/// body that holds the function's concurrency slot. Without this a client that
/// never reads keeps that slot for as long as it keeps the connection open.
struct TimedWrite {
    io: TcpStream,
    limit: Duration,
    /// Made the first time a write has to wait; re-armed after progress.
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl TimedWrite {
    fn new(io: TcpStream, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stall: None,
            armed: false,
        }
    }

    /// After a write that had to wait: `Ready(error)` once the client has
    /// taken nothing for `limit`, else `Pending` (woken by the socket or the clock).
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.limit;
        let sleep = match &mut self.stall {
            Some(s) => {
                if !self.armed {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .stall
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.waiting(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl AsyncRead for TimedWrite {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progress(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
