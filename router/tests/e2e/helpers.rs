//! Spawns a whole Skiff — the real manager and the real router, each with its
//! own connection to one fresh database, as separate processes would have — and
//! deploys and calls real Deno functions through them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff_core::secret::Secret;
use skiff_manager::config::ManagerConfig;
use skiff_manager::startup::Application;
use skiff_router::config::RouterConfig;
use skiff_router::{RouterApp, RouterHandle};
use skiff_testkit::ApiClient;
use skiff_testkit::{TestBackend, TestDb};

/// The key the test stacks seal and open secrets with.
pub use skiff_testkit::SECRETS_KEY;

pub fn secrets_key() -> skiff_core::secrets::SecretsKey {
    skiff_core::secrets::SecretsKey::parse(SECRETS_KEY).unwrap()
}

pub struct Stack {
    /// A client of the manager's API (on `client`).
    pub manager: ApiClient,
    pub router: String,
    pub router_addr: SocketAddr,
    /// Where the router serves `/metrics` (its own listener).
    pub metrics_addr: Option<SocketAddr>,
    pub manager_port: u16,
    pub client: reqwest::Client,
    pub handle: RouterHandle,
    pub data_dir: PathBuf,
    pub db: TestDb,
    _tmp: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

pub struct Opts {
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: u64,
    pub concurrency: usize,
    pub queue_wait: Duration,
    /// Any other router setting a test needs.
    pub tune_router: fn(&mut RouterConfig),
    /// The manager tells the router of each change (`SKIFF_ROUTER_NOTIFY`).
    pub notify_router: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 128 * 1024 * 1024,
            concurrency: 256,
            queue_wait: Duration::from_secs(1),
            tune_router: |_| {},
            notify_router: false,
        }
    }
}

pub async fn stack(b: TestBackend) -> Stack {
    stack_with(b, Opts::default()).await
}

pub async fn stack_with(b: TestBackend, o: Opts) -> Stack {
    stack_on(TestDb::new(b).await, o).await
}

/// A stack on a given database (e.g. a private MariaDB a test stops and starts).
pub async fn stack_on(db: TestDb, o: Opts) -> Stack {
    // Outside /tmp: instances get a private /tmp, which would cover it.
    let tmp = test_dir();
    let data_dir = tmp.path().join("d");
    std::fs::create_dir_all(&data_dir).unwrap();

    let mut m = ManagerConfig::new(
        &db.url,
        Secret::new(skiff_testkit::SECRET),
        data_dir.clone(),
    );
    m.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    m.allow_signup = true;
    // The router opens what the manager seals: one key for both.
    m.secrets_key = secrets_key();
    // No warm type checkers (a `deno lsp` each) for the dozens of stacks here.
    m.checker.check_warm = 0;
    // The router's private listener: on a port picked now when the manager
    // is to tell the router of changes (the manager starts first: it makes
    // the schema).
    let private = if o.notify_router {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        m.router_notify =
            skiff_manager::router_notify::RouterAddrs(vec![format!("127.0.0.1:{port}")]);
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    };
    let manager = Application::build(m).await.expect("manager");
    let manager_port = manager.port();
    tokio::spawn(manager.run_until_stopped());

    let mut r = RouterConfig::new(data_dir.clone());
    r.secrets_key = Some(secrets_key());
    r.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    r.metrics_listen = Some(private);
    r.idle_timeout = o.idle_timeout;
    r.request_timeout = o.request_timeout;
    r.max_body_bytes = o.max_body_bytes;
    r.function_concurrency = o.concurrency;
    r.queue_wait = o.queue_wait;
    (o.tune_router)(&mut r);
    // Its own connection: it learns of deploys only through the change feed.
    let store = skiff_core::store::Store::connect(&db.url, 2).await.unwrap();
    let router = RouterApp::build(r, store).await.expect("router");
    let router_addr = router.local_addr().unwrap();
    let metrics_addr = router.metrics_addr();
    let handle = router.handle();
    tokio::spawn(router.run_until_stopped());

    let api = format!("http://127.0.0.1:{manager_port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Stack {
        manager: ApiClient::with_http(api, client.clone()),
        router: format!("http://{router_addr}"),
        router_addr,
        metrics_addr,
        manager_port,
        client,
        handle,
        data_dir,
        db,
        _tmp: tmp,
    }
}

/// A second router process's worth: its own data dir and connection, the
/// stack's database.
pub struct OtherRouter {
    pub url: String,
    pub handle: RouterHandle,
    _tmp: tempfile::TempDir,
}

