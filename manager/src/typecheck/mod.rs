//! Deploy-time validation of a function's source: the import policy (see
//! `imports`), then `deno check` in a scratch directory with a clean environment,
//! no remote or npm resolution, and the ambient types legacy svrless handlers need.

mod imports;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

pub use imports::forbidden_imports;

/// Types for `Deno.RequestEvent`, which Deno 2 dropped (client-runtime owns the file).
const SVRLESS_ENV: &str = include_str!("../../../client-runtime/svrless-env.d.ts");
const CHECK_CONFIG: &str = r#"{"compilerOptions":{"types":["./skiff-env.d.ts"]}}"#;
/// Checked beside the user's module: its default export must be what the client
/// runtime can serve (a function, or an object with a `fetch` method), so a
/// module the runtime would refuse to load is refused at deploy time instead.
const HANDLER_CHECK_FILE: &str = "skiff-handler.ts";
const HANDLER_CHECK: &str = "import handler from \"./fn.ts\";\n\
type SkiffHandler = ((...args: never[]) => unknown) | { fetch(...args: never[]): unknown };\n\
export const skiffHandler: SkiffHandler = handler;\n";
const HANDLER_HINT: &str = "the module's default export must be a function or an object \
    with a fetch(request) method, e.g. `export default (req: Request) => new Response(\"hi\")`";
/// The diagnostics returned to the client are cut to this many bytes.
const MAX_DIAGNOSTICS: usize = 16 * 1024;
/// Sources remembered as passed (64 bytes each).
const MAX_REMEMBERED_PASSES: usize = 10_000;
/// How often a missing Deno is looked for again.
const RELOCATE_EVERY: Duration = Duration::from_secs(5);

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
    /// The located binary, or why there is none, and when it was last looked
    /// for (`None`: look on the next deploy).
    deno: tokio::sync::Mutex<(Result<PathBuf, String>, Option<Instant>)>,
    /// When set, a missing Deno is looked for again (at most every
    /// `RELOCATE_EVERY`), from this explicit path or else on `PATH`, so installing
    /// Deno fixes deploys without a restart.
    relocate: Option<Option<PathBuf>>,
    scratch: PathBuf,
    deno_dir: PathBuf,
    /// Each check holds ~200 MB for about a second; bound how many run at once.
    permits: Semaphore,
    /// SHA-256 of sources that passed with the Deno found now: checking the same
    /// text again (a re-deploy, a rollback, many users deploying one example)
    /// would give the same answer, so it is not run again (~0.7 s saved each).
    passed: std::sync::Mutex<HashSet<String>>,
    timeout: Duration,
}

impl TypeChecker {
    /// `deno` is the located binary, or why there is none (reported on deploy).
    pub fn new(deno: Result<PathBuf, String>, data_dir: &Path) -> Self {
        Self::build(deno, None, data_dir)
    }

    /// Like `new`, but when Deno is missing each deploy (at most every
    /// `RELOCATE_EVERY`) looks for it again where `explicit` (`SKIFF_DENO`) or
    /// else `PATH` says.
    pub fn relocating(
        deno: Result<PathBuf, String>,
        explicit: Option<PathBuf>,
        data_dir: &Path,
    ) -> Self {
        Self::build(deno, Some(explicit), data_dir)
    }

