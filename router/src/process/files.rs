//! A function version's code on disk: `<data>/functions/<user>/<name>/v<N>/`
//! holding `fn.ts` (the user's module; the client runtime is shared, see
//! `runtime_files`) and, once it has run, `.deno/` (its Deno cache). Written
//! once per version, atomically (temp dir + rename), readable by that function's
//! identity only, writable by nobody but the router.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use skiff_core::layout::Layout;
use skiff_core::store::Store;

use crate::directory::FunctionRef;

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// Makes sure the code of `f`'s live version is on disk; returns its directory.
/// `None` when the version no longer exists in the store.
pub async fn ensure_code(
    layout: &Layout,
    store: &Store,
    f: &FunctionRef,
    owner_gid: Option<u32>,
) -> anyhow::Result<Option<PathBuf>> {
    let dir = layout.version_dir(&f.user, &f.name, f.version);
    if dir.join("fn.ts").is_file() {
        return Ok(Some(dir));
    }
    let Some(source) = store.version_source(f.function_id, f.version).await? else {
        return Ok(None);
    };
    let parent = layout.function_dir(&f.user, &f.name);
    tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || write_version(&parent, &dir, &source, owner_gid)
    })
    .await
    .context("writing function code")??;
    Ok(Some(dir))
}

fn write_version(parent: &Path, dir: &Path, source: &[u8], gid: Option<u32>) -> anyhow::Result<()> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // Traversable, not listable, for the function identities.
    for d in [parent, parent.parent().unwrap_or(parent)] {
        set_mode(d, 0o711)?;
    }
    let tmp = parent.join(format!(".tmp-{}", rand_suffix()));
    std::fs::create_dir(&tmp)?;
    std::fs::write(tmp.join("fn.ts"), source)?;
    set_mode(&tmp.join("fn.ts"), 0o640)?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(tmp.join("fn.ts"), Some(0), Some(g))?;
    }
    if let Some(g) = gid {
        std::os::unix::fs::chown(&tmp, Some(0), Some(g))?;
        set_mode(&tmp, 0o750)?;
    } else {
        set_mode(&tmp, 0o700)?;
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another start wrote the same version first; its copy is as good.
        Err(_) if dir.join("fn.ts").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e).with_context(|| format!("renaming into {}", dir.display()))
        }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes every version of a deleted function.
pub fn remove_function(layout: &Layout, user: &str, name: &str) {
    let _ = std::fs::remove_dir_all(layout.function_dir(user, name));
    skiff_core::logs::remove(layout, user, name);
}

/// Removes the code of versions other than `keep`.
pub fn remove_old_versions(layout: &Layout, user: &str, name: &str, keep: &[i64]) {
    let Ok(entries) = std::fs::read_dir(layout.function_dir(user, name)) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let n = file_name.to_string_lossy();
        let version = n.strip_prefix('v').and_then(|v| v.parse::<i64>().ok());
        if version.is_some_and(|v| !keep.contains(&v)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