impl Drop for OtherRouter {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

impl Stack {
    /// Another router on this stack's database, as a second router process
    /// would run (its own data dir), with `tune` applied to its settings.
    pub async fn another_router(&self, tune: fn(&mut RouterConfig)) -> OtherRouter {
        let tmp = test_dir();
        let data_dir = tmp.path().join("d");
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut r = RouterConfig::new(data_dir);
        r.secrets_key = Some(secrets_key());
        r.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        r.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        tune(&mut r);
        let store = skiff_core::store::Store::connect(&self.db.url, 2)
            .await
            .unwrap();
        let router = RouterApp::build(r, store).await.expect("router");
        let url = format!("http://{}", router.local_addr().unwrap());
        let handle = router.handle();
        tokio::spawn(router.run_until_stopped());
        OtherRouter {
            url,
            handle,
            _tmp: tmp,
        }
    }

    /// Registers `user` and returns a fresh token.
    pub async fn token(&self, user: &str) -> String {
        self.manager.token(user).await
    }

    /// Stores `source` as the next version straight through the store, with no
    /// build: a version as stored before artifacts existed, or a module that
    /// fails only where it runs (the deploy's probe would refuse it).
    pub async fn deploy_unbuilt(&self, user: &str, name: &str, source: &str) -> i64 {
        let store = self.db.store().await;
        let owner = store
            .find_user(user)
            .await
            .unwrap()
            .expect("the user exists");
        let d = store
            .deploy(
                owner.id,
                &skiff_core::names::UserName::parse(user).unwrap(),
                &skiff_core::names::FunctionName::parse(name).unwrap(),
                source.as_bytes(),
            )
            .await
            .unwrap();
        d.version
    }

    /// Deploys and returns the new version number.
    pub async fn deploy(&self, token: &str, name: &str, source: &str) -> i64 {
        self.manager.deploy_ok(token, name, source).await
    }

    pub async fn delete(&self, token: &str, name: &str) {
        self.manager.delete_function(token, name).await
    }

    /// Waits until the router's `skiff_in_flight_requests` for the function
    /// reads `n`; panics after `within`.
    pub async fn until_in_flight(&self, user: &str, name: &str, n: i64, within: Duration) {
        let addr = self.metrics_addr.expect("the router's private listener");
        let series = format!(r#"skiff_in_flight_requests{{user="{user}",function="{name}"}} "#);
        let start = std::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < within {
            if let Ok(r) = self
                .client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
            {
                let text = r.text().await.unwrap_or_default();
                // No series at all: nothing of the function has been in flight.
                let now = text
                    .lines()
                    .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse::<i64>().ok())
                    .unwrap_or(0);
                if now == n {
                    return;
                }
                last = now.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{user}/{name}: {last} requests in flight after {within:?}, not {n}");
    }

    pub fn url(&self, user: &str, name: &str, rest: &str) -> String {
        format!("{}/fn/{user}/{name}{rest}", self.router)
    }

    /// Calls the function through the router.
    pub async fn get(&self, user: &str, name: &str, rest: &str) -> reqwest::Response {
        self.manager.call(&self.router, user, name, rest).await
    }

    /// Calls until the answer satisfies `ok` (the router learns of changes by
    /// polling); panics after 10 s. Returns the satisfying status and body.
    pub async fn until(
        &self,
        user: &str,
        name: &str,
        ok: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let start = Instant::now();
        loop {
            let r = self.get(user, name, "/").await;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if ok(status, &text) {
                return (status, text);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let log = self
                    .try_function_id(user, name)
                    .and_then(|id| std::fs::read_to_string(self.log_file(id)).ok())
                    .unwrap_or_default();
                panic!("gave up waiting; last answer {status} {text}\nfunction log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Deploys and waits until the router serves that version (`marker` in the body).
    pub async fn deploy_live(
        &self,
        token: &str,
        user: &str,
        name: &str,
        source: &str,
        marker: &str,
    ) {
        self.deploy(token, name, source).await;
        self.until(user, name, |s, t| s == 200 && t.contains(marker))
            .await;
    }

    /// The id the router knows `user/name` by (files and instances are keyed by it).
    pub fn try_function_id(&self, user: &str, name: &str) -> Option<i64> {
        self.handle
            .state
            .directory
            .lookup(user, name)
            .map(|f| f.function_id)
    }

    pub fn function_id(&self, user: &str, name: &str) -> i64 {
        self.try_function_id(user, name)
            .unwrap_or_else(|| panic!("the router does not know {user}/{name}"))
    }

    /// Where the router keeps the code of one version of a function.
    pub fn code_dir(&self, function_id: i64, version: i64) -> PathBuf {
        self.data_dir
            .join(format!("functions/{function_id}/v{version}"))
    }

    pub fn log_file(&self, function_id: i64) -> PathBuf {
        self.data_dir.join(format!("logs/{function_id}.log"))
    }

    pub fn running_instances(&self) -> usize {
        self.handle
            .process_runtime()
            .map(|rt| rt.running().len())
            .unwrap_or(0)
    }
}

/// A function answering `text` to every request.
pub fn replies(text: &str) -> String {
    format!("export default (_req: Request) => new Response({text:?});\n")
}

/// A scratch dir for a test's data dir, outside `/tmp` (instances get a
/// private `/tmp`, which would cover a data dir there).
pub fn test_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}
