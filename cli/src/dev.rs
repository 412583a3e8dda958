//! `skiff dev`: the manager and the router in one process, on SQLite in the data
//! dir, with the process runtime, and both services' metrics on one address
//! (`dev_metrics`). Stops cleanly on Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::RngCore;
use skiff_core::names::FunctionName;
use skiff_core::secret::Secret;
use skiff_core::store::Store;
use skiff_core::store::StoreError;
use skiff_core::tokens::MIN_SECRET_BYTES;
use skiff_manager::config::{ManagerConfig, MetricsListen, normalise_public_url};
use skiff_manager::runtime::{FunctionRuntime, RuntimeFuture, RuntimeStatus, SharedRuntime};
use skiff_manager::startup::Application;
use skiff_router::config::RouterConfig;
use skiff_router::{RouterApp, RouterHandle};
use std::sync::Arc;

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the database, the JWT secret, function files and logs live
    #[arg(long, env = "SKIFF_DATA_DIR", default_value = "./.skiff")]
    pub data_dir: PathBuf,
    /// Address of the management API
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Address of the router (functions are at /fn/<user>/<name>)
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub router_addr: SocketAddr,
    /// Address serving both services' Prometheus metrics at /metrics, or `off`
    #[arg(long, env = "SKIFF_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_addr: MetricsListen,
    /// Database URL [default: sqlite://<data-dir>/skiff.db]
    #[arg(long, env = "SKIFF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Token secret [default: generated once into <data-dir>/jwt-secret]
    #[arg(long, env = "SKIFF_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Base URL of the router in API answers [default: http://<router-addr>]
    #[arg(long, env = "SKIFF_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Whether POST /register is open
    #[arg(long, env = "SKIFF_ALLOW_SIGNUP", default_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_signup: bool,
    /// Path of the Deno binary [default: found on PATH]
    #[arg(long, env = "SKIFF_DENO")]
    pub deno: Option<PathBuf>,
    /// Stop instances after this many idle seconds
    #[arg(long, env = "SKIFF_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// How often the router writes its per-minute call statistics (`skiff stats`), in ms
    #[arg(long, env = "SKIFF_STATS_FLUSH_MS", default_value_t = 2000)]
    pub stats_flush_ms: u64,
    /// Key sealing function secrets [default: generated once into <data-dir>/secrets-key]
    #[arg(long, env = "SKIFF_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<Secret>,
    /// Once both listen, write `manager PORT` and `router PORT` lines to this file
    #[arg(long, env = "SKIFF_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// The deploy pipeline's settings: registries, import hosts, limits (as for skiff-manager)
    #[command(flatten)]
    pub checker: skiff_manager::typecheck::settings::CheckerSettings,
    /// Per-user quotas (SKIFF_QUOTA_*, as for skiff-manager)
    #[command(flatten)]
    pub quotas: skiff_core::fnconfig::Quotas,
    #[command(flatten)]
    pub log: skiff_core::telemetry::LogArgs,
}

