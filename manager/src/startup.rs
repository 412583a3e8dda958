//! Building and running the manager: `Application::build` connects the store,
//! applies migrations, binds the listener (port 0 works, for tests) and wires the
//! routes; `run_until_stopped` serves until the server is stopped.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, Service as _};
use actix_web::{App, HttpServer, error::InternalError, web};
use anyhow::Context;
use skiff_core::store::Store;
use skiff_core::tokens::TokenKeys;
use tracing_actix_web::TracingLogger;

use crate::config::ManagerConfig;
use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::passwords;
use crate::request_log::RequestSpan;
use crate::routes;
use crate::state::AppState;
use crate::typecheck::TypeChecker;

pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    state: web::Data<AppState>,
    /// `GET /metrics` on its own listener, when `SKIFF_METRICS_LISTEN` is on.
    metrics_server: Option<(Server, SocketAddr)>,
}

/// Connects to the database named in the configuration and migrates it.
pub async fn connect_store(config: &ManagerConfig) -> anyhow::Result<Store> {
    let store = Store::connect(config.database_url.expose(), 10)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

impl Application {
    pub async fn build(config: ManagerConfig) -> anyhow::Result<Self> {
        let store = connect_store(&config).await?;
        Self::build_with_store(config, store).await
    }

    /// Builds on an already connected, migrated store, with the runtime the
    /// configuration names.
    pub async fn build_with_store(config: ManagerConfig, store: Store) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(
            config.runtime == crate::config::RuntimeKind::Kubernetes,
        ));
        let runtime = crate::runtime::from_config(&config, &store, &metrics).await?;
        Self::build_with_metrics(config, store, runtime, metrics).await
    }

    /// Builds with a given runtime: `skiff dev` passes one that tells its
    /// in-process router about a deploy before the deploy is answered.
    pub async fn build_with_runtime(
        config: ManagerConfig,
        store: Store,
        runtime: Option<crate::runtime::SharedRuntime>,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(false));
        Self::build_with_metrics(config, store, runtime, metrics).await
    }

    async fn build_with_metrics(
        config: ManagerConfig,
        store: Store,
        runtime: Option<crate::runtime::SharedRuntime>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let store = store.with_quotas(config.quotas.clone());
        // A wrong key must stop the start: serving with it would hand
        // functions secrets that do not open. The error names the key's
        // fingerprint, never the key.
        store
            .check_secrets_key(&config.secrets_key, true)
            .await
            .context("checking SKIFF_SECRETS_KEY against the database")?;
        tracing::info!(
            fingerprint = %config.secrets_key.fingerprint(),
            "function secrets are sealed with this key"
        );
        let tokens = TokenKeys::new(&config.jwt_secret, config.token_ttl_secs)
            .context("SKIFF_JWT_SECRET")?;
        let remote = config.checker.checker_socket.is_some();
        let deno = match skiff_core::deno::locate(config.deno.as_deref()).await {
            // Checks run elsewhere; this process does not need Deno.
            _ if remote => Err("checks run in the checker process".to_owned()),
            Ok(path) => {
                tracing::info!(deno = %path.display(), "deploy-time type checks use this Deno");
                Ok(path)
            }
            Err(e) => {
                let why = deno_problem(config.deno.as_deref(), &e);
                tracing::error!(
                    "{why}; every other endpoint works, but deploys (POST /func) answer 503 \
                     checker_unavailable until Deno is there (looked for again every few seconds)"
                );
                Err(why)
            }
        };
        let checker = TypeChecker::from_settings(
            deno,
            config.deno.clone(),
            &config.data_dir,
            &config.checker,
        )?
        .with_metrics(metrics.clone());
        checker.prewarm();
        let swept = crate::typecheck::sweep_stale_scratch(&config.data_dir);
        if swept > 0 {
            tracing::info!(
                swept,
                "removed type-check scratch dirs left by a killed manager"
            );
        }
        passwords::warm_up().await;
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let metrics_server = config
            .metrics_listen
            .map(|addr| metrics::serve(addr, metrics.clone()))
            .transpose()?;
        if let Some((_, addr)) = &metrics_server {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        let state = web::Data::new(
            AppState::new(store.clone(), tokens, checker, config)
                .with_runtime(runtime)
                .with_metrics(metrics.clone()),
        );
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let observed = metrics.clone();
            App::new()
                // What a failed request says about the service (limits, database).
                .wrap_fn(move |req, srv| {
                    let metrics = observed.clone();
                    let answer = srv.call(req);
                    async move {
                        let res = answer.await?;
                        if let Some(e) = res.response().error().and_then(|e| e.as_error()) {
                            metrics::observe_error(
                                &metrics,
                                res.request().match_pattern().as_deref(),
                                e,
                            );
                        }
                        Ok(res)
                    }
                })
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(app_state.clone())
                .app_data(json_config())
                .app_data(query_config())
                .app_data(path_config())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            store,
            state,
            metrics_server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// What the handlers share (tests read the rate-limit tables' sizes).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The metrics (`skiff dev` serves them with the router's).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Where `GET /metrics` answers, when `SKIFF_METRICS_LISTEN` is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until the API server stops; the metrics listener stops with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let served = match self.metrics_server {
            None => self.server.await,
            Some((metrics, _)) => {
                let metrics_handle = metrics.handle();
                let metrics_task = tokio::spawn(metrics);
                let served = self.server.await;
                metrics_handle.stop(false).await;
                let _ = metrics_task.await;
                served
            }
        };
        state.checker.shutdown().await;
        served
    }
}

/// Why Deno cannot be used, naming `SKIFF_DENO` when that is what points nowhere.
fn deno_problem(explicit: Option<&std::path::Path>, e: &skiff_core::deno::DenoError) -> String {
    match (explicit, e) {
        (Some(p), skiff_core::deno::DenoError::NotFound) => format!(
            "Deno is missing: SKIFF_DENO is {}, which does not exist or cannot be run \
             (install Deno, e.g. `pip install deno`, or fix SKIFF_DENO)",
            p.display()
        ),
        (_, e) => format!("Deno is missing: {e}"),
    }
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(16 * 1024)
        .content_type_required(false)
        .error_handler(|err, _req| {
            let api = ApiError::bad_request("invalid_json", format!("invalid JSON body: {err}"));
            InternalError::from_response(err, actix_web::ResponseError::error_response(&api)).into()
        })
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let api = ApiError::bad_request("invalid_query", format!("invalid query string: {err}"));
        InternalError::from_response(err, actix_web::ResponseError::error_response(&api)).into()
    })
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let api = ApiError::bad_request("invalid_path", format!("invalid path: {err}"));
        InternalError::from_response(err, actix_web::ResponseError::error_response(&api)).into()
    })
}
