//! A deploy's build: from the upload to one immutable artifact. Every step
//! runs Deno through the checker's sandbox; only the resolve step has a
//! network, and that network is one loopback port leading to the egress
//! proxy, which lets through the operator's registries and module hosts and
//! nothing private.
//!
//! 1. `graph`   — `deno info --json`, offline: what the upload imports; the
//!    import policy (`imports`) refuses what is not allowed, and bare names
//!    get an import map entry (`npm:<name>`, or `node:<name>` for built-ins).
//! 2. `resolve` — `deno install`, through the egress proxy: downloads and
//!    pins the graph in a lock file (skipped when nothing is remote).
//! 3. `bundle` and `check`, offline and side by side: `deno bundle` makes the
//!    artifact; `deno check` gives the type errors, which are warnings unless
//!    the deploy is strict.
//! 4. `probe`   — the client runtime loads the artifact as it will at run
//!    time and says which handler shape it found, offline.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::imports::{self, Graph};
use super::upload::{Project, UploadKind};
use super::{CheckError, LocalChecker, Step, warm};

/// `deno info --json` output read at most.
const MAX_GRAPH_BYTES: usize = 8 << 20;
/// Diagnostics kept per warning, and warnings per deploy.
const MAX_WARNING_BYTES: usize = 2048;
const MAX_WARNINGS: usize = 50;
/// Where the client runtime sits in a scratch dir for the probe.
const PROBE_RUNTIME: &str = "runtime/main.ts";
const RUNTIME_MAIN: &str = include_str!("../../../client-runtime/main.ts");
/// Types for `Deno.RequestEvent`, which Deno 2 dropped (client-runtime owns the file).
const SVRLESS_ENV: &str = include_str!("../../../client-runtime/svrless-env.d.ts");
/// The generated config; the upload's own `deno.json` stays where it is and
/// is merged into this one.
const CONFIG: &str = "skiff.json";
const LOCK: &str = "deno.lock";
/// Written beside the upload's files, so the inline source map names them as
/// the author does (`main.ts`, `lib/x.ts`): stack traces at run time point at
/// the author's lines, wherever the artifact is installed.
const ARTIFACT: &str = "src/.skiff-bundle.js";

/// What a deploy asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRequest {
    pub kind: UploadKind,
    /// `?entry=`: the module to serve (for a single module: its file name,
    /// which says whether it is JavaScript or TypeScript).
    pub entry: Option<String>,
    /// `?check=strict`: type errors refuse the deploy.
    pub strict: bool,
    /// Whose deploy it is: a warm checker serves one tenant only.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// A built version: what the store keeps besides the upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Built {
    /// The bundled module the runtime serves.
    pub artifact: String,
    /// Deno's lock file of the resolved graph (`None` when nothing was remote).
    pub lock: Option<String>,
    /// The entry module, relative to the upload's root.
    pub entry: String,
    /// Type errors and other advice; the deploy went through.
    pub warnings: Vec<String>,
    /// Bare names the upload did not map, and what they were resolved as.
    pub resolved: BTreeMap<String, String>,
    /// The handler shape the runtime found.
    pub shape: String,
}

/// How long a build's steps took (`metrics::BUILD_STEPS` names them), for
/// the manager's metrics; the checker process sends them with its answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// `(step, seconds)`, in the order the steps ended.
    #[serde(default)]
    pub steps: Vec<(String, f64)>,
    /// The whole build, with any wait for a free slot.
    #[serde(default)]
    pub total_secs: Option<f64>,
}

/// Collects the steps' times; shared with a step that runs on its own task.
#[derive(Clone, Default)]
struct StepClock(Arc<Mutex<Vec<(String, f64)>>>);

impl StepClock {
    /// Runs `step` and records how long it took (also when it failed).
    async fn time<T>(&self, step: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((step.to_owned(), started.elapsed().as_secs_f64()));
        out
    }

    fn finish(&self, total: Duration) -> StepTimes {
        StepTimes {
            steps: self
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            total_secs: Some(total.as_secs_f64()),
        }
    }
}