/// Reads the secret kept in the data dir, creating it (mode 0600) the first time.
fn dev_secret(dir: &Path) -> anyhow::Result<Secret> {
    let path = dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_SECRET_BYTES => return Ok(Secret::new(s.trim())),
        Ok(_) => anyhow::bail!(
            "{} is too short; delete it to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(hex.as_bytes())?;
    Ok(Secret::new(hex))
}

/// The key that seals function secrets, made once and kept in the data dir
/// (mode 0600), like the JWT secret.
fn dev_secrets_key(dir: &Path) -> anyhow::Result<skiff_core::secrets::SecretsKey> {
    let path = dir.join("secrets-key");
    if !path.exists() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(skiff_core::secrets::SecretsKey::generate_hex().as_bytes())?;
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    skiff_core::secrets::SecretsKey::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The SQLite files hold password hashes: owner only.
fn restrict_sqlite_files(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

/// Lets a deploy answer only once the in-process router serves the new version.
struct InProcessRouter(RouterHandle);

impl FunctionRuntime for InProcessRouter {
    fn deployed<'a>(&'a self, _user: &'a str, _function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(self.0.sync_now())
    }

    fn deleted<'a>(&'a self, _user: &'a str, _function: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(self.0.sync_now())
    }

    fn status<'a>(
        &'a self,
        _user_id: i64,
        _function: &'a FunctionName,
        _live_version: i64,
    ) -> RuntimeFuture<'a, Result<Option<RuntimeStatus>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The router's metrics text, which `--metrics-addr` joins to the manager's
/// (the router's own listener is off: it would take 9464, this address's
/// default).
fn router_metrics(handle: &RouterHandle) -> Option<crate::dev_metrics::Render> {
    let metrics = handle.metrics().clone();
    Some(Box::new(move || metrics.render()))
}

/// Stops the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: DevArgs) -> anyhow::Result<()> {
    skiff_core::telemetry::init(args.log.log_format);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let deno = skiff_core::deno::locate(args.deno.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = match args.jwt_secret {
        Some(s) => s,
        None => dev_secret(&data_dir)?,
    };
    // Losing the kept key loses the dev database's secrets: the manager
    // then refuses to start (WrongSecretsKey) rather than serve without them.
    let secrets_key = match &args.secrets_key {
        Some(k) => skiff_core::secrets::SecretsKey::parse(k.expose())?,
        None => dev_secrets_key(&data_dir)?,
    };
    let sqlite_path = data_dir.join("skiff.db");
    let url = match &args.database_url {
        Some(u) => u.expose().to_owned(),
        None => format!("sqlite://{}", sqlite_path.display()),
    };
    let store = Store::connect(&url, 8)
        .await
        .context("opening the database")?;
    store.migrate().await.context("migrating the database")?;
    if args.database_url.is_none() {
        restrict_sqlite_files(&sqlite_path);
    }

    let mut rcfg = RouterConfig::new(data_dir.clone());
    rcfg.listen = args.router_addr;
    rcfg.deno = Some(deno.clone());
    rcfg.idle_timeout = std::time::Duration::from_secs(args.idle_timeout_secs.max(1));
    rcfg.policy.idle_timeout_secs = args.idle_timeout_secs.max(1);
    rcfg.stats_flush = std::time::Duration::from_millis(args.stats_flush_ms.max(100));
    rcfg.quotas = args.quotas.clone();
    rcfg.secrets_key = Some(secrets_key.clone());
    // No listener of the router's own here: `skiff dev` serves both services'
    // metrics on one address (the router's through `RouterHandle::metrics`).
    rcfg.metrics_listen = None;
    let router = RouterApp::build(rcfg, store.clone()).await?;
    let router_port = router.port();
    let router_handle = router.handle();
    // The bound port: --router-addr may say port 0.
    let public_url = normalise_public_url(&args.public_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            SocketAddr::new(args.router_addr.ip(), router_port)
        )
    }))?;

    let mut mcfg = ManagerConfig::new(&url, secret, data_dir.clone());
    mcfg.listen = args.api_addr;
    mcfg.allow_signup = args.allow_signup;
    mcfg.public_url = public_url.clone();
    mcfg.deno = Some(deno.clone());
    mcfg.checker = args.checker.clone();
    mcfg.secrets_key = secrets_key;
    mcfg.quotas = args.quotas.clone();
    // What GET /func/<name>/config reports as the default is what the
    // in-process router applies.
    mcfg.policy.idle_timeout_secs = args.idle_timeout_secs.max(1);
    let notifier: SharedRuntime = Arc::new(InProcessRouter(router_handle.clone()));
    let manager = Application::build_with_runtime(mcfg, store.clone(), Some(notifier)).await?;
    let manager_port = manager.port();
    // The console (served by the manager) may read functions' answers in its
    // "try it" panel, as this machine's browser names the API's address.
    let ip = args.api_addr.ip();
    let mut console = Vec::new();
    if !ip.is_unspecified() {
        console.push(format!("http://{}", SocketAddr::new(ip, manager_port)));
    }
    if ip.is_loopback() || ip.is_unspecified() {
        console.push(format!("http://127.0.0.1:{manager_port}"));
        console.push(format!("http://localhost:{manager_port}"));
    }
    match console.join(",").parse() {
        Ok(origins) => router_handle.state.console_origins.set(&origins),
        Err(e) => {
            tracing::warn!(error = %e, "the console's origin; its try-it panel cannot read answers")
        }
    }
    let manager_handle = manager.server().handle();
    // Bound once both services are built (a wrong secrets key stops the start
    // before anything listens here).
    let metrics_listener = match args.metrics_addr.0 {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    if let Some(f) = &args.ready_file {
        let mut ports = vec![("manager", manager_port), ("router", router_port)];
        ports.extend(metrics_addr.map(|a| ("metrics", a.port())));
        skiff_core::ready::announce_named(f, &ports)
            .with_context(|| format!("writing the ready file {}", f.display()))?;
    }

    println!("Skiff dev is running");
    println!("  API:     http://{}:{manager_port}", args.api_addr.ip());
    println!(
        "  Console: http://{}/",
        SocketAddr::new(
            if args.api_addr.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                args.api_addr.ip()
            },
            manager_port
        )
    );
    println!(
        "  Router:  http://{}:{router_port}/fn/<user>/<name>",
        args.router_addr.ip()
    );
    println!("  Public:  {public_url}");
    if let Some(addr) = metrics_addr {
        println!("  Metrics: http://{addr}/metrics");
    }
    println!("  Data:    {}", data_dir.display());
    println!("Press Ctrl-C to stop.");

    let _metrics_task = metrics_listener.map(|listener| {
        let sources = crate::dev_metrics::Sources {
            manager: manager.metrics(),
            router: router_metrics(&router_handle),
        };
        AbortOnDrop(tokio::spawn(crate::dev_metrics::serve(
            listener,
            Arc::new(sources),
        )))
    });
    let mut manager_task = tokio::spawn(manager.run_until_stopped());
    let mut router_task = tokio::spawn(router.run_until_stopped());
    tokio::select! {
        _ = skiff_core::signals::terminated() => {}
        r = &mut manager_task => tracing::error!(result = ?r, "the manager stopped"),
        r = &mut router_task => tracing::error!(result = ?r, "the router stopped"),
    }
    eprintln!("stopping…");
    router_handle.stop();
    manager_handle.stop(true).await;
    // The manager's task ends with its warm type checkers stopped.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), manager_task).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(40), router_task).await;
    store.close().await;
    Ok(())
}
