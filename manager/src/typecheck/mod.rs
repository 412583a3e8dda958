//! Deploy-time validation of a function's source, every step inside the
//! checker's OS sandbox (`sandbox`): `deno info` reports the module graph and
//! the import policy (`graph`) is applied to it; then `deno check` type-checks
//! it in a scratch dir with the ambient types legacy svrless handlers need.
//! Neither step can read anything of the host's but its scratch dir, its Deno
//! cache and the Deno binary, so a hostile source can make a check fail but
//! never make it read or print a host file, whatever form its imports take.

pub mod egress;
mod graph;
pub mod remote;
pub mod sandbox;
pub mod settings;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use sandbox::CheckerSandbox;
use settings::CheckerSettings;

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
/// The files of a check besides the user's module.
const OWN_FILES: [&str; 4] = ["fn.ts", "skiff-env.d.ts", "deno.json", HANDLER_CHECK_FILE];
/// The diagnostics returned to the client are cut to this many bytes.
const MAX_DIAGNOSTICS: usize = 16 * 1024;
/// `deno info --json` output read at most (a one-file graph is a few KiB).
const MAX_GRAPH_BYTES: usize = 4 << 20;
/// Sources remembered as passed (64 bytes each).
const MAX_REMEMBERED_PASSES: usize = 10_000;
/// How often a missing Deno is looked for again.
const RELOCATE_EVERY: Duration = Duration::from_secs(5);
/// The launcher's exit code when it could not set the sandbox up.
const LAUNCHER_FAILED: i32 = 125;
/// Deno's exit code when V8 ran out of heap.
const HEAP_EXHAUSTED: i32 = 133;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The source is at fault; the message is for the uploader.
    #[error("{0}")]
    Rejected(String),
    /// The source imports what the policy does not allow.
    #[error("{0}")]
    ImportNotAllowed(String),
    /// The checker cannot run (no Deno); the deploy may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The deploy-time checker the handlers call: run here, through the
/// launcher, or in a separate checker process over its socket (Kubernetes:
/// another container of the manager's pod).
#[derive(Clone)]
pub struct TypeChecker {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Local(LocalChecker),
    Remote(remote::RemoteChecker),
}

impl TypeChecker {
    /// A local checker (see `LocalChecker::new`).
    pub fn new(deno: Result<PathBuf, String>, data_dir: &Path) -> anyhow::Result<Self> {
        Ok(LocalChecker::new(deno, data_dir)?.into())
    }

    /// The checker `settings` ask for: remote when `SKIFF_CHECKER_SOCKET` is
    /// set, else local (see `LocalChecker::relocating`).
    pub fn from_settings(
        deno: Result<PathBuf, String>,
        explicit: Option<PathBuf>,
        data_dir: &Path,
        settings: &CheckerSettings,
    ) -> anyhow::Result<Self> {
        if let Some(socket) = &settings.checker_socket {
            return Ok(Self {
                kind: Kind::Remote(remote::RemoteChecker::new(
                    socket.clone(),
                    Duration::from_secs(settings.check_timeout_secs),
                )),
            });
        }
        Ok(LocalChecker::relocating(deno, explicit, data_dir, settings)?.into())
    }

    pub async fn check(&self, source: &str) -> Result<(), CheckError> {
        match &self.kind {
            Kind::Local(c) => c.check(source).await,
            Kind::Remote(c) => c.check(source).await,
        }
    }

    /// What this host enforces for checks, or where they run.
    pub fn describe_sandbox(&self) -> String {
        match &self.kind {
            Kind::Local(c) => c.describe_sandbox(),
            Kind::Remote(c) => format!(
                "deploy-time checks run in the checker process at {}\n",
                c.socket().display()
            ),
        }
    }
}

impl From<LocalChecker> for TypeChecker {
    fn from(c: LocalChecker) -> Self {
        Self {
            kind: Kind::Local(c),
        }
    }
}

#[derive(Clone)]
pub struct LocalChecker {
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
    data_dir: PathBuf,
    scratch: PathBuf,
    deno_dir: PathBuf,
    sandbox: CheckerSandbox,
    /// `deno check` runs so far (the pass cache's test counts them).
    checks_run: std::sync::atomic::AtomicUsize,
    /// Each check holds ~200 MB for about a second; bound how many run at once.
    permits: Semaphore,
    /// SHA-256 of sources that passed with the Deno found now: checking the same
    /// text again (a re-deploy, a rollback, many users deploying one example)
    /// would give the same answer, so it is not run again (~0.7 s saved each).
    passed: std::sync::Mutex<HashSet<String>>,
    timeout: Duration,
}

impl LocalChecker {
    /// `deno` is the located binary, or why there is none (reported on deploy).
    /// Fails when the sandbox launcher is missing: no check runs unconfined.
    pub fn new(deno: Result<PathBuf, String>, data_dir: &Path) -> anyhow::Result<Self> {
        Self::build(deno, None, data_dir, &CheckerSettings::default())
    }

