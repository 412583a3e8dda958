//! Finding the Deno binary. `SKIFF_DENO` wins; otherwise `deno` on `PATH`. Package
//! managers often put a shell shim on `PATH` (pyenv adds ~120 ms to every start),
//! so the path is resolved once to the real executable via `Deno.execPath()`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DenoError {
    #[error(
        "Deno was not found: install it (e.g. `pip install deno`) or set SKIFF_DENO to its path"
    )]
    NotFound,
    #[error("{path} does not run as Deno: {reason}")]
    Broken { path: String, reason: String },
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Returns the real Deno executable.
pub async fn locate(explicit: Option<&Path>) -> Result<PathBuf, DenoError> {
    let candidate = match explicit {
        Some(p) => p.to_path_buf(),
        None => on_path("deno").ok_or(DenoError::NotFound)?,
    };
    let broken = |reason: String| DenoError::Broken {
        path: candidate.display().to_string(),
        reason,
    };
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&candidate)
            .args(["eval", "--no-config", "console.log(Deno.execPath())"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| broken("it did not answer within 30 s".into()))?
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DenoError::NotFound
        } else {
            broken(e.to_string())
        }
    })?;
    if !out.status.success() {
        return Err(broken(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let real = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if real.is_empty() {
        return Err(broken("it printed no path".into()));
    }
    Ok(PathBuf::from(real))
}
