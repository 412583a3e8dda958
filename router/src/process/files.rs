//! A function version's code on disk: `<data>/functions/<id>/v<N>/`
//! holding `fn.js` (the deploy-built artifact; `fn.ts` for a source stored
//! before artifacts existed, see `Layout::module_file`; the client runtime is shared, see
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
/// `None` when the version no longer exists in the store. A cached copy is
/// reused only when its bytes still hash to the version's sha256; anything
/// else there (a torn write, a stale copy) is replaced from the store.
pub async fn ensure_code(
    layout: &Layout,
    store: &Store,
    f: &FunctionRef,
    owner_gid: Option<u32>,
) -> anyhow::Result<Option<PathBuf>> {
    let dir = layout.version_dir(f.function_id, f.version);
    let cached = tokio::task::spawn_blocking({
        let module = Layout::module_file(f.bundled);
        let (layout, file, want) = (layout.clone(), dir.join(module), f.sha256.clone());
        let (id, version) = (f.function_id, f.version);
        move || {
            // A start is always of the newest version, so the code of the others is
            // never needed again (an instance still draining has its module loaded).
            remove_old_versions(&layout, id, &[version]);
            matches_sha256(&file, &want)
        }
    })
    .await
    .context("checking cached code")?;
    if cached {
        return Ok(Some(dir));
    }
    let Some(module) = store.version_module(f.function_id, f.version).await? else {
        return Ok(None);
    };
    let (source, file) = (module.code, Layout::module_file(module.bundled));
    if skiff_core::store::sha256_hex(&source) != f.sha256 || module.bundled != f.bundled {
        anyhow::bail!(
            "the stored code of version {} does not match its sha256",
            f.version
        );
    }
    let parent = layout.function_dir(f.function_id);
    tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || write_version(&parent, &dir, file, &source, owner_gid)
    })
    .await
    .context("writing function code")??;
    Ok(Some(dir))
}

/// Whether `file` exists and hashes to `sha256`.
fn matches_sha256(file: &Path, sha256: &str) -> bool {
    std::fs::read(file).is_ok_and(|b| skiff_core::store::sha256_hex(&b) == sha256)
}

fn write_version(
    parent: &Path,
    dir: &Path,
    file: &str,
    source: &[u8],
    gid: Option<u32>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // A copy that failed the hash check goes first.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    // Traversable, not listable, for the function identities.
    for d in [parent, parent.parent().unwrap_or(parent)] {
        set_mode(d, 0o711)?;
    }
    let tmp = parent.join(format!(".tmp-{}", rand_suffix()));
    std::fs::create_dir(&tmp)?;
    std::fs::write(tmp.join(file), source)?;
    set_mode(&tmp.join(file), 0o640)?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(tmp.join(file), Some(0), Some(g))?;
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
        Err(_) if dir.join(file).is_file() => {
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

/// Removes every version of a deleted function, and its log.
pub fn remove_function(layout: &Layout, function_id: i64) {
    let _ = std::fs::remove_dir_all(layout.function_dir(function_id));
    skiff_core::logs::remove(layout, function_id);
}

/// Removes the code and logs of every function not in `live` (at start: what
/// was deleted while the router was down, or left by an older layout).
pub fn sweep_not_live(layout: &Layout, live: &std::collections::HashSet<i64>) -> usize {
    let mut removed = 0;
    for dir in [layout.functions_dir(), layout.logs_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let keep =
                Layout::owner_id(&name.to_string_lossy()).is_some_and(|id| live.contains(&id));
            if keep {
                continue;
            }
            let path = e.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes the code of versions other than `keep`.
pub fn remove_old_versions(layout: &Layout, function_id: i64, keep: &[i64]) {
    let Ok(entries) = std::fs::read_dir(layout.function_dir(function_id)) else {
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
