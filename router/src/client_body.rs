//! The caller's request body on its way to the function: limited in size, cut
//! off when the caller stops sending, and every failure marked as the caller's,
//! so the router answers 4xx for it instead of blaming the function with 502.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;
use crate::error::RouterError;
use crate::metrics::FunctionMetrics;

/// Why the caller's body could not be passed on. Found again in the upstream
/// client's error chain by `ClientBodyError::find`.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Invalid chunked framing, a body shorter than its `Content-Length`, the
    /// connection closed or reset mid-body.
    #[error("the request body is malformed or was cut short")]
    Malformed(#[source] hyper::Error),
    #[error("the request body stalled")]
    Stalled(Duration),
    #[error("the request body is over the limit")]
    TooLarge(u64),
}

impl ClientBodyError {
    /// The caller's body error somewhere in `e`'s source chain, if that is what
    /// made a request fail.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(found) = err.downcast_ref::<Self>() {
                return Some(found);
            }
            cur = err.source();
        }
        None
    }

    pub fn to_router_error(&self) -> RouterError {
        match self {
            Self::Malformed(_) => {
                RouterError::BadRequest("the request body is malformed or was cut short")
            }
            Self::Stalled(d) => RouterError::BodyTimeout(*d),
            Self::TooLarge(n) => RouterError::PayloadTooLarge(*n),
        }
    }
}

pub struct ClientBody {
    inner: Incoming,
    limit: u64,
    /// Bytes still allowed under `limit`.
    left: u64,
    stall_limit: Duration,
    /// Made the first time the caller keeps us waiting; re-armed after progress.
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Told how many bytes went through, at the end.
    counted: Option<std::sync::Arc<FunctionMetrics>>,
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if let Some(m) = &self.counted {
            m.add_bytes_in(self.limit - self.left);
        }
    }
}

impl ClientBody {
    /// Counts the bytes passed on in `m` (once, when the body is dropped).
    pub fn counting(mut self, m: Option<std::sync::Arc<FunctionMetrics>>) -> Self {
        self.counted = m;
        self
    }

    pub fn new(inner: Incoming, limit: u64, stall_limit: Duration) -> Self {
        Self {
            inner,
            limit,
            left: limit,
            stall_limit,
            stall: None,
            armed: false,
            counted: None,
        }
    }

    /// Waiting for the caller: starts the stall clock if it is not running and
    /// says whether it has run out.
    fn stalled_out(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.stall_limit;
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
        sleep.as_mut().poll(cx).is_ready()
    }
}

fn fail(e: ClientBodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Err(Box::new(e))))
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.armed = false;
                    // Trailers are dropped: nothing a caller puts there (a
                    // forwarding header, say) should reach the function.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let len = data.len() as u64;
                    if len > this.left {
                        return fail(ClientBodyError::TooLarge(this.limit));
                    }
                    this.left -= len;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return fail(ClientBodyError::Malformed(e)),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if this.stalled_out(cx) {
                        return fail(ClientBodyError::Stalled(this.stall_limit));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
