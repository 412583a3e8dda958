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

/// True when every directory above `p` lets others through and `p` itself
/// lets others execute it.
fn reachable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors()
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// `binary` itself when other users can run it, else a copy of it in
/// `<dir>/bin/` (mode 0755) that they can: a Deno installed under `/root`
/// (mode 0700) cannot be run by a function's or a checker's uid otherwise.
pub fn runnable_by_others(binary: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if reachable_by_others(binary) {
        return Ok(binary.to_path_buf());
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let name = binary
        .file_name()
        .unwrap_or_else(|| std::ffi::OsStr::new("program"));
    let copy = bin.join(name);
    let same = std::fs::metadata(&copy)
        .and_then(|c| {
            std::fs::metadata(binary).map(|o| o.size() == c.size() && o.mtime() <= c.mtime())
        })
        .unwrap_or(false);
    if !same {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = bin.join(tmp_name);
        std::fs::copy(binary, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &copy)?;
    }
    Ok(copy)
}