    /// Like `new`, but when Deno is missing each deploy (at most every
    /// `RELOCATE_EVERY`) looks for it again where `explicit` (`SKIFF_DENO`) or
    /// else `PATH` says.
    pub fn relocating(
        deno: Result<PathBuf, String>,
        explicit: Option<PathBuf>,
        data_dir: &Path,
        settings: &CheckerSettings,
    ) -> anyhow::Result<Self> {
        Self::build(deno, Some(explicit), data_dir, settings)
    }

    fn build(
        deno: Result<PathBuf, String>,
        relocate: Option<Option<PathBuf>>,
        data_dir: &Path,
        settings: &CheckerSettings,
    ) -> anyhow::Result<Self> {
        let sandbox = CheckerSandbox::detect(settings)?;
        let scratch = data_dir.join("checks");
        let deno_dir = data_dir.join("deno-cache");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let deno = deno.and_then(|d| {
            sandbox.runnable(&d, data_dir).inspect_err(|why| {
                tracing::error!("{why}; deploys answer 503 checker_unavailable");
            })
        });
        sandbox
            .prepare_deno_dir(&deno_dir)
            .with_context(|| format!("preparing {}", deno_dir.display()))?;
        sandbox.open_path_to(&scratch)?;
        Ok(Self {
            inner: Arc::new(Inner {
                deno: tokio::sync::Mutex::new((deno, Some(Instant::now()))),
                relocate,
                data_dir: data_dir.to_owned(),
                scratch,
                deno_dir,
                sandbox,
                checks_run: std::sync::atomic::AtomicUsize::new(0),
                permits: Semaphore::new(2),
                passed: std::sync::Mutex::new(HashSet::new()),
                timeout: Duration::from_secs(settings.check_timeout_secs.max(1)),
            }),
        })
    }

    /// What this host enforces for checks (`skiff-manager --check-sandbox`).
    pub fn describe_sandbox(&self) -> String {
        self.inner.sandbox.describe()
    }

