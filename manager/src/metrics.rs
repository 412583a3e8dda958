//! The manager's Prometheus metrics (docs/observability.md lists them). They
//! are served on their own listener (`SKIFF_METRICS_LISTEN`), never on the API
//! port. Every label value comes from a fixed set (results, error codes,
//! steps, endpoints): no user or function is ever a label here.
//!
//! One `Metrics` per `Application` (tests run several in one process).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use skiff_core::store::StoreError;

use crate::error::ApiError;
use crate::typecheck::StepTimes;

/// One label, from a fixed set of values.
type Label = [(&'static str, &'static str); 1];
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

/// Whole deploys, seconds: a cached module takes a fraction of a second, a
/// first download of npm dependencies tens of seconds.
const DEPLOY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// One step of a build, or one reconcile pass, seconds.
const STEP_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// The build steps a duration is recorded for (`typecheck/build.rs`).
pub const BUILD_STEPS: [&str; 5] = ["graph", "resolve", "bundle", "check", "probe"];

/// What a login can end as.
const LOGIN_RESULTS: [&str; 5] = [
    "ok",
    "bad_credentials",
    "rate_limited",
    "unavailable",
    "error",
];

/// The Prometheus text format's content type (the format `encode_text` writes).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

pub struct Metrics {
    registry: Registry,
    deploys: Family<Label, Counter>,
    deploy_duration: Histogram,
    check_duration: Histogram,
    check_steps: HistogramFamily,
    dependency_resolution: Histogram,
    logins: Family<Label, Counter>,
    rate_limited: Family<Label, Counter>,
    database_errors: Family<Label, Counter>,
    reconcile: Option<ReconcileMetrics>,
}

/// The Kubernetes runtime's reconcile loop (registered in that mode only).
pub struct ReconcileMetrics {
    runs: Family<Label, Counter>,
    duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    functions: Family<Label, Gauge>,
}

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

impl Metrics {
    /// The manager's metrics; `kubernetes` adds the reconcile loop's.
    pub fn new(kubernetes: bool) -> Self {
        let mut registry = Registry::default();
        let deploys = Family::<Label, Counter>::default();
        registry.register(
            "skiff_deploys",
            "Deploys (POST /func) by result: ok, or the error code answered",
            deploys.clone(),
        );
        let deploy_duration = Histogram::new(DEPLOY_BUCKETS);
        registry.register(
            "skiff_deploy_duration_seconds",
            "Time to answer a deploy, from its request to its answer, whatever the result",
            deploy_duration.clone(),
        );
        let check_duration = Histogram::new(DEPLOY_BUCKETS);
        registry.register(
            "skiff_check_duration_seconds",
            "Time of a deploy's build in the checker (graph to probe, with any wait for a slot)",
            check_duration.clone(),
        );
        let check_steps: HistogramFamily = Family::new_with_constructor(step_histogram);
        registry.register(
            "skiff_check_step_duration_seconds",
            "Time of each build step: graph, resolve, bundle, check (types), probe",
            check_steps.clone(),
        );
        let dependency_resolution = Histogram::new(DEPLOY_BUCKETS);
        registry.register(
            "skiff_dependency_resolution_duration_seconds",
            "Time to download and pin a deploy's remote dependencies (deploys that have any)",
            dependency_resolution.clone(),
        );
        let logins = Family::<Label, Counter>::default();
        registry.register(
            "skiff_logins",
            "Logins by result: ok, bad_credentials, rate_limited, unavailable, error",
            logins.clone(),
        );
        let rate_limited = Family::<Label, Counter>::default();
        registry.register(
            "skiff_manager_rate_limited_requests",
            "Requests refused with 429 by the manager's own limits, by endpoint",
            rate_limited.clone(),
        );
        let database_errors = Family::<Label, Counter>::default();
        registry.register(
            "skiff_manager_database_errors",
            "API requests failed by the database: unavailable, busy (lock conflicts retried \
             out), other",
            database_errors.clone(),
        );
        let reconcile = kubernetes.then(|| ReconcileMetrics::register(&mut registry));
        // Known series start at zero, so a rate over them is defined from the
        // first scrape (a family with no series is not even listed).
        drop(deploys.get_or_create(&[("result", "ok")]));
        for step in BUILD_STEPS {
            drop(check_steps.get_or_create(&[("step", step)]));
        }
        for result in LOGIN_RESULTS {
            drop(logins.get_or_create(&[("result", result)]));
        }
        for endpoint in ["login", "register"] {
            drop(rate_limited.get_or_create(&[("endpoint", endpoint)]));
        }
        for kind in ["unavailable", "busy", "other"] {
            drop(database_errors.get_or_create(&[("kind", kind)]));
        }
        Self {
            registry,
            deploys,
            deploy_duration,
            check_duration,
            check_steps,
            dependency_resolution,
            logins,
            rate_limited,
            database_errors,
            reconcile,
        }
    }

