//! Warm type checkers: long-lived `deno lsp` processes, each in the checker's
//! OS sandbox, that keep TypeScript's libraries parsed between deploys, so a
//! deploy's type check costs ~0.1 s instead of a new `deno check` process
//! (~1–2 s on a small machine, nearly all of it building the same program).
//!
//! Tenants never share one: a worker is started unassigned (a spare, warmed
//! on a file of our own), bound to the first user whose deploy takes it, and
//! from then on serves only that user's deploys. Its Landlock rules allow
//! its own directory (where that user's build dirs are made), the checker's
//! Deno cache and the Deno binary; it has no network, its own cgroup, and
//! dies with the manager. A worker is recycled after `MAX_CHECKS` checks or
//! when its memory grows past half its limit, and stopped after
//! `IDLE_STOP` unused.
//!
//! Only the simple case is served warm — a graph of the upload's own files
//! with no configuration of its own — because the worker's configuration is
//! fixed when it starts. Anything else, and any failure of a worker (it
//! died, timed out, answered nonsense), falls back to `deno check`: the
//! warm checker can make a deploy faster, never make it fail.

mod lsp;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::Child;

use super::LocalChecker;
use lsp::Conn;
pub use report::warnings_from;

/// Checks one worker serves before it is replaced (the server keeps closed
/// documents' modules cached; this bounds what it holds).
const MAX_CHECKS: u64 = 200;
/// An assigned worker unused this long is stopped (memory back to the host).
const IDLE_STOP: Duration = Duration::from_secs(5 * 60);
/// An idle worker of another user may be stopped to make a spare once it
/// has been unused this long (not sooner: two users deploying by turns
/// would otherwise replace each other's workers on every deploy).
const EVICT_AFTER: Duration = Duration::from_secs(30);
/// Starting and warming a worker (the first check builds the whole program).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One warm check at most (the operator's check timeout when shorter); past
/// it the worker is killed and the source's check has timed out.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// CPU seconds over a worker's whole life (its rlimit); recycling comes first.
const WORKER_CPU_SECS: u64 = 1800;
/// What a worker's directory holds besides build dirs.
const WORKER_CONFIG: &str = r#"{
  "compilerOptions": { "types": ["./skiff-env.d.ts"] },
  "nodeModulesDir": "none",
  "lock": false
}
"#;
const WARMUP_SOURCE: &str =
    "export default (req: Request): Response => new Response(new URL(req.url).pathname);\n";

/// A file of the graph to check: its path in the build dir and its text.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// One pull of diagnostics for one file.
pub struct FileDiagnostics {
    pub path: PathBuf,
    pub text: String,
    pub items: Vec<serde_json::Value>,
}

pub struct WarmPool {
    max: usize,
    state: Mutex<State>,
    /// Names worker directories uniquely within this manager.
    serial: AtomicU64,
    /// Checks answered warm, and warm checks that failed over to `deno check`.
    served: AtomicU64,
    failed: AtomicU64,
}

/// What the pool holds now (for operators and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Started and warm, not yet bound to a user.
    pub spare: usize,
    /// Bound to a user, waiting for that user's next deploy.
    pub assigned: usize,
    pub leased: usize,
    pub starting: usize,
    pub served: u64,
    pub failed: u64,
    /// The idle workers: whose (none for a spare) and where.
    pub idle: Vec<IdleWorker>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdleWorker {
    pub tenant: Option<String>,
    pub dir: PathBuf,
    pub checks: u64,
}

#[derive(Default)]
struct State {
    idle: Vec<Worker>,
    leased: usize,
    starting: usize,
    reaper: bool,
    /// Shut down: nothing starts, nothing goes back to `idle`.
    closed: bool,
}

impl State {
    fn total(&self) -> usize {
        self.idle.len() + self.leased + self.starting
    }
    fn has_spare(&self) -> bool {
        self.starting > 0 || self.idle.iter().any(|w| w.tenant.is_none())
    }
}

