//! Spawns the real manager on port 0 against a fresh database, and talks to it
//! over HTTP like any client would.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;
use skiff_core::secret::Secret;
use skiff_core::store::Store;
use skiff_manager::config::ManagerConfig;
use skiff_manager::startup::Application;
use skiff_manager::state::AppState;
use skiff_manager::typecheck::settings::CheckerSettings;
use skiff_testkit::{ApiClient, TestBackend, TestDb};

pub use skiff_testkit::PASSWORD;
pub use skiff_testkit::SECRET;
pub use skiff_testkit::SECRETS_KEY;

/// The manager's secrets key of the tests.
pub fn secrets_key() -> skiff_core::secrets::SecretsKey {
    skiff_core::secrets::SecretsKey::parse(SECRETS_KEY).unwrap()
}

/// The manager, and a client of its API (its calls through `Deref`).
pub struct TestApp {
    api: ApiClient,
    pub client: reqwest::Client,
    /// A second connection to the same database, to check what was written.
    pub store: Store,
    pub data_dir: tempfile::TempDir,
    /// The running manager's shared state (rate-limit table sizes).
    pub state: actix_web::web::Data<AppState>,
    /// The database's URL (a second manager, or the binary, on the same one).
    pub db_url: String,
    /// `http://<metrics listener>/metrics`.
    pub metrics_url: String,
    _db: TestDb,
}

/// Settings a test may change; the rate limits default to high values so that
/// only the tests about them meet them.
pub struct Options {
    pub allow_signup: bool,
    pub max_source_bytes: usize,
    pub login_limit_per_user: u32,
    pub checker: CheckerSettings,
    pub login_limit_per_user_addr: u32,
    pub login_limit_per_addr: u32,
    pub register_limit_per_addr: u32,
    pub rate_limit_max_keys: usize,
    /// `SKIFF_TRUSTED_PROXIES`
    pub trusted_proxies: &'static str,
    /// The operator's quotas (`SKIFF_QUOTA_*`)
    pub quotas: skiff_core::fnconfig::Quotas,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_signup: true,
            max_source_bytes: 1024 * 1024,
            login_limit_per_user: 1000,
            // Warm checkers (a ~200 MB `deno lsp` each) only where a test
            // asks for them: dozens of apps run at once here.
            checker: CheckerSettings {
                check_warm: 0,
                ..CheckerSettings::default()
            },
            login_limit_per_user_addr: 1000,
            login_limit_per_addr: 10_000,
            register_limit_per_addr: 10_000,
            rate_limit_max_keys: 20_000,
            trusted_proxies: "",
            quotas: skiff_core::settings::defaults().unwrap(),
        }
    }
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

pub async fn spawn_app_with(backend: TestBackend, opts: Options) -> TestApp {
    // `TEST_LOG=1`: the manager's log on stderr (with `--nocapture`).
    if std::env::var_os("TEST_LOG").is_some() {
        skiff_manager::telemetry::init();
    }
    let db = TestDb::new(backend).await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut config =
        ManagerConfig::new(&db.url, Secret::new(SECRET), data_dir.path().to_path_buf());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.public_url = "http://fn.example.test".into();
    config.allow_signup = opts.allow_signup;
    config.max_source_bytes = opts.max_source_bytes;
    config.login_limit_per_user = opts.login_limit_per_user;
    config.checker = opts.checker;
    config.login_limit_per_user_addr = opts.login_limit_per_user_addr;
    config.login_limit_per_addr = opts.login_limit_per_addr;
    config.register_limit_per_addr = opts.register_limit_per_addr;
    config.rate_limit_max_keys = opts.rate_limit_max_keys;
    config.trusted_proxies = opts.trusted_proxies.parse().expect("trusted proxies");
    config.secrets_key = secrets_key();
    config.quotas = opts.quotas;
    let app = Application::build(config).await.expect("build app");
    let client = reqwest::Client::new();
    let api = ApiClient::with_http(format!("http://127.0.0.1:{}", app.port()), client.clone());
    let state = app.state();
    let metrics_url = format!("http://{}/metrics", app.metrics_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    let store = db.store().await;
    TestApp {
        api,
        client,
        store,
        data_dir,
        state,
        db_url: db.url.clone(),
        metrics_url,
        _db: db,
    }
}

/// A client whose connections come from `local` (any of 127.0.0.0/8 reaches
/// the manager on 127.0.0.1): a second machine, as far as the manager can tell.
pub fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

impl std::ops::Deref for TestApp {
    type Target = ApiClient;
    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

impl TestApp {
    /// `POST path` with a JSON body and an `X-Forwarded-For` header, sent by
    /// `client` (as a proxy, or as a client forging the header).
    pub async fn post_forwarded(
        &self,
        client: &reqwest::Client,
        path: &str,
        forwarded_for: &str,
        body: &Value,
    ) -> reqwest::Response {
        client
            .post(self.url(path))
            .header("x-forwarded-for", forwarded_for)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Everything a failed request must leave untouched: users and functions
    /// with their versions and sources.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for user in ["alice", "bob", "carol"] {
            let Some(u) = self.store.find_user(user).await.unwrap() else {
                continue;
            };
            out.push(format!("user {} gen {}", u.username, u.token_generation));
            for f in self.store.list_functions(u.id).await.unwrap() {
                let name = skiff_core::names::FunctionName::parse(&f.name).unwrap();
                let info = self.store.get_function(u.id, &name).await.unwrap().unwrap();
                out.push(format!(
                    "fn {}/{} v{} of {} sha {}",
                    user,
                    f.name,
                    info.version,
                    info.versions.len(),
                    info.sha256
                ));
            }
        }
        out
    }
}

/// Asserts the JSON error shape (README.md, "Manager API") and returns the code.
pub async fn error_code(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status(), status, "unexpected status");
    let body: Value = resp.json().await.expect("a JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message missing: {body}"
    );
    code
}

pub const HELLO: &str = "export default (req: Request) => new Response('hello');\n";
