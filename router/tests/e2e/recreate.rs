//! A name deleted and created again is a new function: the router serves the
//! new code, never the old, never a 503 — when both changes fall within one
//! poll of the change feed, and when both fall while the router is down. The
//! router runs as its own process (the real `skiff-router` binary); the manager
//! runs here, and the two meet only in the database and the data dir.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_core::store::Store;
use skiff_testkit::{Launch, Service, TestBackend};

use crate::helpers::{Opts, Stack, replies, stack_with};

/// The router binary, on its own port and the stack's data dir and database.
async fn router_process(db_url: &str, data_dir: &Path) -> Service {
    Launch::router(env!("CARGO_BIN_EXE_skiff-router"), db_url, data_dir)
        .env("SKIFF_POLL_INTERVAL_MS", "100")
        .start()
        .await
}

async fn call(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(r) => {
            let st = r.status().as_u16();
            (st, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Calls `url` until it answers "new": every answer until then must be the
/// old function's 200 (the router has not heard yet), none after it may be,
/// and "new" must come within a second. Then calls a while longer.
async fn only_new_from_now_on(client: &reqwest::Client, url: &str) {
    let start = Instant::now();
    let mut seen_new = None;
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_millis(1500) {
        let (st, body) = call(client, url).await;
        answers.push((start.elapsed().as_millis(), st, body.clone()));
        match (st, body.as_str(), seen_new) {
            (200, "new", None) => seen_new = Some(start.elapsed()),
            (200, "new", Some(_)) => {}
            (200, "old", None) => {}
            _ => panic!("unexpected answer {st} {body:?}; answers so far: {answers:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = seen_new.unwrap_or_else(|| panic!("never served the new code: {answers:?}"));
    assert!(
        first < Duration::from_secs(1),
        "the new code came after {first:?}: {answers:?}"
    );
}

async fn live_id(store: &Store, user: &str, name: &str) -> i64 {
    store
        .live_function(user, name)
        .await
        .unwrap()
        .expect("live")
        .function_id
}

/// The old function's code and log are gone (at most `within`).
async fn files_gone(data_dir: &Path, id: i64, within: Duration) {
    let left = |id: i64| -> Vec<PathBuf> {
        [
            data_dir.join(format!("functions/{id}")),
            data_dir.join(format!("logs/{id}.log")),
        ]
        .into_iter()
        .filter(|p| p.exists())
        .collect()
    };
    let start = Instant::now();
    while !left(id).is_empty() && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left(id),
        Vec::<PathBuf>::new(),
        "the deleted function's files stay"
    );
}

/// A stack whose in-process router is out of the way (it polls once an
/// hour), a router process serving alice's `f` ("old"), alice's token, and
/// the old function's id.
struct Serving {
    s: Stack,
    store: Store,
    router: Service,
    token: String,
    old_id: i64,
}

async fn serving_old(b: TestBackend) -> Serving {
    let s = stack_with(
        b,
        Opts {
            tune_router: |r| r.poll_interval = Duration::from_secs(3600),
            ..Opts::default()
        },
    )
    .await;
    let store = Store::connect(&s.db.url, 1).await.unwrap();
    let router = router_process(&s.db.url, &s.data_dir).await;
    let url = format!("{}/fn/alice/f/", router.url());
    let token = s.token("alice").await;
    s.deploy(&token, "f", &replies("old")).await;
    let start = Instant::now();
    while call(&s.client, &url).await != (200, "old".into()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "old never served"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let old_id = live_id(&store, "alice", "f").await;
    Serving {
        s,
        store,
        router,
        token,
        old_id,
    }
}

async fn recreated_within_one_poll(b: TestBackend) {
    let Serving {
        s,
        store,
        router,
        token: t,
        old_id,
    } = serving_old(b).await;
    let url = format!("{}/fn/alice/f/", router.url());
    // Both changes land while the router cannot poll: it sees them in one poll.
    router.signal("-STOP");
    s.delete(&t, "f").await;
    s.deploy(&t, "f", &replies("new")).await;
    router.signal("-CONT");
    only_new_from_now_on(&s.client, &url).await;
    assert_ne!(live_id(&store, "alice", "f").await, old_id);
    files_gone(&s.data_dir, old_id, Duration::from_secs(5)).await;
    router.stop().await;
}

async fn recreated_while_the_router_was_down(b: TestBackend) {
    let Serving {
        s,
        router,
        token: t,
        old_id,
        ..
    } = serving_old(b).await;
    router.stop().await;
    s.delete(&t, "f").await;
    s.deploy(&t, "f", &replies("new")).await;
    let router = router_process(&s.db.url, &s.data_dir).await;
    // What was not live is swept before the router listens.
    files_gone(&s.data_dir, old_id, Duration::ZERO).await;
    let url = format!("{}/fn/alice/f/", router.url());
    assert_eq!(call(&s.client, &url).await, (200, "new".into()));
    only_new_from_now_on(&s.client, &url).await;
    router.stop().await;
}

skiff_testkit::on_both_backends!(multi_thread;
    recreated_within_one_poll,
    recreated_while_the_router_was_down
);