struct Worker {
    dir: PathBuf,
    child: Child,
    conn: Conn,
    cgroup: Option<skiff_sandbox::cgroups::CgroupDirs>,
    memory_limit: u64,
    tenant: Option<String>,
    checks: u64,
    last_used: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The check ran past its limit: the source's verdict, as `deno check`'s
    /// timeout would be (no second try that would double the wait).
    #[error("type checking took longer than {} s", .0.as_secs())]
    Timeout(Duration),
    /// The worker failed; `deno check` answers instead.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// A worker lent to one build; back to the pool on drop unless it failed.
pub struct Lease {
    worker: Option<Worker>,
    pool: Weak<WarmPool>,
    healthy: bool,
}

impl WarmPool {
    /// A pool of at most `max` workers (0: no warm checks at all).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            state: Mutex::new(State::default()),
            serial: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    pub fn status(&self) -> Status {
        let s = self.lock();
        let spare = s.idle.iter().filter(|w| w.tenant.is_none()).count();
        Status {
            spare,
            assigned: s.idle.len() - spare,
            leased: s.leased,
            starting: s.starting,
            served: self.served.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            idle: s
                .idle
                .iter()
                .map(|w| IdleWorker {
                    tenant: w.tenant.clone(),
                    dir: w.dir.clone(),
                    checks: w.checks,
                })
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves plain counters: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a spare if there is room and none is there or coming.
    pub fn prewarm(self: &Arc<Self>, checker: &LocalChecker) {
        if !self.enabled() {
            return;
        }
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if !s.reaper {
            s.reaper = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
        if s.has_spare() {
            return;
        }
        if s.total() >= self.max {
            // Make room: the least recently used idle worker of some user,
            // if it has been idle a while.
            let oldest = s
                .idle
                .iter()
                .enumerate()
                .filter(|(_, w)| w.tenant.is_some() && w.last_used.elapsed() >= EVICT_AFTER)
                .min_by_key(|(_, w)| w.last_used)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    let w = s.idle.swap_remove(i);
                    tokio::spawn(w.stop());
                }
                None => return,
            }
        }
        s.starting += 1;
        drop(s);
        let pool = self.clone();
        let checker = checker.clone();
        tokio::spawn(async move {
            let n = pool.serial.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let worker = tokio::time::timeout(START_TIMEOUT, Worker::start(&checker, n)).await;
            let late = {
                let mut s = pool.lock();
                s.starting -= 1;
                match worker {
                    // Shut down meanwhile: stop it (below, without the lock).
                    Ok(Ok(w)) if s.closed => Some(w),
                    Ok(Ok(w)) => {
                        tracing::debug!(
                            ms = started.elapsed().as_millis() as u64,
                            "a warm type checker is ready"
                        );
                        s.idle.push(w);
                        None
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %format!("{e:#}"), "a warm type checker did not start; deploys use deno check");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("a warm type checker did not start in time");
                        None
                    }
                }
            };
            if let Some(w) = late {
                w.stop().await;
            }
        });
    }

    /// The tenant's worker, or a spare bound to the tenant from now on; `None`
    /// when neither is idle (the build checks the cold way).
    pub fn lease(self: &Arc<Self>, tenant: &str, checker: &LocalChecker) -> Option<Lease> {
        if !self.enabled() {
            return None;
        }
        let taken = {
            let mut s = self.lock();
            let own = s
                .idle
                .iter()
                .position(|w| w.tenant.as_deref() == Some(tenant));
            let pick = own.or_else(|| s.idle.iter().position(|w| w.tenant.is_none()));
            pick.map(|i| {
                let mut w = s.idle.swap_remove(i);
                w.tenant = Some(tenant.to_owned());
                s.leased += 1;
                w
            })
        };
        // Another user's next deploy should find a spare.
        self.prewarm(checker);
        taken.map(|w| Lease {
            worker: Some(w),
            pool: Arc::downgrade(self),
            healthy: true,
        })
    }

