//! Deploy-time validation of a function's source, every step inside the
//! checker's OS sandbox (`sandbox`): `deno info` reports the module graph and
//! the import policy (`graph`) is applied to it; then `deno check` type-checks
//! it in a scratch dir with the ambient types legacy svrless handlers need.
//! Neither step can read anything of the host's but its scratch dir, its Deno
//! cache and the Deno binary, so a hostile source can make a check fail but
//! never make it read or print a host file, whatever form its imports take.

pub mod build;
pub mod egress;
mod imports;
pub mod registries;
pub mod remote;
pub mod sandbox;
pub mod settings;
pub mod upload;
pub mod warm;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

pub use build::{BuildRequest, Built, StepTimes};
use registries::Registries;
use sandbox::CheckerSandbox;
use settings::CheckerSettings;
pub use upload::UploadKind;

/// The diagnostics returned to the client are cut to this many bytes.
const MAX_DIAGNOSTICS: usize = 16 * 1024;
/// How often a missing Deno is looked for again.
const RELOCATE_EVERY: Duration = Duration::from_secs(5);
/// The launcher's exit code when it could not set the sandbox up.
const LAUNCHER_FAILED: i32 = 125;
/// Deno's exit code when V8 ran out of heap.
const HEAP_EXHAUSTED: i32 = 133;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Type errors of a strict deploy (or a check that could not finish).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Syntax(String),
    /// A dependency that cannot be loaded or downloaded.
    #[error("{0}")]
    DependencyUnavailable(String),
    /// No handler shape the runtime serves.
    #[error("{0}")]
    NoHandler(String),
    /// The module threw while loading.
    #[error("{0}")]
    ModuleFailed(String),
    #[error("{0}")]
    TooLarge(String),
    /// The upload itself is unusable (a hostile archive, no entry, not UTF-8…).
    #[error("{message}")]
    BadUpload { code: &'static str, message: String },
    /// The source imports what the policy does not allow.
    #[error("{0}")]
    ImportNotAllowed(String),
    /// The checker cannot run (no Deno); the deploy may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CheckError {
    /// The API's error code (`Internal` has none: it is the platform's).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "type_check_failed",
            Self::Syntax(_) => "syntax_error",
            Self::DependencyUnavailable(_) => "dependency_unavailable",
            Self::NoHandler(_) => "no_handler",
            Self::ModuleFailed(_) => "module_failed",
            Self::TooLarge(_) => "payload_too_large",
            Self::BadUpload { code, .. } => code,
            Self::ImportNotAllowed(_) => "import_not_allowed",
            Self::Unavailable(_) | Self::Internal(_) => "checker_unavailable",
        }
    }

    /// The error a code names (the remote checker's answer back into one).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "type_check_failed" => Self::Rejected(message),
            "syntax_error" => Self::Syntax(message),
            "dependency_unavailable" => Self::DependencyUnavailable(message),
            "no_handler" => Self::NoHandler(message),
            "module_failed" => Self::ModuleFailed(message),
            "payload_too_large" => Self::TooLarge(message),
            "import_not_allowed" => Self::ImportNotAllowed(message),
            "checker_unavailable" => Self::Unavailable(message),
            other => Self::BadUpload {
                code: UPLOAD_CODES
                    .iter()
                    .find(|c| **c == other)
                    .copied()
                    .unwrap_or("bad_upload"),
                message,
            },
        }
    }
}

/// Codes of `BadUpload`, as the remote checker may send them back.
const UPLOAD_CODES: &[&str] = &[
    "empty_source",
    "invalid_source",
    "invalid_entry",
    "invalid_config",
    "bad_archive",
    "no_entry",
];