#[derive(Deserialize)]
struct ProbeAnswer {
    ok: bool,
    #[serde(default)]
    shape: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl LocalChecker {
    /// Builds the upload; errors name what the author must fix.
    pub async fn build(&self, req: BuildRequest) -> Result<Built, CheckError> {
        self.build_timed(req).await.0
    }

    /// [`Self::build`], and how long its steps took (those that ran).
    pub async fn build_timed(&self, req: BuildRequest) -> (Result<Built, CheckError>, StepTimes) {
        let clock = StepClock::default();
        let started = Instant::now();
        let result = self.build_steps(req, &clock).await;
        (result, clock.finish(started.elapsed()))
    }

    async fn build_steps(&self, req: BuildRequest, clock: &StepClock) -> Result<Built, CheckError> {
        let deno = self.usable_deno().await?;
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .context("build semaphore")?;
        // A warm checker of this tenant's, held for the whole build: the
        // build dir is made in its dir (all it may read), which lives as long
        // as the lease.
        let lease = req
            .tenant
            .as_deref()
            .and_then(|t| self.inner.warm.lease(t, self));
        // The build's root is at the same depth either way
        // (`checks/warm-N/check-X`, `checks/check-X/check-X`): the bundle's source
        // map names dependencies by relative path, and the same upload must
        // give the same artifact bytes whichever way it was checked.
        let (dir, root) = match lease.as_ref().and_then(warm::Lease::dir) {
            Some(parent) => {
                let dir = self.scratch_in(parent).await?;
                let root = dir.path().to_owned();
                (dir, root)
            }
            None => {
                let dir = self.scratch().await?;
                // Named as its parent: the steps' cgroups are named after it.
                let name = dir.path().file_name().map(ToOwned::to_owned);
                let root = dir.path().join(name.unwrap_or_else(|| "b".into()));
                tokio::fs::create_dir(&root)
                    .await
                    .context("creating the build dir")?;
                self.hand_over(dir.path()).await?;
                (dir, root)
            }
        };
        let layout = root.clone();
        let limits = self.inner.archive_limits.clone();
        let project = tokio::task::spawn_blocking(move || Project::lay_out(&layout, req, &limits))
            .await
            .context("laying out the upload")??;
        self.hand_over(&root).await?;
        let _scratch = dir;
        let p = root.as_path();
        let src_url = format!("file://{}/src/", p.display());
        let entry_arg = format!("src/{}", project.entry);
        // The warm worker's configuration is fixed: an upload that brings its
        // own is checked the cold way.
        let mut lease = match lease {
            Some(l) if !project.has_own_config() => {
                let src = p.join("src");
                let own = tokio::task::spawn_blocking(move || warm::has_own_config(&src))
                    .await
                    .unwrap_or(true);
                (!own).then_some(l)
            }
            _ => None,
        };

        // 1. The graph, offline. Without a warm checker the type check
        // starts at once beside it: when the graph turns out to need no
        // download and no new mapping (most deploys), its answer stands and
        // the deploy does not wait for it again.
        project.write_config(p, &BTreeMap::new())?;
        let registries = self.registries().await?;
        let allow_import = registries.allow_import_flag();
        let heap = format!("--v8-flags=--max-old-space-size={}", self.heap_mb());
        let early_check = lease.is_none().then(|| {
            let me = self.clone();
            let clock = clock.clone();
            let (deno, dir) = (deno.clone(), p.to_owned());
            let args: Vec<String> = [
                "check",
                "--quiet",
                &heap,
                &allow_import,
                "--config",
                CONFIG,
                "--no-lock",
                &entry_arg,
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            AbortOnDrop::new(tokio::spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                clock
                    .time("check", me.run(&deno, &dir, &args, Step::Offline))
                    .await
            }))
        });
        let info = clock
            .time(
                "graph",
                self.run(
                    &deno,
                    p,
                    &[
                        "info",
                        "--json",
                        "--no-remote",
                        "--no-npm",
                        "--no-lock",
                        "--config",
                        CONFIG,
                        &entry_arg,
                    ],
                    Step::Offline,
                ),
            )
            .await?;
        if !info.status.success() {
            return Err(source_error(&diagnostics(&info, p)));
        }
        let graph: Graph =
            serde_json::from_slice(&info.stdout[..info.stdout.len().min(MAX_GRAPH_BYTES)])
                .context("reading deno info's module graph")?;
        let found = imports::inspect(&graph, &src_url, &registries.hosts);
        if !found.syntax.is_empty() {
            return Err(CheckError::Syntax(found.syntax.join("\n\n")));
        }
        if !found.refused.is_empty() {
            return Err(CheckError::ImportNotAllowed(format!(
                "imports not allowed: {}. Allowed: node:, relative files of the upload, npm:, \
                 jsr:, bare package names, and https: from this server's import hosts",
                found.refused.join(", ")
            )));
        }
        if !found.missing.is_empty() {
            return Err(CheckError::DependencyUnavailable(format!(
                "cannot load: {}",
                found.missing.join("; ")
            )));
        }
        let mut bare = BTreeMap::new();
        for (k, target) in &found.bare {
            for (key, t) in imports::map_entries(k, target) {
                bare.insert(key, t);
            }
        }
        project.write_config(p, &bare)?;

        // 2. Resolve and pin, through the egress proxy.
        let lock = if found.remote {
            clock
                .time("resolve", self.resolve(&deno, p, &entry_arg, &allow_import))
                .await?;
            true
        } else {
            false
        };
        let lock_args: Vec<&str> = if lock {
            vec!["--lock", LOCK, "--frozen"]
        } else {
            vec!["--no-lock"]
        };

        // 3. Bundle and check side by side, offline.
        self.ensure_bundler(&deno).await?;
        let mut bundle_args = vec!["bundle", "--quiet", &allow_import, "--config", CONFIG];
        bundle_args.extend(&lock_args);
        bundle_args.extend([
            "--platform",
            "deno",
            "--sourcemap=inline",
            "-o",
            ARTIFACT,
            &entry_arg,
        ]);
        let mut check_args = vec!["check", "--quiet", &heap, &allow_import, "--config", CONFIG];
        check_args.extend(&lock_args);
        check_args.push(&entry_arg);
        let simple = found.bare.is_empty() && !found.remote;
        let cold_check = || clock.time("check", self.run(&deno, p, &check_args, Step::Offline));
        let (bundled, warnings) = match (simple, early_check, lease.as_mut()) {
            (true, Some(early), _) => {
                let (bundled, checked) = tokio::join!(
                    clock.time("bundle", self.run(&deno, p, &bundle_args, Step::Bundle)),
                    early.join()
                );
                (bundled?, check_warnings(&checked?, p))
            }
            (true, None, Some(lease)) => {
                let (bundled, warm) = tokio::join!(
                    clock.time("bundle", self.run(&deno, p, &bundle_args, Step::Bundle)),
                    clock.time(
                        "check",
                        warm_check(lease, &graph, &src_url, p, self.inner.timeout)
                    )
                );
                let warnings = match warm {
                    Ok(w) => w,
                    Err(e @ warm::WarmError::Timeout(_)) => {
                        return Err(CheckError::Rejected(e.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the warm type checker failed; checking with deno check");
                        check_warnings(&cold_check().await?, p)
                    }
                };
                (bundled?, warnings)
            }
            _ => {
                let (bundled, checked) = tokio::join!(
                    clock.time("bundle", self.run(&deno, p, &bundle_args, Step::Bundle)),
                    cold_check(),
                );
                (bundled?, check_warnings(&checked?, p))
            }
        };
        if !bundled.status.success() {
            return Err(source_error(&diagnostics(&bundled, p)));
        }
        if req_strict(&project) && !warnings.is_empty() {
            return Err(CheckError::Rejected(warnings.join("\n\n")));
        }

        // 4. Load it as the runtime will.
        let shape = clock.time("probe", self.probe(&deno, p)).await?;
        let artifact_path = p.join(ARTIFACT);
        let max = self.inner.max_artifact_bytes;
        let (artifact, lock) = tokio::task::spawn_blocking({
            let lock_path = p.join(LOCK);
            move || -> Result<(Vec<u8>, Option<Vec<u8>>), CheckError> {
                let len = std::fs::metadata(&artifact_path)
                    .context("the bundle was not written")?
                    .len();
                if len > max as u64 {
                    return Err(CheckError::TooLarge(format!(
                        "the bundled function is {len} bytes, over this server's limit of {max}"
                    )));
                }
                let artifact = std::fs::read(&artifact_path).context("reading the bundle")?;
                let lock = lock.then(|| std::fs::read(&lock_path)).transpose();
                Ok((artifact, lock.context("reading the lock file")?))
            }
        })
        .await
        .context("reading the build")??;
        Ok(Built {
            artifact: String::from_utf8(artifact).context("the bundle is not UTF-8")?,
            lock: lock.map(|l| String::from_utf8_lossy(&l).into_owned()),
            entry: project.entry.clone(),
            warnings,
            resolved: found.bare,
            shape,
        })
    }

    /// `deno install` of the graph through the egress proxy; a refusal of the
    /// proxy is the author's disallowed import, anything else an unavailable
    /// dependency.
    async fn resolve(
        &self,
        deno: &Path,
        dir: &Path,
        entry: &str,
        allow_import: &str,
    ) -> Result<(), CheckError> {
        let egress = self.egress().await?;
        let args = [
            "install",
            "--quiet",
            allow_import,
            "--config",
            CONFIG,
            "--lock",
            LOCK,
            "--entrypoint",
            entry,
        ];
        let out = self.run(deno, dir, &args, egress.step()).await?;
        let (disallowed, other) = egress.refusals();
        if !disallowed.is_empty() {
            return Err(CheckError::ImportNotAllowed(format!(
                "the dependencies reach what this server does not allow: {}",
                disallowed.join("; ")
            )));
        }
        if !out.status.success() {
            let mut why = diagnostics(&out, dir);
            if !other.is_empty() {
                why = format!("{}\n{why}", other.join("; "));
            }
            return Err(CheckError::DependencyUnavailable(format!(
                "could not download the dependencies: {why}"
            )));
        }
        Ok(())
    }

    /// Runs the client runtime's probe on the artifact.
    async fn probe(&self, deno: &Path, dir: &Path) -> Result<String, CheckError> {
        let runtime = dir.join(PROBE_RUNTIME);
        let module = dir.join(ARTIFACT);
        let read = format!("--allow-read={}", dir.display());
        let heap = format!("--v8-flags=--max-old-space-size={}", self.heap_mb());
        let runtime_arg = runtime.display().to_string();
        let module_arg = module.display().to_string();
        let args = [
            "run",
            "--no-prompt",
            "--no-remote",
            "--no-npm",
            "--cached-only",
            "--no-config",
            "--no-lock",
            &read,
            "--deny-net",
            "--deny-env",
            "--deny-run",
            "--deny-ffi",
            "--deny-sys",
            &heap,
            &runtime_arg,
            "--probe",
            "--module",
            &module_arg,
        ];
        let out = self.run(deno, dir, &args, Step::Probe).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<ProbeAnswer>(l).ok());
        match answer {
            Some(a) if a.ok => Ok(a.shape.unwrap_or_else(|| "default".into())),
            Some(a) => {
                let message = clean(a.message.as_deref().unwrap_or(""), dir);
                Err(match a.code.as_deref() {
                    Some("no_handler") => CheckError::NoHandler(message),
                    _ => CheckError::ModuleFailed(format!(
                        "the module failed while loading: {message}"
                    )),
                })
            }
            None => Err(CheckError::ModuleFailed(format!(
                "the module failed while loading: {}",
                diagnostics(&out, dir)
            ))),
        }
    }
}

/// A spawned step that is stopped (its process killed) when no longer wanted.
struct AbortOnDrop(Option<tokio::task::JoinHandle<Result<std::process::Output, CheckError>>>);

impl AbortOnDrop {
    fn new(h: tokio::task::JoinHandle<Result<std::process::Output, CheckError>>) -> Self {
        Self(Some(h))
    }

