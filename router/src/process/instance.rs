//! One running instance: a sandboxed Deno process serving one function version
//! on a Unix socket in its own temp dir, with a pooled HTTP client to it.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use skiff_core::logs::{LogWriter, MAX_LINE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot, watch};

use super::command::{Placeholders, clean_env, runtime_args};
use super::driver::{Managed, REDEPLOYED};
use super::runtime_files::RuntimeFiles;
use super::sandbox::{InstancePaths, Sandbox, socket_path};
use crate::body::ProxyBody;
use crate::directory::FunctionRef;
use crate::error::StartError;
use crate::runtime::BoxFuture;
use crate::tunnel::GoingAway;
use crate::uds::UdsConnector;

/// The line the client runtime writes to stderr once its socket listens.
const READY_LINE: &str = "skiff-runtime: listening";
/// If the ready line is missed (the function wrote over it, say), the socket
/// is still tried this often.
const READY_FALLBACK_POLL: Duration = Duration::from_millis(50);
/// After the drain grace, upgraded connections still open are told to close;
/// they get this long to say goodbye before the instance is stopped.
const UPGRADED_CLOSE_WAIT: Duration = Duration::from_secs(3);

pub struct SpawnSpec<'a> {
    pub sandbox: &'a Arc<Sandbox>,
    pub instances_dir: &'a Path,
    /// This version's V8 heap cap and memory cgroup limit.
    pub heap_mb: u32,
    pub memory_mb: u64,
    pub deny_net: &'a str,
    pub runtime: &'a RuntimeFiles,
    pub start_timeout: Duration,
    pub log: Arc<LogWriter>,
}

pub struct Instance {
    pub id: u64,
    /// The Deno process (for operators and fault tests).
    pub pid: Option<u32>,
    pub function: Arc<FunctionRef>,
    pub client: Client<UdsConnector, ProxyBody>,
    /// To the instance's health socket, served by the function's own isolate.
    health: Client<UdsConnector, ProxyBody>,
    log: Arc<LogWriter>,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last request's end or start.
    last_used: AtomicU64,
    epoch: Instant,
    alive: Arc<AtomicBool>,
    /// Set while draining: the last lease to end then wakes the drain.
    draining: AtomicBool,
    drained: Notify,
    /// Set once upgraded connections on this instance must close (and why).
    going_away: watch::Sender<Option<&'static str>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    exited: watch::Receiver<Option<String>>,
}

/// Holds an instance busy: while any lease lives, draining waits.
pub struct Lease {
    pub instance: Arc<Instance>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let i = &self.instance;
        i.touch();
        if i.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && i.draining.load(Ordering::Acquire) {
            i.drained.notify_waiters();
        }
    }
}

impl Instance {
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.store(ms, Ordering::Release);
    }

    pub fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_used.load(Ordering::Acquire)))
    }

    /// Counts a request in. Callers take leases only on the serving instance
    /// while holding the runtime's lock, so a drain never misses one.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Lease {
            instance: self.clone(),
        }
    }

    /// Kills the process (if still running); its watcher cleans up.
    pub fn kill(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    /// After a failed exchange: an instance that refuses connections is broken and
    /// is replaced; otherwise give its exit (if it is dying) a moment to register,
    /// so the next request starts a fresh instance instead of meeting a dead socket.
    pub async fn after_error(&self, refused_connection: bool) {
        if refused_connection {
            self.alive.store(false, Ordering::Release);
            self.kill();
        } else {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.wait_exit()).await;
        }
    }

    /// After a request timed out: asks the instance's health socket (answered by
    /// the same isolate as the function). No answer within a second means the
    /// event loop is stuck (e.g. an endless loop): the instance is stopped and
    /// `false` returned, so it is replaced, since every request it holds or
    /// gets would time out too.
    pub async fn responsive(&self) -> bool {
        let req = match http::Request::get("http://function/healthz").body(crate::body::full("")) {
            Ok(r) => r,
            Err(_) => return true,
        };
        let answered = matches!(
            tokio::time::timeout(Duration::from_secs(1), self.health.request(req)).await,
            Ok(Ok(r)) if r.status().is_success()
        );
        if !answered && self.alive() {
            let _ = self.log.line(
                "skiff",
                &format!(
                    "instance {} replaced: it stopped responding (blocked event loop?)",
                    self.id
                ),
            );
            self.alive.store(false, Ordering::Release);
            self.kill();
            return false;
        }
        answered || !self.alive()
    }

    /// Waits until the process is gone.
    pub async fn wait_exit(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// What upgraded connections on this instance watch to learn it goes.
    pub fn going_away(&self) -> GoingAway {
        self.going_away.subscribe()
    }

    /// Tells upgraded connections on this instance to close, saying `why`
    /// (the first reason given stays).
    pub fn close_upgraded(&self, why: &'static str) {
        self.going_away.send_if_modified(|w| {
            let first = w.is_none();
            if first {
                *w = Some(why);
            }
            first
        });
    }

    /// Waits for in-flight requests to end (at most `grace`), then kills. What
    /// is still open then are long-lived upgraded connections: they are told
    /// to close and get a moment for it. The last lease to end wakes it;
    /// nothing polls.
    pub async fn drain_and_stop(self: Arc<Self>, grace: Duration) {
        self.draining.store(true, Ordering::Release);
        let now = tokio::time::Instant::now();
        if !self.wait_drained(now + grace).await {
            self.close_upgraded(REDEPLOYED);
            self.wait_drained(tokio::time::Instant::now() + UPGRADED_CLOSE_WAIT)
                .await;
        }
        self.kill();
        self.wait_exit().await;
    }

    /// Whether every lease ended (or the process did) before `deadline`.
    async fn wait_drained(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let woken = self.drained.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.in_flight() == 0 || !self.alive() {
                return true;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.wait_exit() => return true,
            }
        }
    }
}