    /// A deploy answered `result` (`ok` or its error code) after `took`.
    pub fn deploy_finished(&self, result: &'static str, took: Duration) {
        self.deploys.get_or_create(&[("result", result)]).inc();
        self.deploy_duration.observe(took.as_secs_f64());
    }

    /// The steps of one build, as the checker timed them.
    pub fn build_timed(&self, times: &StepTimes) {
        if let Some(total) = times.total_secs {
            self.check_duration.observe(total);
        }
        for (step, secs) in &times.steps {
            // Only the known steps: a checker of another version cannot add labels.
            let Some(step) = BUILD_STEPS.iter().find(|s| **s == step.as_str()) else {
                continue;
            };
            self.check_steps
                .get_or_create(&[("step", step)])
                .observe(*secs);
            if *step == "resolve" {
                self.dependency_resolution.observe(*secs);
            }
        }
    }

    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&[("result", result)]).inc();
    }

    pub fn rate_limited(&self, endpoint: &'static str) {
        self.rate_limited
            .get_or_create(&[("endpoint", endpoint)])
            .inc();
    }

    pub fn database_error(&self, kind: &'static str) {
        self.database_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// The reconcile loop's metrics (`None` outside Kubernetes mode).
    pub fn reconcile(&self) -> Option<&ReconcileMetrics> {
        self.reconcile.as_ref()
    }

    /// Everything, in the Prometheus text format.
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a failure would leave a partial text.
        if prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Everything in the OpenMetrics text format, without its closing
    /// `# EOF` (to join another service's families before it).
    pub fn encode_openmetrics_families(&self) -> String {
        let mut out = String::new();
        if text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl ReconcileMetrics {
    fn register(registry: &mut Registry) -> Self {
        let runs = Family::<Label, Counter>::default();
        registry.register(
            "skiff_reconcile_runs",
            "Reconcile passes by result: ok, or failed (some function could not be applied, \
             deleted or read)",
            runs.clone(),
        );
        let duration = Histogram::new(STEP_BUCKETS);
        registry.register(
            "skiff_reconcile_duration_seconds",
            "Time of one reconcile pass",
            duration.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "skiff_reconcile_last_success_timestamp_seconds",
            "Unix time of the last pass that reconciled every function (0: none yet)",
            last_success.clone(),
        );
        let functions = Family::<Label, Gauge>::default();
        for result in ["ok", "failed"] {
            drop(runs.get_or_create(&[("result", result)]));
        }
        for outcome in ["applied", "deleted", "failed"] {
            drop(functions.get_or_create(&[("outcome", outcome)]));
        }
        registry.register(
            "skiff_reconcile_functions",
            "Functions in the last pass by outcome: applied, deleted, or failed (pending: \
             retried next pass)",
            functions.clone(),
        );
        Self {
            runs,
            duration,
            last_success,
            functions,
        }
    }

    /// One pass: how many functions it applied, deleted and failed, and how long it took.
    pub fn pass(
        &self,
        applied: usize,
        deleted: usize,
        failed: usize,
        errors: bool,
        took: Duration,
    ) {
        let result = if errors { "failed" } else { "ok" };
        self.runs.get_or_create(&[("result", result)]).inc();
        self.duration.observe(took.as_secs_f64());
        for (outcome, n) in [
            ("applied", applied),
            ("deleted", deleted),
            ("failed", failed),
        ] {
            self.functions
                .get_or_create(&[("outcome", outcome)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if !errors {
            self.last_success
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }
}

/// Counts what an API error says about the service: a request refused by a
/// rate limit, or failed by the database. `route` is the matched pattern.
pub fn observe_error(metrics: &Metrics, route: Option<&str>, e: &ApiError) {
    match e {
        ApiError::RateLimited { .. } => metrics.rate_limited(match route {
            Some("/login") => "login",
            Some("/register") => "register",
            _ => "other",
        }),
        ApiError::Unavailable {
            code: "database_unavailable",
            ..
        } => metrics.database_error("unavailable"),
        ApiError::Unavailable {
            code: "database_busy",
            ..
        } => metrics.database_error("busy"),
        ApiError::Internal(e) if e.chain().any(|c| c.is::<StoreError>()) => {
            metrics.database_error("other");
        }
        _ => {}
    }
}

/// `SKIFF_METRICS_LISTEN`: an address, or `off` (also empty) for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|_| format!("{addr:?} is not an address (host:port) or `off`")),
        }
    }
}

/// Binds the metrics listener and builds its server (one worker: a scrape
/// every few seconds). It answers `GET /metrics` and nothing else.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<(Server, SocketAddr)> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    let metrics = web::Data::from(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(scrape))
            .default_service(web::to(HttpResponse::NotFound))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, bound))
}