    fn give_back(self: &Arc<Self>, mut w: Worker, healthy: bool) {
        let mut s = self.lock();
        s.leased -= 1;
        w.last_used = Instant::now();
        if healthy && !s.closed && w.checks < MAX_CHECKS && !w.memory_grown() {
            s.idle.push(w);
        } else {
            drop(s);
            tokio::spawn(w.stop());
        }
    }
}

impl WarmPool {
    /// Stops every idle worker and removes its dir; workers still lent out or
    /// starting are stopped when they come back. For a clean shutdown: a
    /// stopped manager leaves nothing under `checks/`.
    pub async fn shutdown(&self) {
        let idle = {
            let mut s = self.lock();
            s.closed = true;
            std::mem::take(&mut s.idle)
        };
        for w in idle {
            w.stop().await;
        }
    }
}

/// Stops workers unused for `IDLE_STOP` (never the spare: it is what makes a
/// new user's first deploy fast).
async fn reap(pool: Weak<WarmPool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let stale: Vec<Worker> = {
            let mut s = pool.lock();
            let (stale, keep) = std::mem::take(&mut s.idle)
                .into_iter()
                .partition(|w| w.tenant.is_some() && w.last_used.elapsed() >= IDLE_STOP);
            s.idle = keep;
            stale
        };
        for w in stale {
            w.stop().await;
        }
    }
}

impl Lease {
    /// The directory this build's scratch dir goes in (the worker can read
    /// it; nothing else of the host).
    pub fn dir(&self) -> Option<&Path> {
        self.worker.as_ref().map(|w| w.dir.as_path())
    }

