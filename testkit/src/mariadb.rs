//! A MariaDB server of a test's own (started with `scripts/mariadb.sh`), for
//! tests that stop it cleanly, crash it (SIGKILL) and start it again on the
//! same data and port — without touching the shared test server. Needs
//! `mariadbd` (and root, as the test set-up has). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mariadb.sh")
}

/// How often a start on a port another process took meanwhile is tried again
/// on a new port (MariaDB cannot bind port 0 and say which port it got).
const START_TRIES: usize = 5;

impl PrivateMariaDb {
    /// Starts a fresh server with an empty database `skiff`.
    pub async fn start() -> PrivateMariaDb {
        assert!(
            Path::new("/usr/sbin/mariadbd").exists(),
            "this test needs MariaDB (apt-get install mariadb-server; scripts/test.sh does it)"
        );
        let mut db = PrivateMariaDb {
            dir: tempfile::tempdir().unwrap(),
            port: 0,
        };
        let mut last = String::new();
        for _ in 0..START_TRIES {
            db.port = unused_port();
            match db.run_start().await {
                Ok(()) => {
                    db.create_database().await;
                    return db;
                }
                Err(e) => last = e,
            }
        }
        panic!("a private MariaDB did not start: {last}");
    }

    async fn create_database(&self) {
        let sock = self.dir.path().join("run/mysql.sock");
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
    }

    /// The server's URL, no database part.
    pub fn server_url(&self) -> String {
        format!("mysql://skiff:skiff-test@127.0.0.1:{}", self.port)
    }

    /// The URL of its database `skiff`.
    pub fn url(&self) -> String {
        format!("{}/skiff", self.server_url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's files (data, logs, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn run_start(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Starts the server again on the same data dir and port.
    pub async fn up(&self) {
        if let Err(e) = self.run_start().await {
            panic!("mariadb.sh start: {e}");
        }
    }

    /// A clean shutdown, returning once the port is free.
    pub async fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .await;
        self.wait_gone().await;
    }

    /// SIGKILL of the server process: a crash.
    pub async fn crash(&self) {
        let pid = self.server_pid().expect("the private MariaDB is running");
        let _ = Command::new("kill").args(["-KILL", &pid]).status().await;
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

    /// Until nothing accepts connections on the port (bounded): `mariadb-admin
    /// shutdown` returns before the port is free.
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

/// A port nothing listens on now. Only for MariaDB, which must be told its
/// port: a start that loses the port to another process fails and is retried.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
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
