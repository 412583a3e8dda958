//! Telling routers of a deploy or a delete (`SKIFF_ROUTER_NOTIFY`), so that a
//! router serves the new version as soon as the deploy is answered instead of
//! at its next poll of the change feed. Each router's private listener takes
//! `POST /sync` and answers once its directory holds the change.
//!
//! It is a hint, never the source of truth: the change is already committed,
//! the routers keep polling, and a router that is down or slow only delays
//! the deploy's answer by [`WAIT`] at most (and is logged). A `/sync` carries
//! nothing, so nothing about a tenant leaves the manager this way.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use skiff_core::names::FunctionName;
use skiff_core::store::StoreError;
use tokio::net::TcpStream;

use crate::runtime::{FunctionRuntime, RuntimeFuture, RuntimeStatus};

/// The longest a deploy's answer waits for one router.
const WAIT: Duration = Duration::from_secs(2);

/// The routers' private listeners, `host:port` each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterAddrs(pub Vec<String>);

#[derive(Debug, thiserror::Error)]
#[error("SKIFF_ROUTER_NOTIFY: {0:?} is not host:port")]
pub struct BadRouterAddr(String);

impl FromStr for RouterAddrs {
    type Err = BadRouterAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ok = match part.rsplit_once(':') {
                Some((host, port)) => {
                    !host.is_empty()
                        && !host.contains('/')
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                }
                None => false,
            };
            if !ok {
                return Err(BadRouterAddr(part.to_owned()));
            }
            out.push(part.to_owned());
        }
        Ok(Self(out))
    }
}

/// The process runtime's seam when routers are to be told (`AppState::runtime`).
pub struct RouterNotifier {
    routers: Arc<[String]>,
}

impl RouterNotifier {
    pub fn new(routers: &RouterAddrs) -> Self {
        Self {
            routers: routers.0.clone().into(),
        }
    }

    /// Tells every router at once; returns when each has answered or
    /// [`WAIT`] has passed.
    async fn tell_all(&self) {
        let calls = self.routers.iter().map(|addr| async move {
            match tokio::time::timeout(WAIT, sync(addr)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(router = %addr, error = %e, "could not tell the router; it will see the change at its next poll")
                }
                Err(_) => {
                    tracing::warn!(router = %addr, "the router did not answer in time; it will see the change at its next poll")
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }
}

/// One `POST /sync` to `addr`.
async fn sync(addr: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post("/sync")
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())?;
    let res = send.send_request(req).await;
    conn.abort();
    let status = res?.status();
    anyhow::ensure!(status.is_success(), "answered {status}");
    Ok(())
}

impl FunctionRuntime for RouterNotifier {
    fn deployed<'a>(&'a self, _user: &'a str, _function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(self.tell_all())
    }

    fn deleted<'a>(&'a self, _user: &'a str, _function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(self.tell_all())
    }

    fn status<'a>(
        &'a self,
        _user_id: i64,
        _function: &'a FunctionName,
        _live_version: i64,
    ) -> RuntimeFuture<'a, Result<Option<RuntimeStatus>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        let a: RouterAddrs = " 127.0.0.1:9464, router-0.router:9464,[::1]:1 "
            .parse()
            .unwrap();
        assert_eq!(a.0, ["127.0.0.1:9464", "router-0.router:9464", "[::1]:1"]);
        assert_eq!("".parse::<RouterAddrs>().unwrap(), RouterAddrs::default());
        for bad in ["router", "router:", ":9464", "r:0", "r:70000", "http://r:1"] {
            assert!(bad.parse::<RouterAddrs>().is_err(), "{bad}");
        }
    }
}