    /// Diagnostics of each file, the graph's files all open at once (so each
    /// sees the others as they are), within `limit` (capped at
    /// `CHECK_TIMEOUT`). On any failure the worker is retired.
    pub async fn check(
        &mut self,
        files: &[SourceFile],
        limit: Duration,
    ) -> Result<Vec<FileDiagnostics>, WarmError> {
        let Some(w) = self.worker.as_mut() else {
            return Err(WarmError::Failed(anyhow::anyhow!(
                "the lease has no worker"
            )));
        };
        w.checks += 1;
        let limit = limit.min(CHECK_TIMEOUT);
        let out = match tokio::time::timeout(limit, w.check(files)).await {
            Ok(r) => r.map_err(WarmError::Failed),
            Err(_) => Err(WarmError::Timeout(limit)),
        };
        if let Some(pool) = self.pool.upgrade() {
            let counter = if out.is_ok() {
                &pool.served
            } else {
                &pool.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if out.is_err() {
            self.healthy = false;
        }
        out
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            match self.pool.upgrade() {
                Some(pool) => pool.give_back(w, self.healthy),
                None => drop(tokio::spawn(w.stop())),
            }
        }
    }
}

impl Worker {
    async fn start(checker: &LocalChecker, n: u64) -> anyhow::Result<Self> {
        let deno = checker
            .usable_deno()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = format!("warm-{}-{n}", std::process::id());
        let dir = checker.scratch_root().join(&name);
        let layout = dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&layout)?;
            std::fs::write(layout.join("deno.json"), WORKER_CONFIG)?;
            std::fs::write(layout.join("warm.ts"), WARMUP_SOURCE)?;
            super::build::own_files(&layout)
        })
        .await
        .context("laying out a warm checker")?
        .context("laying out a warm checker")?;
        let dir = std::fs::canonicalize(&dir).context("the warm checker's dir")?;
        checker.hand_over_dir(&dir).await?;
        let (mut child, cgroup, memory_limit) = checker
            .spawn_sandboxed(&deno, &dir, &["lsp"], &name, WORKER_CPU_SECS)
            .await?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("deno lsp has no pipes");
        };
        let mut w = Self {
            conn: Conn::new(stdin, stdout),
            child,
            cgroup,
            memory_limit,
            dir,
            tenant: None,
            checks: 0,
            last_used: Instant::now(),
        };
        let root = file_uri(&w.dir)?;
        w.conn.initialize(&root).await?;
        // The first check builds the program from TypeScript's libraries: pay
        // it now, on a file of our own, not on a user's deploy.
        let warm = SourceFile {
            path: w.dir.join("warm.ts"),
            text: WARMUP_SOURCE.into(),
        };
        let got = w.check(std::slice::from_ref(&warm)).await?;
        let errors = got
            .iter()
            .flat_map(|f| report::errors(&f.items))
            .next()
            .is_some();
        if errors {
            anyhow::bail!("the warm-up file has type errors: the worker's types are not ours");
        }
        Ok(w)
    }

    async fn check(&mut self, files: &[SourceFile]) -> anyhow::Result<Vec<FileDiagnostics>> {
        let mut uris = Vec::with_capacity(files.len());
        for f in files {
            let uri = file_uri(&f.path)?;
            self.conn.open(&uri, language_of(&f.path), &f.text).await?;
            uris.push(uri);
        }
        let mut out = Vec::with_capacity(files.len());
        let mut result = Ok(());
        for (f, uri) in files.iter().zip(&uris) {
            match self.conn.diagnostics(uri).await {
                Ok(items) => out.push(FileDiagnostics {
                    path: f.path.clone(),
                    text: f.text.clone(),
                    items,
                }),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for uri in &uris {
            self.conn.close(uri).await?;
        }
        result.map(|()| out)
    }

    /// Whether the worker's cgroup holds more than half its memory limit.
    fn memory_grown(&self) -> bool {
        let Some(c) = &self.cgroup else {
            return false;
        };
        c.dirs().iter().any(|d| {
            ["memory.current", "memory.usage_in_bytes"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .filter_map(|s| s.trim().parse::<u64>().ok())
                .any(|used| used > self.memory_limit / 2)
        })
    }

    async fn stop(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        drop(self.cgroup.take());
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

fn file_uri(path: &Path) -> anyhow::Result<String> {
    url::Url::from_file_path(path)
        .map(String::from)
        .map_err(|()| anyhow::anyhow!("{} is not an absolute path", path.display()))
}

fn language_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => "javascript",
        Some("jsx") => "javascriptreact",
        Some("tsx") => "typescriptreact",
        _ => "typescript",
    }
}

/// Whether the upload under `src` carries a configuration the warm worker
/// would not apply (its own is fixed at start).
pub fn has_own_config(src: &Path) -> bool {
    fn walk(dir: &Path, depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return true;
        };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if matches!(
                name.as_ref(),
                "deno.json" | "deno.jsonc" | "package.json" | "tsconfig.json" | "jsconfig.json"
            ) {
                return true;
            }
            // Archives are bounded in depth and entries when unpacked.
            e.file_type().is_ok_and(|t| t.is_dir()) && (depth > 32 || walk(&e.path(), depth + 1))
        })
    }
    walk(src, 0)
}

/// Removes the directories of warm workers left by a manager that was killed
/// (none of this manager's, which are named after its pid).
pub fn sweep_stale(scratch: &Path) -> usize {
    let own = format!("warm-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("warm-") && !n.starts_with(&own) && !pid_alive(&n)
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Whether the pid in `warm-<pid>-<n>` is a live process (another manager on
/// the same data dir keeps its workers).
fn pid_alive(name: &str) -> bool {
    name.split('-')
        .nth(1)
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_with_a_config_file_anywhere_is_not_checked_warm() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/deep")).unwrap();
        std::fs::write(d.path().join("main.ts"), "").unwrap();
        assert!(!has_own_config(d.path()));
        std::fs::write(d.path().join("lib/deep/package.json"), "{}").unwrap();
        assert!(has_own_config(d.path()));
    }

    #[test]
    fn only_dead_managers_worker_dirs_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let own = d.path().join(format!("warm-{}-0", std::process::id()));
        // above the kernel's largest pid (2^22): never alive
        let dead = d.path().join("warm-4194304-3");
        let other = d.path().join("check-abc");
        for p in [&own, &dead, &other] {
            std::fs::create_dir_all(p).unwrap();
        }
        assert_eq!(sweep_stale(d.path()), 1);
        assert!(own.exists() && other.exists() && !dead.exists());
    }
}