/// The deploy-time checker the handlers call: run here, through the
/// launcher, or in a separate checker process over its socket (Kubernetes:
/// another container of the manager's pod).
#[derive(Clone)]
pub struct TypeChecker {
    kind: Kind,
    /// Where each build's step times go (`None`: not recorded).
    metrics: Option<Arc<crate::metrics::Metrics>>,
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
                    settings.max_artifact_bytes,
                )),
                metrics: None,
            });
        }
        Ok(LocalChecker::relocating(deno, explicit, data_dir, settings)?.into())
    }

    /// Records each build's step times in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub async fn build(&self, req: BuildRequest) -> Result<Built, CheckError> {
        let (result, times) = match &self.kind {
            Kind::Local(c) => c.build_timed(req).await,
            Kind::Remote(c) => c.build_timed(req).await,
        };
        if let Some(m) = &self.metrics {
            m.build_timed(&times);
        }
        result
    }

    /// Starts a warm type checker ahead of the first deploy (local checks only).
    pub fn prewarm(&self) {
        if let Kind::Local(c) = &self.kind {
            c.prewarm();
        }
    }

    /// Stops the warm checkers (a clean shutdown leaves no worker or dir).
    pub async fn shutdown(&self) {
        if let Kind::Local(c) = &self.kind {
            c.shutdown().await;
        }
    }

    /// The warm checkers (local checks only).
    pub fn warm_status(&self) -> Option<warm::Status> {
        match &self.kind {
            Kind::Local(c) => Some(c.inner.warm.status()),
            Kind::Remote(_) => None,
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
            metrics: None,
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
    /// Each check holds ~200 MB for about a second; bound how many run at once.
    permits: Semaphore,
    timeout: Duration,
    /// Where dependencies may come from; unset registries are learned once.
    registries_set: Registries,
    learned: tokio::sync::OnceCell<Registries>,
    /// Whether Deno's bundler (esbuild, fetched from the npm registry on
    /// first use) is in the cache; fetched once, by a build of our own.
    bundler: tokio::sync::Mutex<bool>,
    archive_limits: crate::functions::archive::ArchiveLimits,
    max_artifact_bytes: usize,
    /// Long-lived type checkers, one per recent tenant (`warm`).
    warm: Arc<warm::WarmPool>,
}

impl LocalChecker {
    /// `deno` is the located binary, or why there is none (reported on deploy).
    /// Fails when the sandbox launcher is missing: no check runs unconfined.
    pub fn new(deno: Result<PathBuf, String>, data_dir: &Path) -> anyhow::Result<Self> {
        Self::construct(deno, None, data_dir, &CheckerSettings::default())
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
        Self::construct(deno, Some(explicit), data_dir, settings)
    }

    fn construct(
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
        let swept = warm::sweep_stale(&scratch);
        if swept > 0 {
            tracing::info!(
                swept,
                "removed warm checkers' dirs left by a stopped manager"
            );
        }
        let mut registries = Registries::from_settings(settings);
        if let Some(ca) = &registries.ca {
            // A copy the checker's uid can read wherever the operator keeps
            // the file (even under a /tmp the sandbox replaces).
            let copy = data_dir.join("import-ca.pem");
            std::fs::copy(ca, &copy)
                .with_context(|| format!("copying SKIFF_IMPORT_CA {}", ca.display()))?;
            std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            registries.ca = Some(copy);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                deno: tokio::sync::Mutex::new((deno, Some(Instant::now()))),
                relocate,
                data_dir: data_dir.to_owned(),
                scratch,
                deno_dir,
                sandbox,
                permits: Semaphore::new(2),
                timeout: Duration::from_secs(settings.check_timeout_secs.max(1)),
                registries_set: registries,
                learned: tokio::sync::OnceCell::new(),
                bundler: tokio::sync::Mutex::new(false),
                archive_limits: settings.archive.limits(),
                max_artifact_bytes: settings.max_artifact_bytes,
                warm: warm::WarmPool::new(settings.check_warm),
            }),
        })
    }

    /// Starts a warm checker now, so the first deploy is not the one that
    /// pays for it (a no-op when warm checks are off).
    pub fn prewarm(&self) {
        self.inner.warm.prewarm(self);
    }

    /// Stops the warm checkers (a clean shutdown leaves no worker or dir).
    pub async fn shutdown(&self) {
        self.inner.warm.shutdown().await;
    }

    /// Where build dirs and warm checkers' dirs are made.
    fn scratch_root(&self) -> &Path {
        &self.inner.scratch
    }

    /// What this host enforces for checks (`skiff-manager --check-sandbox`).
    pub fn describe_sandbox(&self) -> String {
        self.inner.sandbox.describe()
    }

    /// Deno where the checker's uid can run it, or the deploy's 503.
    async fn usable_deno(&self) -> Result<PathBuf, CheckError> {
        let deno = self.deno().await.map_err(|_| unavailable())?;
        self.inner
            .sandbox
            .runnable(&deno, &self.inner.data_dir)
            .map_err(|why| {
                tracing::error!("{why}; deploys answer 503 checker_unavailable");
                unavailable()
            })
    }

    /// V8's heap cap for a check: three quarters of its memory limit, so V8
    /// stops with a clear error before the cgroup kills the process.
    fn heap_mb(&self) -> u64 {
        (self.inner.sandbox.memory_bytes / (1024 * 1024) * 3 / 4).max(64)
    }

    /// A fresh, empty scratch dir for one build.
    async fn scratch(&self) -> Result<tempfile::TempDir, CheckError> {
        self.scratch_in(&self.inner.scratch).await
    }

    /// A fresh, empty scratch dir under `parent`.
    async fn scratch_in(&self, parent: &Path) -> Result<tempfile::TempDir, CheckError> {
        let scratch = parent.to_owned();
        let dir = tokio::task::spawn_blocking(move || -> anyhow::Result<tempfile::TempDir> {
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            tempfile::Builder::new()
                .prefix("check-")
                .tempdir_in(&scratch)
                .context("creating a scratch dir")
        })
        .await
        .context("preparing a build")??;
        Ok(dir)
    }

    /// Hands a dir and what it holds to the checker's uid.
    async fn hand_over_dir(&self, dir: &Path) -> anyhow::Result<()> {
        self.hand_over(dir)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Hands the laid-out scratch dir to the checker's uid.
    async fn hand_over(&self, dir: &Path) -> Result<(), CheckError> {
        let inner = self.inner.clone();
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || inner.sandbox.own_scratch(&dir))
            .await
            .context("handing the scratch dir to the checker")?
            .context("handing the scratch dir to the checker")?;
        Ok(())
    }

    /// The registries, with unset ones learned from Deno (once).
    async fn registries(&self) -> Result<Registries, CheckError> {
        if let Some(r) = self.inner.learned.get() {
            return Ok(r.clone());
        }
        let mut r = self.inner.registries_set.clone();
        if !r.learned() {
            let deno = self.usable_deno().await?;
            let dir = self.scratch().await?;
            let p = dir.path().to_owned();
            std::fs::write(p.join("probe.ts"), registries::LEARN_SOURCE)
                .context("writing the registry probe")?;
            self.hand_over(&p).await?;
            let out = self
                .run(
                    &deno,
                    &p,
                    &["info", "--json", "--no-config", "--no-lock", "probe.ts"],
                    Step::Offline,
                )
                .await?;
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            r.learn_defaults(&text);
            if !r.learned() {
                tracing::warn!(output = %text.escape_debug(), "could not learn Deno's default registries");
                return Ok(r);
            }
        }
        Ok(self.inner.learned.get_or_init(|| async { r }).await.clone())
    }

    /// Runs `deno ARGS` through the launcher in `dir`, bounded in time,
    /// memory and CPU. Errors here are the platform's, not the source's.
    async fn run(
        &self,
        deno: &Path,
        dir: &Path,
        args: &[&str],
        step: Step,
    ) -> Result<Output, CheckError> {
        let sandbox = &self.inner.sandbox;
        let leaf = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "check".into());
        let cgroup = sandbox.cgroup(&format!(
            "{leaf}-{}",
            args.first().copied().unwrap_or("run")
        ));
        let cgroups = cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default();
        let probe_cache = dir.join("probe-cache");
        let deno_dir = match step {
            Step::Probe => &probe_cache,
            _ => &self.inner.deno_dir,
        };
        // The registries Deno resolves against: a lock file names its
        // registry, and every step must agree with it.
        let registry_env = match (&step, self.inner.learned.get()) {
            (Step::Probe, _) | (_, None) => Vec::new(),
            (_, Some(r)) => r.registry_env(),
        };
        let (policy, env) = match step {
            Step::Offline | Step::Probe => {
                (sandbox.policy(dir, deno_dir, deno, cgroups), registry_env)
            }
            Step::Bundle => {
                let mut p = sandbox.policy(dir, deno_dir, deno, cgroups);
                p.exec.push(deno_dir.join("dl"));
                (p, registry_env)
            }
            Step::Egress { env, ca, socket } => {
                let mut p = sandbox
                    .resolve_policy(
                        dir,
                        deno_dir,
                        deno,
                        cgroups,
                        EGRESS_PORT,
                        &socket,
                        ca.as_deref(),
                    )
                    .map_err(|why| {
                        tracing::error!("{why}; deploys with dependencies answer 503");
                        CheckError::Unavailable(
                            "deploys with dependencies are unavailable: this host's sandbox \
                             cannot confine dependency downloads; the operator's log says more"
                                .into(),
                        )
                    })?;
                // Fetching the bundler also runs it once.
                p.exec.push(deno_dir.join("dl"));
                // The host's CA store: registries behind a corporate CA work
                // as they do for the operator's own tools.
                p.read.extend(
                    registries::SYSTEM_CA_PATHS
                        .iter()
                        .map(PathBuf::from)
                        .chain(
                            registries::ca_env()
                                .into_iter()
                                .map(|(_, v)| PathBuf::from(v)),
                        )
                        .filter(|p| p.exists()),
                );
                let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
                let mut env = env;
                for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                    env.push((k.into(), proxy.clone()));
                }
                (p, env)
            }
        };
        let child = tokio::process::Command::new(&sandbox.launcher)
            .args(policy.to_args(deno, args))
            .current_dir(dir)
            .env_clear()
            .env("DENO_DIR", deno_dir)
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("HOME", dir)
            .envs(env)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let started = Instant::now();
        let out = tokio::time::timeout(self.inner.timeout, child).await;
        tracing::debug!(
            step = args.first().copied().unwrap_or(""),
            ms = started.elapsed().as_millis() as u64,
            "build step ran"
        );
        let out = match out {
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

impl LocalChecker {
    /// Starts `deno ARGS` through the launcher as a long-lived process with
    /// piped stdin/stdout: the checker's offline policy on `dir`, its own
    /// cgroup `name`, and `cpu_secs` over its life. Returns the child, its
    /// cgroup and the cgroup's memory limit.
    async fn spawn_sandboxed(
        &self,
        deno: &Path,
        dir: &Path,
        args: &[&str],
        name: &str,
        cpu_secs: u64,
    ) -> anyhow::Result<(
        tokio::process::Child,
        Option<skiff_sandbox::cgroups::CgroupDirs>,
        u64,
    )> {
        let sandbox = &self.inner.sandbox;
        let cgroup = sandbox.cgroup(name);
        let cgroups = cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default();
        let mut policy = sandbox.policy(dir, &self.inner.deno_dir, deno, cgroups);
        policy.limits.cpu_secs = Some(cpu_secs);
        let registry_env = self
            .inner
            .learned
            .get()
            .map(Registries::registry_env)
            .unwrap_or_default();
        let child = tokio::process::Command::new(&sandbox.launcher)
            .args(policy.to_args(deno, args))
            .current_dir(dir)
            .env_clear()
            .env("DENO_DIR", &self.inner.deno_dir)
            .env("NO_COLOR", "1")
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env(
                "DENO_V8_FLAGS",
                format!("--max-old-space-size={}", self.heap_mb()),
            )
            .env("HOME", dir)
            .envs(registry_env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", sandbox.launcher.display()))?;
        Ok((child, cgroup, sandbox.memory_bytes))
    }
}

fn out_of_memory() -> CheckError {
    CheckError::Rejected(
        "type checking ran out of memory: the source's types are too large to check".into(),
    )
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

    /// The located binary stopped working: when relocating, look for it again
    /// on the next deploy (and check every source again with what is found).
    async fn forget_deno(&self, why: String) {
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

/// What one sandboxed run may do besides reading its scratch dir.
pub(crate) enum Step {
    /// No network at all (a new, empty network namespace).
    Offline,
    /// Offline, and may run the bundler Deno keeps in its cache (`dl/`).
    Bundle,
    /// Offline, with a Deno cache of its own inside the scratch dir: the
    /// step that runs the tenant's code must not be able to write the Deno
    /// cache later builds of every tenant read.
    Probe,
    /// The resolve step's: registries and module hosts only.
    Egress {
        env: Vec<(String, String)>,
        ca: Option<PathBuf>,
        socket: PathBuf,
    },
}

/// The port the resolve step reaches the egress proxy on, inside its own
/// network namespace (so it collides with nothing).
const EGRESS_PORT: u16 = 3128;

/// The resolve step's network for one build, and what it refused.
pub(crate) struct Egress {
    env: Vec<(String, String)>,
    ca: Option<PathBuf>,
    proxy: egress::EgressProxy,
    /// Holds the proxy's socket; removed with it.
    _dir: tempfile::TempDir,
}

impl Egress {
    fn step(&self) -> Step {
        Step::Egress {
            env: self.env.clone(),
            ca: self.ca.clone(),
            socket: self.proxy.socket_path().to_owned(),
        }
    }

    /// What the proxy refused: `(disallowed, other)`, each one line per refusal.
    fn refusals(&self) -> (Vec<String>, Vec<String>) {
        let mut disallowed = Vec::new();
        let mut other = Vec::new();
        for r in self.proxy.refusals() {
            match r.kind {
                egress::RefusalKind::NotAllowed | egress::RefusalKind::ForbiddenAddress => {
                    disallowed.push(r.to_string())
                }
                _ => other.push(r.to_string()),
            }
        }
        disallowed.dedup();
        other.dedup();
        (disallowed, other)
    }
}

impl LocalChecker {
    /// Makes sure Deno's bundler is cached, fetching it through the egress
    /// path with a module of ours the first time; later bundles run offline.
    async fn ensure_bundler(&self, deno: &Path) -> Result<(), CheckError> {
        let mut ready = self.inner.bundler.lock().await;
        if *ready {
            return Ok(());
        }
        let dir = self.scratch().await?;
        let p = dir.path().to_owned();
        std::fs::write(
            p.join("b.ts"),
            "export default () => new Response(\"ok\");\n",
        )
        .context("writing the bundler's first module")?;
        self.hand_over(&p).await?;
        let egress = self.egress().await?;
        let args = [
            "bundle",
            "--quiet",
            "--no-config",
            "--no-lock",
            "-o",
            "b.js",
            "b.ts",
        ];
        let out = self.run(deno, &p, &args, egress.step()).await?;
        if !out.status.success() {
            tracing::error!(
                output = %String::from_utf8_lossy(&out.stderr).trim().escape_debug(),
                "could not fetch Deno's bundler; deploys answer 503 until it can be"
            );
            return Err(CheckError::Unavailable(
                "deploys are unavailable: this server cannot fetch Deno's bundler from its \
                 npm registry; the operator's log says more"
                    .into(),
            ));
        }
        *ready = true;
        Ok(())
    }

    /// A fresh egress proxy allowing this server's registries and module hosts.
    async fn egress(&self) -> Result<Egress, CheckError> {
        let r = self.registries().await?;
        let mut policy = egress::EgressPolicy::new(egress::EgressLimits::default());
        for (host, port) in r.destinations() {
            policy.allow(&host, port);
        }
        for host in &r.trusted {
            policy.trust(host);
        }
        let dir = tempfile::Builder::new()
            .prefix("egress-")
            .tempdir_in(&self.inner.scratch)
            .context("creating the egress proxy's dir")?;
        let proxy =
            egress::EgressProxy::start(dir.path(), policy).context("starting the egress proxy")?;
        self.inner
            .sandbox
            .own_egress_socket(proxy.socket_path())
            .context("handing the egress socket to the checker")?;
        Ok(Egress {
            env: r.deno_env(),
            ca: r.ca.clone(),
            proxy,
            _dir: dir,
        })
    }
}