impl Managed for Instance {
    fn id(&self) -> u64 {
        self.id
    }

    fn alive(&self) -> bool {
        Instance::alive(self)
    }

    fn in_flight(&self) -> usize {
        Instance::in_flight(self)
    }

    fn idle_for(&self) -> Duration {
        Instance::idle_for(self)
    }

    fn kill(&self) {
        Instance::kill(self);
    }

    fn close_upgraded(&self, why: &'static str) {
        Instance::close_upgraded(self, why);
    }

    fn wait_exit(&self) -> BoxFuture<'_, ()> {
        Box::pin(Instance::wait_exit(self))
    }

    fn drain_and_stop(self: Arc<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(Instance::drain_and_stop(self, grace))
    }
}

/// Deno's cache dir for one function version, kept across its instances: a start
/// with a warm cache skips re-transpiling and re-compiling (measured: 47 → 28 ms
/// from spawn to first answer). A new one is seeded with the runtime's compiled
/// code. Inside the version's code dir, so it goes with the code; owned by the
/// function's own identity, so no other function can write it.
fn prepare_deno_dir(
    code_dir: &Path,
    ids: Option<(u32, u32)>,
    runtime: &RuntimeFiles,
) -> std::io::Result<PathBuf> {
    let dir = code_dir.join(".deno");
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            runtime.seed(&dir, ids);
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

fn prepare_tmp_dir(dir: &Path, ids: Option<(u32, u32)>) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// How the launcher's own messages start, and its exit code when it refused.
const LAUNCHER_PREFIX: &str = "skiff-sandbox: ";
const LAUNCHER_FAILED: i32 = 125;

/// Reads `from` line by line (cutting very long lines) into the function's log,
/// keeping the last few stderr lines for start-failure messages.
fn pump(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    stream: &'static str,
    log: Arc<LogWriter>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    ready: Option<Arc<Notify>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        let mut warned = false;
        let mut emit = |line: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(line).into_owned();
            // The launcher's own words (it failed before Deno ran) name host
            // paths: they are for the operator, not the function's owner.
            if let Some(why) = text.strip_prefix(LAUNCHER_PREFIX) {
                tracing::error!(reason = %why.escape_debug(), "the sandbox launcher refused to start an instance");
                line.clear();
                return;
            }
            if let Err(e) = log.line(stream, &text)
                && !warned
            {
                tracing::warn!(error = %e, "cannot write a function log; dropping its lines");
                warned = true;
            }
            // Only a hint: the socket is still tried before the instance counts as ready.
            if let Some(r) = &ready
                && text == READY_LINE
            {
                r.notify_one();
            }
            if let Some(t) = &tail {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == 5 {
                    t.pop_front();
                }
                // Quoted later in a start failure, in the owner's log and ours.
                t.push_back(skiff_core::logs::neutralise(&text).into_owned());
            }
            line.clear();
        };
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b == b'\n' {
                    emit(&mut line);
                } else if line.len() < MAX_LINE {
                    line.push(b);
                }
            }
        }
        if !line.is_empty() {
            emit(&mut line);
        }
    })
}

