//! The real `skiff-manager` binary as a child process (so it can be SIGKILLed),
//! with the test kit's client; a private MariaDB (so it can be stopped without
//! touching the shared test server) comes from the test kit too.

use std::path::PathBuf;
use std::time::Duration;

use skiff_testkit::{ApiClient, Launch, Service};

pub use skiff_testkit::{PASSWORD, PrivateMariaDb, status_and_code};

/// A running `skiff-manager` and a client of its API; SIGKILLed when dropped.
pub struct Manager {
    service: Service,
    api: ApiClient,
}

impl std::ops::Deref for Manager {
    type Target = ApiClient;
    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// The settings every manager in these tests shares, plus the caller's.
pub struct ManagerEnv {
    pub database_url: String,
    pub data_dir: PathBuf,
    pub extra: Vec<(&'static str, String)>,
}

impl Manager {
    pub async fn start(env: &ManagerEnv) -> Manager {
        let mut launch = Launch::manager(
            env!("CARGO_BIN_EXE_skiff-manager"),
            &env.database_url,
            &env.data_dir,
        );
        for (k, v) in &env.extra {
            launch = launch.env(k, v);
        }
        let service = launch.start().await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let api = ApiClient::with_http(service.url(), http);
        Manager { service, api }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) {
        self.service.kill().await;
    }
}

/// A source that type-checks and says which deploy it was.
pub fn source(tag: &str) -> String {
    format!("// {tag}\nexport default (_req: Request) => new Response({tag:?});\n")
}