    fn build(
        deno: Result<PathBuf, String>,
        relocate: Option<Option<PathBuf>>,
        data_dir: &Path,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                deno: tokio::sync::Mutex::new((deno, Some(Instant::now()))),
                relocate,
                scratch: data_dir.join("checks"),
                deno_dir: data_dir.join("deno-cache"),
                permits: Semaphore::new(2),
                passed: std::sync::Mutex::new(HashSet::new()),
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
        let deno = self.deno().await.map_err(|_| unavailable())?;
        let sha = skiff_core::store::sha256_hex(source.as_bytes());
        if self.has_passed(&sha) {
            return Ok(());
        }
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
        tokio::fs::write(p.join(HANDLER_CHECK_FILE), HANDLER_CHECK)
            .await
            .context("writing the handler check")?;
        let child = tokio::process::Command::new(&deno)
            .args([
                "check",
                "--no-remote",
                "--no-npm",
                "--no-lock",
                "--config",
                "deno.json",
                "fn.ts",
                HANDLER_CHECK_FILE,
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
            Ok(Ok(out)) => out,
            // The binary went away (or lost its execute bit) since it was found.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                let why = format!("Deno at {} cannot be run any more: {e}", deno.display());
                tracing::error!("{why}; deploys answer 503 checker_unavailable until it is back");
                self.forget_deno(why).await;
                return Err(unavailable());
            }
            Ok(Err(e)) => return Err(anyhow::Error::from(e).context("running deno check").into()),
            Err(_) => {
                return Err(CheckError::Rejected(format!(
                    "type checking took longer than {} s",
                    self.inner.timeout.as_secs()
                )));
            }
        };
        if out.status.success() {
            self.remember_pass(sha);
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let mut message = clean_diagnostics(&text, p);
        if message.contains(HANDLER_CHECK_FILE) {
            message = format!("{HANDLER_HINT}\n{message}");
        }
        Err(CheckError::Rejected(message))
    }
}

/// Scratch dirs older than this belong to no running check (a check times out
/// after a minute): they were left by a manager that was killed mid-check.
const STALE_SCRATCH: Duration = Duration::from_secs(10 * 60);

/// Removes the scratch dirs that killed managers left under `<data>/checks`;
/// returns how many. Recent ones may be another manager's running checks and
/// are left alone.
pub fn sweep_stale_scratch(data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("checks")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("check-"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_SCRATCH)
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// What a deploy is told when there is no Deno to check it with. The details
/// (paths) are in the manager's log, not in the answer.
fn unavailable() -> CheckError {
    CheckError::Unavailable(
        "deploys are unavailable: this server cannot type-check functions because \
         Deno is missing; the operator must install Deno or fix SKIFF_DENO \
         (the manager's log says more)"
            .into(),
    )
}

impl TypeChecker {
    /// The Deno binary, looking for it again when it was missing (see `relocating`).
    async fn deno(&self) -> Result<PathBuf, String> {
        let mut state = self.inner.deno.lock().await;
        if let (Err(_), Some(explicit)) = (&state.0, &self.inner.relocate)
            && state.1.is_none_or(|at| at.elapsed() >= RELOCATE_EVERY)
        {
            state.0 = skiff_core::deno::locate(explicit.as_deref())
                .await
                .map_err(|e| e.to_string());
            state.1 = Some(Instant::now());
            match &state.0 {
                Ok(path) => {
                    tracing::info!(deno = %path.display(), "Deno found; deploys type-check again")
                }
                Err(e) => tracing::warn!(error = %e, "Deno is still missing; deploys answer 503"),
            }
        }
        state.0.clone()
    }

    fn has_passed(&self, sha: &str) -> bool {
        self.inner
            .passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(sha)
    }

    fn remember_pass(&self, sha: String) {
        let mut passed = self.inner.passed.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: forgetting everything at once is crude but keeps memory flat;
        // a forgotten source is simply checked again.
        if passed.len() >= MAX_REMEMBERED_PASSES {
            passed.clear();
        }
        passed.insert(sha);
    }

    /// The located binary stopped working: when relocating, look for it again
    /// on the next deploy (and check every source again with what is found).
    async fn forget_deno(&self, why: String) {
        self.inner
            .passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if self.inner.relocate.is_some() {
            *self.inner.deno.lock().await = (Err(why), None);
        }
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

#[cfg(test)]
mod pass_cache_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &str = "export default (_req: Request) => new Response(\"hi\");\n";
    const OTHER: &str = "export default (_req: Request) => new Response(\"other\");\n";
    const BAD: &str = "export default (_req: Request) => new Response(1 + \"\" - 1);\n";

    /// The real Deno behind a wrapper that counts `deno check` runs.
    async fn counting_checker(dir: &Path) -> (TypeChecker, PathBuf) {
        let real = skiff_core::deno::locate(None)
            .await
            .expect("Deno for the tests");
        let count = dir.join("checks.log");
        let wrapper = dir.join("deno");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n[ \"$1\" = check ] && echo run >> '{}'\nexec '{}' \"$@\"\n",
                count.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        (TypeChecker::new(Ok(wrapper), dir), count)
    }

    fn runs(count: &Path) -> usize {
        std::fs::read_to_string(count).map_or(0, |s| s.lines().count())
    }

    #[tokio::test]
    async fn a_source_that_passed_is_not_checked_again_but_failures_are() {
        let dir = tempfile::tempdir().unwrap();
        let (checker, count) = counting_checker(dir.path()).await;
        checker.check(GOOD).await.unwrap();
        checker.check(GOOD).await.unwrap();
        assert_eq!(runs(&count), 1, "the same passing source is checked once");
        checker.check(OTHER).await.unwrap();
        assert_eq!(runs(&count), 2, "another source is checked");
        for _ in 0..2 {
            assert!(matches!(
                checker.check(BAD).await,
                Err(CheckError::Rejected(_))
            ));
        }
        assert_eq!(runs(&count), 4, "a failing source is checked every time");
    }
}
