//! The real `skiff-manager` binary as a child process (so it can be SIGKILLed),
//! a private MariaDB server (so it can be stopped without touching the shared
//! test server), and the HTTP calls a user would make.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SECRET: &str = "faults-secret-that-is-long-enough-0123456789";
pub const PASSWORD: &str = "correct horse battery";

/// A running `skiff-manager`; SIGKILLed when dropped.
pub struct Manager {
    child: Child,
    pub base: String,
    log: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

/// The settings every manager in these tests shares, plus the caller's.
pub struct ManagerEnv {
    pub database_url: String,
    pub data_dir: PathBuf,
    pub extra: Vec<(&'static str, String)>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Manager {
    pub async fn start(env: &ManagerEnv) -> Manager {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-manager"));
        cmd.env("SKIFF_DATABASE_URL", &env.database_url)
            .env("SKIFF_JWT_SECRET", SECRET)
            .env("SKIFF_ALLOW_SIGNUP", "true")
            .env("SKIFF_LISTEN", "127.0.0.1:0")
            .env("SKIFF_DATA_DIR", &env.data_dir)
            .env("SKIFF_PUBLIC_URL", "http://fn.example.test")
            .env("SKIFF_LOGIN_LIMIT_PER_USER", "100000")
            .env("SKIFF_LOGIN_LIMIT_PER_ADDR", "100000")
            .env("SKIFF_LOGIN_LIMIT_PER_USER_ADDR", "100000")
            .env("SKIFF_REGISTER_LIMIT_PER_ADDR", "100000")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &env.extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn skiff-manager");
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, mut port_rx) = tokio::sync::mpsc::channel::<u16>(1);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let port_tx = port_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    if line.contains("skiff-manager listening")
                        && let Some(port) = line
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("port="))
                            .and_then(|p| p.parse().ok())
                    {
                        let _ = port_tx.send(port).await;
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        drop(port_tx);
        let port = tokio::time::timeout(Duration::from_secs(120), port_rx.recv())
            .await
            .ok()
            .flatten();
        let Some(port) = port else {
            let _ = child.start_kill();
            panic!(
                "skiff-manager did not start; its output:\n{}",
                log.lock().unwrap()
            );
        };
        Manager {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register_and_login(&self, user: &str) -> String {
        let creds = json!({"username": user, "password": PASSWORD});
        let r = self
            .client
            .post(self.url("/register"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "register {user}");
        self.login(user).await
    }

    pub async fn login(&self, user: &str) -> String {
        let creds = json!({"username": user, "password": PASSWORD});
        let r = self
            .client
            .post(self.url("/login"))
            .json(&creds)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login {user}");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn deploy(
        &self,
        token: &str,
        name: &str,
        source: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url(&format!("/func?name={name}")))
            .bearer_auth(token)
            .body(source.to_owned())
            .send()
            .await
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
    }
}

/// `(status, error code)` of an answer; the code is empty on success.
pub async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// A source that type-checks and says which deploy it was.
pub fn source(tag: &str) -> String {
    format!("// {tag}\nexport default (_req: Request) => new Response({tag:?});\n")
}

/// A private MariaDB server on a free port, stopped when dropped.
pub struct PrivateMariaDb {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mariadb.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateMariaDb {
    /// Starts a fresh server with an empty database `skiff`.
    pub async fn start() -> PrivateMariaDb {
        assert!(
            Path::new("/usr/sbin/mariadbd").exists(),
            "this test needs MariaDB (apt-get install mariadb-server; scripts/test.sh does it)"
        );
        let db = PrivateMariaDb {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        };
        db.up().await;
        let sock = db.dir.path().join("run/mysql.sock");
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", sock.display()))
            .args(["-uroot", "-e", "CREATE DATABASE skiff"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://skiff:skiff-test@127.0.0.1:{}/skiff", self.port)
    }

    /// Starts the server (again) on the same data dir and port.
    pub async fn up(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A clean shutdown.
    pub async fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .await;
        self.wait_gone().await;
    }

    /// The pid of this server's running `mariadbd`, if there is one.
    fn server_pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.path().join("run/mysqld.pid")).ok()?;
        let pid = pid.trim().to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = cmdline.contains("mariadbd")
            && cmdline.contains(&self.dir.path().display().to_string());
        ours.then_some(pid)
    }

    /// SIGKILL of the server process: a crash.
    pub async fn crash(&self) {
        let pid = self.server_pid().expect("the private MariaDB is running");
        let _ = Command::new("kill").args(["-KILL", &pid]).status().await;
        self.wait_gone().await;
    }

    /// Until nothing accepts connections on the port (bounded).
    async fn wait_gone(&self) {
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("MariaDB on port {} did not stop", self.port);
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
        // If the clean stop failed, do not leave a server behind (but only kill
        // a process that is this server: a stale pid file may name another one).
        if let Some(pid) = self.server_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }
}