/// Starts an instance of `f` from the code in `code_dir` and waits until it
/// accepts connections.
/// `env` is what the function sees (its env and opened secrets): it goes to
/// the runtime on stdin only, never into the process's environment, its
/// command line, a file or a log line.
pub async fn spawn(
    spec: &SpawnSpec<'_>,
    f: Arc<FunctionRef>,
    id: u64,
    code_dir: &Path,
    env: Vec<(String, String)>,
) -> Result<Arc<Instance>, StartError> {
    let host = |e: std::io::Error| StartError::Host(e.to_string());
    let sandbox = spec.sandbox;
    let ids = sandbox.ids_for(f.function_id);
    let tmp_dir = spec.instances_dir.join(id.to_string());
    // File work off the async workers.
    let deno_dir = {
        let (tmp_dir, code_dir, seed) =
            (tmp_dir.clone(), code_dir.to_owned(), spec.runtime.clone());
        tokio::task::spawn_blocking(move || {
            prepare_tmp_dir(&tmp_dir, ids)?;
            prepare_deno_dir(&code_dir, ids, &seed)
        })
        .await
        .map_err(|e| StartError::Host(e.to_string()))?
        .map_err(host)?
    };
    // The instance's cgroup is made and joined by the router while Deno starts
    // (making a v1 memory cgroup and moving a process into it take ~10–15 ms
    // each here, waiting for RCU grace periods: done by the launcher before
    // exec, they were on every start's critical path); the runtime imports the
    // function only after the router says so on its stdin (`--wait-for-go`),
    // so the function's code never runs outside its cgroup.
    let wait_for_go = sandbox.has_cgroups();
    let socket = socket_path(&tmp_dir, 's');
    let health_socket = socket_path(&tmp_dir, 'h');
    let code = code_dir.display().to_string();
    let mut write_dirs = tmp_dir.display().to_string();
    if sandbox.private_tmp() {
        write_dirs.push_str(",/tmp");
    }
    let main = spec.runtime.main.display().to_string();
    let env_names: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    // One line: JSON escapes the newlines inside values.
    let mut env_line = serde_json::to_vec(
        &env.into_iter()
            .collect::<std::collections::BTreeMap<String, String>>(),
    )
    .map_err(|e| StartError::Host(format!("encoding the env: {e}")))?;
    env_line.push(b'\n');
    let args = runtime_args(
        &Placeholders {
            code_dir: &code,
            write_dirs: &write_dirs,
            heap_mb: spec.heap_mb,
            deny_net: spec.deny_net,
            main: &main,
            env_names: &env_names,
        },
        &code_dir.join(skiff_core::layout::Layout::module_file(f.bundled)),
        &socket,
        Some(&health_socket),
        wait_for_go,
    );
    let policy = sandbox.policy(
        &InstancePaths {
            code_dir,
            deno_dir: &deno_dir,
            instance_dir: &tmp_dir,
            main: &spec.runtime.main,
            socket_path_len: socket.as_os_str().len(),
        },
        f.function_id,
    );
    let mut cmd = tokio::process::Command::new(&sandbox.launcher);
    cmd.args(policy.to_args(&sandbox.deno, &args));
    let tmp = if sandbox.private_tmp() {
        PathBuf::from("/tmp")
    } else {
        tmp_dir.clone()
    };
    clean_env(&mut cmd, &deno_dir, &tmp);
    // Spawned from this async worker thread, which lives as long as the
    // runtime: the instance's parent-death signal is tied to the spawning
    // thread, so never spawn from a short-lived (blocking-pool) thread.
    cmd.current_dir(code_dir)
        // Held open for the instance's life: EOF tells it the router is gone.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(host)?;
    let pid = child.id();
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let ready = Arc::new(Notify::new());
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, "stdout", spec.log.clone(), None, None));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(
            err,
            "stderr",
            spec.log.clone(),
            Some(stderr_tail.clone()),
            Some(ready.clone()),
        ));
    }

    let alive = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (exit_tx, exit_rx) = watch::channel(None);
    {
        let alive = alive.clone();
        let log = spec.log.clone();
        let tmp_dir = tmp_dir.clone();
        // `Child::wait` closes stdin first; keep our end open until the exit.
        let mut keep_stdin = child.stdin.take();
        let sandbox = spec.sandbox.clone();
        let memory_mb = spec.memory_mb;
        tokio::spawn(async move {
            // The env first: the runtime reads it before anything else on stdin.
            let env_sent = match keep_stdin.as_mut() {
                Some(stdin) => stdin.write_all(&env_line).await.is_ok(),
                None => false,
            };
            drop(env_line);
            if !env_sent {
                let _ = child.start_kill();
            }
            let mut cgroup = None;
            if let (true, true, Some(pid)) = (env_sent, wait_for_go, pid) {
                let since = Instant::now();
                let spare = sandbox.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let c = sandbox.cgroup_for(memory_mb)?;
                    c.add(pid).map(|()| c)
                })
                .await;
                tokio::task::spawn_blocking(move || spare.refill_cgroups());
                let go = match (joined, keep_stdin.as_mut()) {
                    (Ok(Ok(c)), Some(stdin)) => {
                        cgroup = Some(c);
                        tracing::debug!(
                            instance = id,
                            ms = since.elapsed().as_secs_f64() * 1e3,
                            "instance in its cgroup"
                        );
                        stdin.write_all(b"g").await.is_ok()
                    }
                    (Ok(Err(e)), _) => {
                        tracing::error!(instance = id, error = %e, "could not place an instance in its cgroup; stopping it");
                        false
                    }
                    _ => false,
                };
                if !go {
                    let _ = child.start_kill();
                }
            }
            let (status, asked) = tokio::select! {
                s = child.wait() => (s, false),
                _ = stop_rx => {
                    let _ = child.start_kill();
                    (child.wait().await, true)
                }
            };
            drop(keep_stdin);
            alive.store(false, Ordering::Release);
            // Let the pumps drain the pipes, so the exit is logged after the last words.
            for p in pumps {
                let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
            }
            let what = match &status {
                Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(s)) {
                    (Some(133), _) => "exit code 133: out of memory (heap limit)".to_owned(),
                    (Some(LAUNCHER_FAILED), _) => {
                        "the sandbox could not be set up (the operator's log says why)".to_owned()
                    }
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "unknown status".to_owned(),
                },
                Err(e) => format!("wait failed: {e}"),
            };
            if !asked {
                let _ = log.line(
                    "skiff",
                    &format!("instance {id} stopped unexpectedly: {what}"),
                );
                tracing::info!(instance = id, status = %what, "instance exited");
            }
            let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
            drop(cgroup);
            let _ = exit_tx.send(Some(what));
        });
    }

    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(UdsConnector::new(socket.clone()));
    let health = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(UdsConnector::new(health_socket));
    let instance = Arc::new(Instance {
        id,
        pid,
        function: f,
        client,
        health,
        log: spec.log.clone(),
        in_flight: AtomicUsize::new(0),
        last_used: AtomicU64::new(0),
        epoch: Instant::now(),
        alive,
        draining: AtomicBool::new(false),
        drained: Notify::new(),
        going_away: watch::Sender::new(None),
        stop: Mutex::new(Some(stop_tx)),
        exited: exit_rx,
    });

    let deadline = tokio::time::Instant::now() + spec.start_timeout;
    let mut exited = instance.exited.clone();
    loop {
        if let Some(what) = exited.borrow().clone() {
            let detail = stderr_tail
                .lock()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            return Err(StartError::Exited(if detail.is_empty() {
                what
            } else {
                format!("{what}: {detail}")
            }));
        }
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            instance.touch();
            return Ok(instance);
        }
        if tokio::time::Instant::now() >= deadline {
            instance.kill();
            return Err(StartError::Timeout);
        }
        tokio::select! {
            _ = exited.changed() => {}
            _ = ready.notified() => {}
            _ = tokio::time::sleep(READY_FALLBACK_POLL) => {}
        }
    }
}

/// The instances directory, created and ready for per-instance subdirs.
pub fn instances_dir(root: &Path) -> std::io::Result<PathBuf> {
    let dir = root.join("instances");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}