    async fn join(mut self) -> Result<std::process::Output, CheckError> {
        let Some(handle) = self.0.take() else {
            return Err(CheckError::Internal(anyhow::anyhow!(
                "the step was already taken"
            )));
        };
        handle
            .await
            .map_err(|e| CheckError::Internal(anyhow::anyhow!("the type check task: {e}")))?
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// `deno check`'s answer as warnings.
fn check_warnings(checked: &std::process::Output, dir: &Path) -> Vec<String> {
    if checked.status.success() {
        Vec::new()
    } else if checked.status.code() == Some(super::HEAP_EXHAUSTED) {
        vec!["type checking ran out of memory; the types were not checked".into()]
    } else {
        split_diagnostics(&diagnostics(checked, dir))
    }
}

/// The type check by the tenant's warm checker: every module of the upload
/// in the graph, opened together.
async fn warm_check(
    lease: &mut warm::Lease,
    graph: &Graph,
    src_url: &str,
    dir: &Path,
    limit: std::time::Duration,
) -> Result<Vec<String>, warm::WarmError> {
    let files = graph_files(graph, src_url)
        .await
        .map_err(warm::WarmError::Failed)?;
    let checked = lease.check(&files, limit).await?;
    Ok(warm::warnings_from(&checked, &dir.join("src")))
}

/// The upload's own script modules in the graph, read.
async fn graph_files(graph: &Graph, src_url: &str) -> anyhow::Result<Vec<warm::SourceFile>> {
    let mut files = Vec::new();
    for m in &graph.modules {
        if !m.specifier.starts_with(src_url) || m.error.is_some() {
            continue;
        }
        let path = url::Url::parse(&m.specifier)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .with_context(|| format!("a module that is not a file: {}", m.specifier))?;
        let script = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| SCRIPT_EXTENSIONS.contains(&e));
        if !script {
            continue;
        }
        let text = tokio::fs::read_to_string(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        files.push(warm::SourceFile { path, text });
    }
    Ok(files)
}

/// Modules the type checker reads as code (JSON and Wasm imports are not).
const SCRIPT_EXTENSIONS: &[&str] = &["ts", "tsx", "mts", "cts", "js", "jsx", "mjs", "cjs"];

fn req_strict(p: &Project) -> bool {
    p.strict
}

/// Why the graph could not be built or bundled: a parse error is the
/// author's syntax; anything else a module that cannot be loaded.
fn source_error(text: &str) -> CheckError {
    let syntax = [
        "SyntaxError",
        "could not be parsed",
        "Expected ",
        "Unexpected ",
        "Unterminated ",
    ];
    if syntax.iter().any(|s| text.contains(s)) {
        CheckError::Syntax(text.to_owned())
    } else {
        CheckError::DependencyUnavailable(text.to_owned())
    }
}

/// A run's stderr and stdout, about the user's files only.
fn diagnostics(out: &std::process::Output, dir: &Path) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    super::clean_diagnostics(&text, &dir.join("src"))
        .replace(&format!("file://{}/", dir.display()), "")
        .replace(&format!("{}/", dir.display()), "")
}

fn clean(text: &str, dir: &Path) -> String {
    text.replace(&format!("file://{}/src/", dir.display()), "")
        .replace(&format!("{}/src/", dir.display()), "")
        .replace(&format!("file://{}/", dir.display()), "")
        .replace(&format!("{}/", dir.display()), "")
}

/// Adds one warning, cut to `MAX_WARNING_BYTES`, unless there are
/// `MAX_WARNINGS` already.
pub(super) fn push_warning(out: &mut Vec<String>, mut block: String) {
    if block.is_empty() || out.len() >= MAX_WARNINGS {
        return;
    }
    if block.len() > MAX_WARNING_BYTES {
        let mut cut = MAX_WARNING_BYTES;
        while !block.is_char_boundary(cut) {
            cut -= 1;
        }
        block.truncate(cut);
        block.push('…');
    }
    out.push(block);
}

/// `deno check`'s output as one warning per diagnostic (`TS… [ERROR]: …`
/// with its source line and location), without the summary lines.
fn split_diagnostics(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        let block = current.trim().to_owned();
        current.clear();
        push_warning(out, block);
    };
    for line in text.lines() {
        let summary = line.starts_with("error: Type checking failed")
            || line.starts_with("Found ")
            || line.starts_with("Check ")
            || line.starts_with("error: ") && line.contains("errors");
        if summary {
            continue;
        }
        if line.starts_with("TS") && line.contains("[ERROR]") {
            flush(&mut current, &mut out);
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, &mut out);
    out
}

/// The scratch files of a build besides the upload: the ambient types and the
/// client runtime for the probe.
pub(super) fn own_files(root: &Path) -> std::io::Result<()> {
    std::fs::write(root.join("skiff-env.d.ts"), SVRLESS_ENV)?;
    let runtime = root.join(PROBE_RUNTIME);
    if let Some(parent) = runtime.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&runtime, RUNTIME_MAIN)?;
    std::fs::create_dir_all(root.join("probe-cache"))?;
    Ok(())
}

pub(super) fn config_path(root: &Path) -> PathBuf {
    root.join(CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_output_splits_into_one_warning_per_diagnostic() {
        let text = "TS18046 [ERROR]: 'err' is of type 'unknown'.\n  return err.message;\n         ~~~\n    at main.ts:3:10\n\n\
                    TS7006 [ERROR]: Parameter 'x' implicitly has an 'any' type.\n    at lib/a.ts:1:10\n\n\
                    Found 2 errors.\n\nerror: Type checking failed.\n";
        let w = split_diagnostics(text);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("TS18046") && w[0].ends_with("at main.ts:3:10"));
        assert!(w[1].contains("lib/a.ts:1:10"));
    }

    #[test]
    fn parse_errors_are_syntax_errors() {
        assert!(matches!(
            source_error("error: The module's source code could not be parsed: Expected ';'"),
            CheckError::Syntax(_)
        ));
        assert!(matches!(
            source_error("error: Module not found \"./gone.ts\""),
            CheckError::DependencyUnavailable(_)
        ));
    }
}
