//! The checker as a separate process (`skiff-manager checker`), reached over a
//! Unix socket. In Kubernetes it runs in its own container of the manager's
//! pod, as another uid, without the manager's secrets in its environment: what
//! a tenant's source can make the checker do never happens where the JWT key
//! or the database password live.
//!
//! One request per connection: the client writes the source and closes its
//! sending half; the server answers one JSON object and closes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{CheckError, LocalChecker};

/// Most bytes of an answer read (diagnostics are cut to 16 KiB before).
const MAX_ANSWER: u64 = 256 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    Passed,
    Rejected { message: String },
    ImportNotAllowed { message: String },
    Unavailable { message: String },
}

impl From<Result<(), CheckError>> for Answer {
    fn from(r: Result<(), CheckError>) -> Self {
        match r {
            Ok(()) => Answer::Passed,
            Err(CheckError::Rejected(message)) => Answer::Rejected { message },
            Err(CheckError::ImportNotAllowed(message)) => Answer::ImportNotAllowed { message },
            Err(CheckError::Unavailable(message)) => Answer::Unavailable { message },
            Err(CheckError::Internal(e)) => {
                tracing::error!(error = %format!("{e:#}"), "a check failed inside the checker");
                Answer::Unavailable {
                    message: "the checker failed; its log says why".into(),
                }
            }
        }
    }
}

impl From<Answer> for Result<(), CheckError> {
    fn from(a: Answer) -> Self {
        match a {
            Answer::Passed => Ok(()),
            Answer::Rejected { message } => Err(CheckError::Rejected(message)),
            Answer::ImportNotAllowed { message } => Err(CheckError::ImportNotAllowed(message)),
            Answer::Unavailable { message } => Err(CheckError::Unavailable(message)),
        }
    }
}

/// The manager's side: sends each source to the checker's socket.
#[derive(Clone)]
pub struct RemoteChecker {
    socket: PathBuf,
    /// The checker's own limit plus room for the exchange.
    timeout: Duration,
}

fn unreachable(socket: &Path, e: &dyn std::fmt::Display) -> CheckError {
    tracing::error!(socket = %socket.display(), error = %e, "cannot reach the checker");
    CheckError::Unavailable(
        "deploys are unavailable: the type checker cannot be reached; \
         the operator's log says more"
            .into(),
    )
}

impl RemoteChecker {
    pub fn new(socket: PathBuf, check_timeout: Duration) -> Self {
        Self {
            socket,
            timeout: check_timeout * 2 + Duration::from_secs(10),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn check(&self, source: &str) -> Result<(), CheckError> {
        let exchange = async {
            let mut s = UnixStream::connect(&self.socket).await?;
            s.write_all(source.as_bytes()).await?;
            s.shutdown().await?;
            let mut buf = Vec::new();
            (&mut s).take(MAX_ANSWER).read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => return Err(unreachable(&self.socket, &e)),
            Err(_) => return Err(unreachable(&self.socket, &"no answer in time")),
        };
        match serde_json::from_slice::<Answer>(&buf) {
            Ok(a) => a.into(),
            Err(e) => Err(unreachable(
                &self.socket,
                &format!("unreadable answer: {e}"),
            )),
        }
    }
}

/// The checker's side: answers every connection on `listener` with a check.
/// Sources above `max_bytes` are refused without a check.
pub async fn serve(listener: UnixListener, checker: LocalChecker, max_bytes: usize) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let checker = checker.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &checker, max_bytes).await {
                tracing::debug!(error = %e, "a check request ended early");
            }
        });
    }
}

async fn answer(
    mut s: UnixStream,
    checker: &LocalChecker,
    max_bytes: usize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    (&mut s).take(limit).read_to_end(&mut buf).await?;
    let answer = if buf.len() > max_bytes {
        Answer::Rejected {
            message: format!("the source is larger than {max_bytes} bytes"),
        }
    } else {
        match std::str::from_utf8(&buf) {
            Ok(source) => checker.check(source).await.into(),
            Err(_) => Answer::Rejected {
                message: "the source is not UTF-8".into(),
            },
        }
    };
    let body = serde_json::to_vec(&answer)
        .unwrap_or_else(|_| b"{\"result\":\"unavailable\",\"message\":\"\"}".to_vec());
    s.write_all(&body).await?;
    s.shutdown().await
}

/// Binds the checker's socket: a stale one is replaced, and the socket is
/// made connectable by the manager's uid (the directory holding it is shared
/// by the two containers only).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}