    pub async fn check(&self, source: &str) -> Result<(), CheckError> {
        let deno = self.deno().await.map_err(|_| unavailable())?;
        let deno = self
            .inner
            .sandbox
            .runnable(&deno, &self.inner.data_dir)
            .map_err(|why| {
                tracing::error!("{why}; deploys answer 503 checker_unavailable");
                unavailable()
            })?;
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
        // A check of the same source that held the permit before us passed.
        if self.has_passed(&sha) {
            return Ok(());
        }
        let dir = self.scratch_with(source).await?;
        let p = dir.path();
        let own: Vec<String> = OWN_FILES
            .iter()
            .map(|f| format!("file://{}/{f}", p.display()))
            .collect();

        let info = self
            .run(
                &deno,
                p,
                &[
                    "info",
                    "--json",
                    "--no-remote",
                    "--no-npm",
                    "--no-lock",
                    "--config",
                    "deno.json",
                    "fn.ts",
                ],
            )
            .await?;
        // A graph Deno could not build (e.g. a syntax error) is reported by
        // the type check below, with its diagnostics.
        if info.status.success() {
            let graph: graph::Graph =
                serde_json::from_slice(&info.stdout[..info.stdout.len().min(MAX_GRAPH_BYTES)])
                    .context("reading deno info's module graph")?;
            let refused = graph::disallowed(&graph, &own);
            if !refused.is_empty() {
                let listed: Vec<String> = refused.iter().map(|s| short(s, p)).collect();
                return Err(CheckError::ImportNotAllowed(format!(
                    "a function is one self-contained file and may import only Node built-ins \
                     (node:…); not allowed here: {}",
                    listed.join(", ")
                )));
            }
        }

        let heap = format!("--v8-flags=--max-old-space-size={}", self.heap_mb());
        self.inner
            .checks_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self
            .run(
                &deno,
                p,
                &[
                    "check",
                    "--no-remote",
                    "--no-npm",
                    "--no-lock",
                    &heap,
                    "--config",
                    "deno.json",
                    "fn.ts",
                    HANDLER_CHECK_FILE,
                ],
            )
            .await?;
        if out.status.success() {
            self.remember_pass(sha);
            return Ok(());
        }
        if out.status.code() == Some(HEAP_EXHAUSTED) {
            return Err(out_of_memory());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let mut message = clean_diagnostics(&text, p);
        if message.contains(HANDLER_CHECK_FILE) {
            message = format!("{HANDLER_HINT}\n{message}");
        }
        Err(CheckError::Rejected(message))
    }

    /// V8's heap cap for a check: three quarters of its memory limit, so V8
    /// stops with a clear error before the cgroup kills the process.
    fn heap_mb(&self) -> u64 {
        (self.inner.sandbox.memory_bytes / (1024 * 1024) * 3 / 4).max(64)
    }

    /// A fresh scratch dir holding the source and the check's own files,
    /// handed to the checker's uid.
    async fn scratch_with(&self, source: &str) -> Result<tempfile::TempDir, CheckError> {
        let scratch = self.inner.scratch.clone();
        let source = source.to_owned();
        let inner = self.inner.clone();
        let dir = tokio::task::spawn_blocking(move || -> anyhow::Result<tempfile::TempDir> {
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            let dir = tempfile::Builder::new()
                .prefix("check-")
                .tempdir_in(&scratch)
                .context("creating a scratch dir")?;
            let p = dir.path();
            for (name, text) in [
                ("fn.ts", source.as_str()),
                ("skiff-env.d.ts", SVRLESS_ENV),
                ("deno.json", CHECK_CONFIG),
                (HANDLER_CHECK_FILE, HANDLER_CHECK),
            ] {
                std::fs::write(p.join(name), text).with_context(|| format!("writing {name}"))?;
            }
            inner
                .sandbox
                .own_scratch(p)
                .context("handing the scratch dir to the checker")?;
            Ok(dir)
        })
        .await
        .context("preparing a check")??;
        Ok(dir)
    }

    /// Runs `deno ARGS` through the launcher in `dir`, bounded in time,
    /// memory and CPU. Errors here are the platform's, not the source's.
    async fn run(&self, deno: &Path, dir: &Path, args: &[&str]) -> Result<Output, CheckError> {
        let sandbox = &self.inner.sandbox;
        let leaf = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "check".into());
        let cgroup = sandbox.cgroup(&format!(
            "{leaf}-{}",
            args.first().copied().unwrap_or("run")
        ));
        let policy = sandbox.policy(
            dir,
            &self.inner.deno_dir,
            deno,
            cgroup
                .as_ref()
                .map(|c| c.dirs().to_vec())
                .unwrap_or_default(),
        );
        let child = tokio::process::Command::new(&sandbox.launcher)
            .args(policy.to_args(deno, args))
            .current_dir(dir)
            .env_clear()
            .env("DENO_DIR", &self.inner.deno_dir)
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("HOME", dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(self.inner.timeout, child).await {
            Ok(Ok(out)) => out,
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                let why = format!(
                    "the sandbox launcher {} cannot be run: {e}",
                    sandbox.launcher.display()
                );
                tracing::error!("{why}; deploys answer 503 checker_unavailable");
                return Err(unavailable());
            }
            Ok(Err(e)) => return Err(anyhow::Error::from(e).context("running the checker").into()),
            Err(_) => {
                return Err(CheckError::Rejected(format!(
                    "type checking took longer than {} s",
                    self.inner.timeout.as_secs()
                )));
            }
        };
        match out.status.code() {
            Some(LAUNCHER_FAILED) => {
                tracing::error!(
                    reason = %String::from_utf8_lossy(&out.stderr).trim().escape_debug(),
                    "the sandbox launcher refused to start a check"
                );
                Err(unavailable())
            }
            // Binary gone or not executable since it was found.
            Some(126 | 127) => {
                let why = format!(
                    "Deno at {} cannot be run any more: {}",
                    deno.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                tracing::error!("{why}; deploys answer 503 checker_unavailable until it is back");
                self.forget_deno(why).await;
                Err(unavailable())
            }
            None if cgroup.as_ref().is_some_and(|c| c.hit_memory_limit())
                || String::from_utf8_lossy(&out.stderr).contains("out of memory") =>
            {
                Err(out_of_memory())
            }
            None => Err(CheckError::Rejected(
                "type checking was stopped: it used too much CPU or memory".into(),
            )),
            Some(_) => Ok(out),
        }
    }
}

fn out_of_memory() -> CheckError {
    CheckError::Rejected(
        "type checking ran out of memory: the source's types are too large to check".into(),
    )
}

/// A specifier as the author can recognise it: the scratch dir dropped.
fn short(specifier: &str, dir: &Path) -> String {
    let url = format!("file://{}/", dir.display());
    specifier
        .strip_prefix(&url)
        .map_or_else(|| specifier.to_owned(), |s| format!("./{s}"))
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

impl LocalChecker {
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

    const GOOD: &str = "export default (_req: Request) => new Response(\"hi\");\n";
    const OTHER: &str = "export default (_req: Request) => new Response(\"other\");\n";
    const BAD: &str = "export default (_req: Request) => new Response(1 + \"\" - 1);\n";

    async fn checker(dir: &Path) -> LocalChecker {
        let real = skiff_core::deno::locate(None)
            .await
            .expect("Deno for the tests");
        LocalChecker::new(Ok(real), dir)
            .expect("the sandbox launcher (cargo build -p skiff-sandbox)")
    }

    fn runs(c: &LocalChecker) -> usize {
        c.inner
            .checks_run
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_source_that_passed_is_not_checked_again_but_failures_are() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let checker = checker(dir.path()).await;
        let count = &checker;
        checker.check(GOOD).await.unwrap();
        checker.check(GOOD).await.unwrap();
        assert_eq!(runs(count), 1, "the same passing source is checked once");
        checker.check(OTHER).await.unwrap();
        assert_eq!(runs(count), 2, "another source is checked");
        for _ in 0..2 {
            assert!(matches!(
                checker.check(BAD).await,
                Err(CheckError::Rejected(_))
            ));
        }
        assert_eq!(runs(count), 4, "a failing source is checked every time");
    }
}
