//! The manager's Prometheus metrics, scraped from its own listener after known
//! traffic: deploys by result with their durations and build steps, logins by
//! result, refusals by the rate limits, database failures. The API port does
//! not serve them.

use serde_json::json;
use skiff_testkit::{Scrape, TestBackend};

use crate::helpers::{HELLO, Options, PASSWORD, TestApp, error_code, spawn_app, spawn_app_with};

skiff_testkit::on_both_backends!(
    deploys_logins_and_builds_are_counted,
    rate_limited_requests_are_counted_by_endpoint,
    database_failures_are_counted,
);

impl TestApp {
    async fn scrape(&self) -> Scrape {
        Scrape::get(&self.metrics_url).await
    }
}

async fn deploys_logins_and_builds_are_counted(b: TestBackend) {
    let app = spawn_app(b).await;
    // Known series are there from the start, at zero.
    let m = app.scrape().await;
    assert_eq!(m.value("skiff_deploys_total{result=\"ok\"}"), 0.0);
    assert_eq!(m.value("skiff_logins_total{result=\"ok\"}"), 0.0);
    assert_eq!(m.value("skiff_deploy_duration_seconds_count"), 0.0);

    let t = app.token("alice").await;
    let r = app.login("alice", "not the password").await;
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = app.login("nobody", PASSWORD).await;
    assert_eq!(error_code(r, 401).await, "unauthorized");
    app.deploy_ok(&t, "hello", HELLO).await;
    let r = app
        .deploy(
            &t,
            "broken",
            "export default (req: Request) => new Response('x'\n",
        )
        .await;
    assert_eq!(error_code(r, 400).await, "syntax_error");

    let m = app.scrape().await;
    assert_eq!(m.value("skiff_deploys_total{result=\"ok\"}"), 1.0);
    assert_eq!(m.value("skiff_deploys_total{result=\"syntax_error\"}"), 1.0);
    assert_eq!(m.value("skiff_deploy_duration_seconds_count"), 2.0);
    assert!(m.value("skiff_deploy_duration_seconds_sum") > 0.0);
    assert_eq!(m.value("skiff_check_duration_seconds_count"), 2.0);
    // Both builds read the graph; only the good one went on to bundle and probe.
    let step = |s: &str| {
        m.value(&format!(
            "skiff_check_step_duration_seconds_count{{step=\"{s}\"}}"
        ))
    };
    assert_eq!(step("graph"), 2.0);
    assert_eq!(step("bundle"), 1.0);
    assert_eq!(step("probe"), 1.0);
    // Nothing remote to download.
    assert_eq!(step("resolve"), 0.0);
    assert_eq!(
        m.value("skiff_dependency_resolution_duration_seconds_count"),
        0.0
    );
    assert_eq!(m.value("skiff_logins_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        m.value("skiff_logins_total{result=\"bad_credentials\"}"),
        2.0
    );
    assert_eq!(m.value("skiff_logins_total{result=\"rate_limited\"}"), 0.0);
    // No user or function is a label of the manager's.
    assert!(
        !m.text.contains("alice") && !m.text.contains("hello"),
        "{}",
        m.text
    );
    // Process mode: no reconcile loop.
    assert!(!m.has_family("skiff_reconcile_runs_total"), "{}", m.text);

    // The API port has no /metrics; the metrics port has nothing else.
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let other = app.metrics_url.replace("/metrics", "/func");
    let r = app.client.get(other).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

async fn rate_limited_requests_are_counted_by_endpoint(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_user_addr: 2,
            register_limit_per_addr: 2,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(app.register("alice").await.status(), 201);
    for _ in 0..2 {
        let r = app.login("alice", "wrong password").await;
        assert_eq!(r.status(), 401);
    }
    let r = app.login("alice", "wrong password").await;
    assert_eq!(error_code(r, 429).await, "rate_limited");
    assert_eq!(app.register("bob").await.status(), 201);
    let r = app.register("carol").await;
    assert_eq!(error_code(r, 429).await, "rate_limited");

    let m = app.scrape().await;
    assert_eq!(
        m.value("skiff_logins_total{result=\"bad_credentials\"}"),
        2.0
    );
    assert_eq!(m.value("skiff_logins_total{result=\"rate_limited\"}"), 1.0);
    assert_eq!(
        m.value("skiff_manager_rate_limited_requests_total{endpoint=\"login\"}"),
        1.0
    );
    assert_eq!(
        m.value("skiff_manager_rate_limited_requests_total{endpoint=\"register\"}"),
        1.0
    );
}

async fn database_failures_are_counted(b: TestBackend) {
    let app = spawn_app(b).await;
    let t = app.token("alice").await;
    let m = app.scrape().await;
    assert_eq!(
        m.value("skiff_manager_database_errors_total{kind=\"unavailable\"}"),
        0.0
    );
    // The manager's own connections go away.
    app.state.store.close().await;
    let r = app
        .post_json(
            "/login",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(r, 503).await, "database_unavailable");
    let r = app.get(&t, "/func").await;
    assert_eq!(error_code(r, 503).await, "database_unavailable");

    let m = app.scrape().await;
    assert_eq!(
        m.value("skiff_manager_database_errors_total{kind=\"unavailable\"}"),
        2.0
    );
    assert_eq!(m.value("skiff_logins_total{result=\"unavailable\"}"), 1.0);
}
