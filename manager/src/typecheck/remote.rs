//! The checker as a separate process (`skiff-manager checker`), reached over a
//! Unix socket. In Kubernetes it runs in its own container of the manager's
//! pod, as another uid, without the manager's secrets in its environment: what
//! a tenant's source can make the checker do never happens where the JWT key
//! or the database password live.
//!
//! One request per connection: the client writes the build request as one
//! JSON line, then the upload's bytes, and closes its sending half; the server
//! answers one JSON object (the built version, or the error) and closes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{BuildRequest, Built, CheckError, LocalChecker, StepTimes};

/// The request line read at most.
const MAX_REQUEST_LINE: usize = 4096;

/// The checker's answer; `times` (the steps' durations, for the manager's
/// metrics) may be missing from an older checker's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    Built {
        built: Built,
        #[serde(default)]
        times: StepTimes,
    },
    Failed {
        code: String,
        message: String,
        #[serde(default)]
        times: StepTimes,
    },
}

impl Answer {
    /// A refusal before any step ran.
    fn refused(code: &str, message: String) -> Self {
        Answer::Failed {
            code: code.into(),
            message,
            times: StepTimes::default(),
        }
    }

    pub fn new(r: Result<Built, CheckError>, times: StepTimes) -> Self {
        match r {
            Ok(built) => Answer::Built { built, times },
            Err(CheckError::Internal(e)) => {
                tracing::error!(error = %format!("{e:#}"), "a build failed inside the checker");
                Answer::Failed {
                    code: "checker_unavailable".into(),
                    message: "the checker failed; its log says why".into(),
                    times,
                }
            }
            Err(e) => Answer::Failed {
                code: e.code().into(),
                message: e.to_string(),
                times,
            },
        }
    }

    pub fn into_parts(self) -> (Result<Built, CheckError>, StepTimes) {
        match self {
            Answer::Built { built, times } => (Ok(built), times),
            Answer::Failed {
                code,
                message,
                times,
            } => (Err(CheckError::from_code(&code, message)), times),
        }
    }
}

/// The manager's side: sends each source to the checker's socket.
#[derive(Clone)]
pub struct RemoteChecker {
    socket: PathBuf,
    /// The checker's own limit plus room for the exchange.
    timeout: Duration,
    /// Most bytes of an answer read (the artifact and the lock file).
    max_answer: u64,
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
    pub fn new(socket: PathBuf, check_timeout: Duration, max_artifact_bytes: usize) -> Self {
        Self {
            socket,
            // Several sandboxed steps, each within the checker's limit.
            timeout: check_timeout * 4 + Duration::from_secs(10),
            max_answer: (max_artifact_bytes as u64).saturating_mul(3) + (1 << 20),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The build and its steps' times as the checker measured them.
    pub async fn build_timed(&self, req: BuildRequest) -> (Result<Built, CheckError>, StepTimes) {
        match self.exchange(req).await {
            Ok(answer) => answer.into_parts(),
            Err(e) => (Err(e), StepTimes::default()),
        }
    }

    pub async fn build(&self, req: BuildRequest) -> Result<Built, CheckError> {
        self.build_timed(req).await.0
    }

    async fn exchange(&self, req: BuildRequest) -> Result<Answer, CheckError> {
        let exchange = async {
            let mut s = UnixStream::connect(&self.socket).await?;
            let mut head = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
            head.push(b'\n');
            s.write_all(&head).await?;
            s.write_all(&req.body).await?;
            s.shutdown().await?;
            let mut buf = Vec::new();
            (&mut s).take(self.max_answer).read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => return Err(unreachable(&self.socket, &e)),
            Err(_) => return Err(unreachable(&self.socket, &"no answer in time")),
        };
        match serde_json::from_slice::<Answer>(&buf) {
            Ok(a) => Ok(a),
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
    let limit = u64::try_from(max_bytes + MAX_REQUEST_LINE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    (&mut s).take(limit).read_to_end(&mut buf).await?;
    let answer: Answer = match buf.iter().position(|b| *b == b'\n') {
        Some(n) if n <= MAX_REQUEST_LINE => {
            match serde_json::from_slice::<BuildRequest>(&buf[..n]) {
                Ok(mut req) if buf.len() - n - 1 <= max_bytes => {
                    req.body = buf[n + 1..].to_vec();
                    let (result, times) = checker.build_timed(req).await;
                    Answer::new(result, times)
                }
                Ok(_) => Answer::refused(
                    "payload_too_large",
                    format!("the upload is larger than {max_bytes} bytes"),
                ),
                Err(e) => Answer::refused("bad_upload", format!("unreadable build request: {e}")),
            }
        }
        _ => Answer::refused("bad_upload", "no build request line".into()),
    };
    let body = serde_json::to_vec(&answer).unwrap_or_else(|_| {
        b"{\"result\":\"failed\",\"code\":\"checker_unavailable\",\"message\":\"\"}".to_vec()
    });
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
