//! Deploy-time validation of a function's source: the import policy (see
//! `imports`), then `deno check` in a scratch directory with a clean environment,
//! no remote or npm resolution, and the ambient types legacy svrless handlers need.

mod imports;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

pub use imports::forbidden_imports;

/// Types for `Deno.RequestEvent`, which Deno 2 dropped (client-runtime owns the file).
const SVRLESS_ENV: &str = include_str!("../../../client-runtime/svrless-env.d.ts");
const CHECK_CONFIG: &str = r#"{"compilerOptions":{"types":["./skiff-env.d.ts"]}}"#;
/// The diagnostics returned to the client are cut to this many bytes.
const MAX_DIAGNOSTICS: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The source is at fault; the message is for the uploader.
    #[error("{0}")]
    Rejected(String),
    /// The checker cannot run (no Deno); the deploy may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct TypeChecker {
    inner: Arc<Inner>,
}

struct Inner {
    deno: Result<PathBuf, String>,
    scratch: PathBuf,
    deno_dir: PathBuf,
    /// Each check holds ~200 MB for about a second; bound how many run at once.
    permits: Semaphore,
    timeout: Duration,
}

impl TypeChecker {
    /// `deno` is the located binary, or why there is none (reported on deploy).
    pub fn new(deno: Result<PathBuf, String>, data_dir: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                deno,
                scratch: data_dir.join("checks"),
                deno_dir: data_dir.join("deno-cache"),
                permits: Semaphore::new(2),
                timeout: Duration::from_secs(60),
            }),
        }
    }

    pub async fn check(&self, source: &str) -> Result<(), CheckError> {
        let found = forbidden_imports(source);
        if !found.is_empty() {
            return Err(CheckError::Rejected(format!(
                "a function is one self-contained file and may import only Node built-ins \
                 (node:…); not allowed here: {}",
                found.join(", ")
            )));
        }
        let deno = self
            .inner
            .deno
            .as_ref()
            .map_err(|why| CheckError::Unavailable(format!("cannot type-check: {why}")))?;
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .context("type-check semaphore")?;
        tokio::fs::create_dir_all(&self.inner.scratch)
            .await
            .with_context(|| format!("creating {}", self.inner.scratch.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("check-")
            .tempdir_in(&self.inner.scratch)
            .context("creating a scratch dir")?;
        let p = dir.path();
        tokio::fs::write(p.join("fn.ts"), source)
            .await
            .context("writing fn.ts")?;
        tokio::fs::write(p.join("skiff-env.d.ts"), SVRLESS_ENV)
            .await
            .context("writing skiff-env.d.ts")?;
        tokio::fs::write(p.join("deno.json"), CHECK_CONFIG)
            .await
            .context("writing deno.json")?;
        let child = tokio::process::Command::new(deno)
            .args([
                "check",
                "--no-remote",
                "--no-npm",
                "--no-lock",
                "--config",
                "deno.json",
                "fn.ts",
            ])
            .current_dir(p)
            .env_clear()
            .env("DENO_DIR", &self.inner.deno_dir)
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("HOME", p)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(self.inner.timeout, child).await {
            Ok(out) => out.context("running deno check")?,
            Err(_) => {
                return Err(CheckError::Rejected(format!(
                    "type checking took longer than {} s",
                    self.inner.timeout.as_secs()
                )));
            }
        };
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(CheckError::Rejected(clean_diagnostics(&text, p)))
    }
}

/// Makes the checker's output about the user's file only: no scratch paths, no
/// progress lines, bounded length.
fn clean_diagnostics(text: &str, dir: &Path) -> String {
    let url = format!("file://{}/", dir.display());
    let plain = format!("{}/", dir.display());
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("Check ") && !l.trim().is_empty())
        .filter(|l| !l.starts_with("Stack backtrace") && !l.trim_start().starts_with("0: <"))
        .map(|l| l.replace(&url, "").replace(&plain, ""))
        .collect::<Vec<_>>()
        .join("\n");
    if out.len() > MAX_DIAGNOSTICS {
        let mut cut = MAX_DIAGNOSTICS;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n… (diagnostics cut)");
    }
    if out.is_empty() {
        "the source does not type-check".into()
    } else {
        out
    }
}
