//! Where the launcher binary is: `SKIFF_SANDBOX` if set, else next to the
//! service's own executable (how it is installed and shipped in the images),
//! else one level up (test binaries live in `target/<profile>/deps/`), else on
//! `PATH`. A service without it refuses to start: running tenant code without
//! the sandbox is never a silent fallback.

use std::path::{Path, PathBuf};

pub const BINARY: &str = "skiff-sandbox";

#[derive(Debug, thiserror::Error)]
#[error(
    "the sandbox launcher `{BINARY}` was not found ({0}); build it with \
     `cargo build -p skiff-sandbox` and keep it next to the service's binary, or set SKIFF_SANDBOX"
)]
pub struct NotFound(String);

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, NotFound> {
    if let Some(p) = explicit {
        return if executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(NotFound(format!(
                "SKIFF_SANDBOX={} is not an executable file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(BINARY);
            if executable(&candidate) {
                return Ok(candidate);
            }
            tried.push(dir.display().to_string());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(BINARY);
            if executable(&candidate) {
                return Ok(candidate);
            }
        }
        tried.push("PATH".into());
    }
    Err(NotFound(format!("looked in {}", tried.join(", "))))
}
