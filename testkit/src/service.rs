//! The real service binaries as child processes, each listening on port 0:
//! the port comes from the ready file the service writes once it listens
//! (`SKIFF_READY_FILE`, `skiff_core::ready`), never from its log and never from
//! a port picked beforehand. Output goes to a log file a test can read.
//!
//! The binary's path is the caller's `env!("CARGO_BIN_EXE_…")`: only the tests
//! of the crate that owns a binary know where cargo built it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The token secret of every service started here.
pub const SECRET: &str = "testkit-secret-that-is-long-enough-0123456789";
/// The function-secrets key test services share (`SKIFF_SECRETS_KEY`).
pub const SECRETS_KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

/// How long a service may take to listen (a first `skiff dev` copies Deno).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A service about to start: its command line and environment.
pub struct Launch {
    bin: String,
    args: Vec<String>,
    env: Vec<(String, OsString)>,
    /// Start from an empty environment (but `PATH` and `SKIFF_DENO`) instead
    /// of the test's.
    clean_env: bool,
    /// Variables of the test's environment it does not inherit.
    unset: &'static [&'static str],
    /// The listeners it announces by name (`skiff dev`), or empty: one port.
    names: &'static [&'static str],
}

impl Launch {
    fn new(bin: &str) -> Launch {
        Launch {
            bin: bin.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            clean_env: false,
            unset: &[],
            names: &[],
        }
    }

    /// `skiff-manager` on `database_url` and `data_dir`, signup open, rate
    /// limits out of the way, logging at info without colours.
    pub fn manager(bin: &str, database_url: &str, data_dir: &Path) -> Launch {
        Launch::new(bin)
            .env("SKIFF_DATABASE_URL", database_url)
            .env("SKIFF_JWT_SECRET", SECRET)
            .env("SKIFF_SECRETS_KEY", SECRETS_KEY)
            .env("SKIFF_ALLOW_SIGNUP", "true")
            .env("SKIFF_LISTEN", "127.0.0.1:0")
            // Its own port too: managers of tests running side by side.
            .env("SKIFF_METRICS_LISTEN", "127.0.0.1:0")
            .env("SKIFF_DATA_DIR", data_dir)
            .env("SKIFF_PUBLIC_URL", "http://fn.example.test")
            .env("SKIFF_LOGIN_LIMIT_PER_USER", "100000")
            .env("SKIFF_LOGIN_LIMIT_PER_ADDR", "100000")
            .env("SKIFF_LOGIN_LIMIT_PER_USER_ADDR", "100000")
            .env("SKIFF_REGISTER_LIMIT_PER_ADDR", "100000")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
    }

    /// `skiff-router` on `database_url` and `data_dir`.
    pub fn router(bin: &str, database_url: &str, data_dir: &Path) -> Launch {
        Launch::new(bin)
            .env("SKIFF_DATABASE_URL", database_url)
            .env("SKIFF_DATA_DIR", data_dir)
            .env("SKIFF_LISTEN", "127.0.0.1:0")
            .env("SKIFF_SECRETS_KEY", SECRETS_KEY)
            // Tests run many routers at once: none on the fixed default port.
            .env("SKIFF_METRICS_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
    }

    /// `skiff dev` on `data_dir` (its own SQLite there), every listener
    /// (API, router, metrics) on port 0, none of the test's service settings.
    pub fn dev(bin: &str, data_dir: &Path) -> Launch {
        let mut l = Launch::new(bin).env("NO_COLOR", "1");
        l.args = ["dev", "--data-dir", &data_dir.display().to_string()]
            .into_iter()
            .chain(["--api-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0"])
            .chain(["--metrics-addr", "127.0.0.1:0"])
            .map(str::to_owned)
            .collect();
        l.unset = &[
            "SKIFF_DATABASE_URL",
            "SKIFF_JWT_SECRET",
            "SKIFF_SECRETS_KEY",
            "SKIFF_PUBLIC_URL",
            "SKIFF_DATA_DIR",
            "SKIFF_ALLOW_SIGNUP",
        ];
        l.names = &["manager", "router", "metrics"];
        l
    }

    /// Sets (or replaces) one variable of its environment.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Launch {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Only `PATH`, `SKIFF_DENO` and what was set here: none of the test's
    /// other variables (`SKIFF_*`, `RUST_LOG`) reach it.
    pub fn clean_env(mut self) -> Launch {
        self.clean_env = true;
        self
    }

    /// Spawns it and waits (asynchronously) until it listens.
    pub async fn start(self) -> Service {
        let mut s = self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !s.poll_ready(deadline) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }

    /// Spawns it and waits (blocking the thread) until it listens.
    pub fn start_blocking(self) -> Service {
        let mut s = self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        while !s.poll_ready(deadline) {
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn spawn(self) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let log = File::create(dir.path().join("log")).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args);
        if self.clean_env {
            cmd.env_clear();
            for key in ["PATH", "SKIFF_DENO"] {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
        }
        for key in self.unset {
            cmd.env_remove(key);
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SKIFF_READY_FILE", &ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin));
        Service {
            child,
            dir,
            names: self.names,
            ports: Vec::new(),
        }
    }
}

/// A running service; SIGKILLed and reaped when dropped.
pub struct Service {
    child: Child,
    dir: tempfile::TempDir,
    names: &'static [&'static str],
    ports: Vec<u16>,
}

impl Service {
    /// Whether it listens now; panics when it exited or the deadline passed.
    fn poll_ready(&mut self, deadline: Instant) -> bool {
        let ready = self.dir.path().join("ready");
        let ports: Option<Vec<u16>> = if self.names.is_empty() {
            skiff_core::ready::read(&ready).map(|p| vec![p])
        } else {
            self.names
                .iter()
                .map(|n| skiff_core::ready::read_named(&ready, n))
                .collect()
        };
        if let Some(ports) = ports {
            self.ports = ports;
            return true;
        }
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the service exited at start ({status}); its output:\n{}",
                self.log()
            );
        }
        if Instant::now() > deadline {
            let _ = self.child.kill();
            panic!(
                "the service did not start listening; its output:\n{}",
                self.log()
            );
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of a one-listener service.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// `http://127.0.0.1:<port>` of a one-listener service.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The base URL of the listener `name` (`skiff dev`: "manager", "router").
    pub fn url_of(&self, name: &str) -> String {
        let i = self
            .names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Everything it printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends a signal (`"-STOP"`, `"-CONT"`, `"-TERM"`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_wait().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits (at most 15 s) for it to exit.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.try_wait().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then blocks until it exits; `None` when it did not within `within`.
    pub fn terminate_blocking(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal("-TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