async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(metrics.encode_text())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_as_documented_and_labels_stay_bounded() {
        let m = Metrics::new(false);
        m.deploy_finished("ok", Duration::from_millis(300));
        m.deploy_finished("syntax_error", Duration::from_millis(50));
        m.build_timed(&StepTimes {
            steps: vec![
                ("graph".into(), 0.1),
                ("resolve".into(), 2.0),
                ("made-up".into(), 1.0),
            ],
            total_secs: Some(2.5),
        });
        m.login("bad_credentials");
        let text = m.encode_text();
        for line in [
            "skiff_deploys_total{result=\"ok\"} 1",
            "skiff_deploys_total{result=\"syntax_error\"} 1",
            "skiff_deploy_duration_seconds_count 2",
            "skiff_check_duration_seconds_count 1",
            "skiff_check_step_duration_seconds_count{step=\"graph\"} 1",
            "skiff_dependency_resolution_duration_seconds_count 1",
            "skiff_logins_total{result=\"bad_credentials\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("made-up"), "{text}");
        assert!(!text.contains("skiff_reconcile"), "{text}");
        assert!(
            Metrics::new(true)
                .encode_text()
                .contains("skiff_reconcile_runs_total")
        );
    }

    #[test]
    fn failed_requests_count_what_they_say_about_the_service() {
        let m = Metrics::new(false);
        observe_error(
            &m,
            Some("/login"),
            &ApiError::RateLimited { retry_after: 3 },
        );
        observe_error(
            &m,
            Some("/register"),
            &ApiError::RateLimited { retry_after: 3 },
        );
        observe_error(&m, None, &ApiError::RateLimited { retry_after: 3 });
        observe_error(&m, Some("/func"), &StoreError::Deadlock.into());
        observe_error(&m, Some("/func"), &StoreError::NotFound("x".into()).into());
        let other = ApiError::from(StoreError::Database(sqlx_error()));
        observe_error(&m, Some("/func"), &other);
        observe_error(
            &m,
            Some("/func"),
            &ApiError::Internal(anyhow::anyhow!("not the database")),
        );
        let text = m.encode_text();
        for line in [
            "skiff_manager_rate_limited_requests_total{endpoint=\"login\"} 1",
            "skiff_manager_rate_limited_requests_total{endpoint=\"register\"} 1",
            "skiff_manager_rate_limited_requests_total{endpoint=\"other\"} 1",
            "skiff_manager_database_errors_total{kind=\"busy\"} 1",
            "skiff_manager_database_errors_total{kind=\"other\"} 1",
            "skiff_manager_database_errors_total{kind=\"unavailable\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    fn sqlx_error() -> sqlx::Error {
        sqlx::Error::RowNotFound
    }

    #[test]
    fn the_listen_setting_takes_an_address_or_off() {
        assert_eq!("off".parse::<MetricsListen>().unwrap(), MetricsListen(None));
        assert_eq!("".parse::<MetricsListen>().unwrap(), MetricsListen(None));
        assert_eq!(
            "127.0.0.1:9465".parse::<MetricsListen>().unwrap(),
            MetricsListen(Some("127.0.0.1:9465".parse().unwrap()))
        );
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
