//! Requests per second per user (issue 13): a user over their rate gets
//! `429 rate_limited` with `Retry-After` while another user's functions keep
//! answering; the rate comes back after the `Retry-After`; an override set in
//! the store reaches a running router through the change feed.

use std::time::Duration;

use serde_json::Value;
use skiff_core::fnconfig::UserLimits;
use skiff_core::names::UserName;
use skiff_testkit::TestBackend;

use crate::helpers::{Opts, Stack, replies, stack_with};

skiff_testkit::on_both_backends!(multi_thread;
    a_user_over_the_rate_gets_429_and_a_neighbour_does_not,
    an_override_applies_without_a_restart,
);

/// 5 requests per second, a burst of 10.
async fn stack_at_5_rps(b: TestBackend) -> Stack {
    stack_with(
        b,
        Opts {
            tune_router: |r| r.quotas.rps = 5,
            ..Opts::default()
        },
    )
    .await
}

/// Calls `user/name` until it is refused; returns the `Retry-After` seconds.
/// Every answer before the refusal must be a 200.
async fn call_until_limited(s: &Stack, user: &str, name: &str) -> u64 {
    for _ in 0..1000 {
        let r = s.get(user, name, "/").await;
        match r.status().as_u16() {
            200 => continue,
            429 => {
                let retry = r
                    .headers()
                    .get("retry-after")
                    .expect("a 429 says when to retry")
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .expect("Retry-After in whole seconds");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("rate"));
                return retry;
            }
            st => panic!("unexpected {st}: {}", r.text().await.unwrap_or_default()),
        }
    }
    panic!("1000 calls in a row were never refused at 5 per second");
}

async fn a_user_over_the_rate_gets_429_and_a_neighbour_does_not(b: TestBackend) {
    let s = stack_at_5_rps(b).await;
    let (alice, bob) = (s.token("alice").await, s.token("bob").await);
    s.deploy_live(&alice, "alice", "a", &replies("from a"), "from a")
        .await;
    s.deploy_live(&bob, "bob", "b", &replies("from b"), "from b")
        .await;

    let retry = call_until_limited(&s, "alice", "a").await;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Still over: refused again, before any body or instance is involved.
    let r = s
        .client
        .post(s.url("alice", "a", "/"))
        .body(vec![b'x'; 16 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // The neighbour is not affected.
    let r = s.get("bob", "b", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from b");

    // Unknown users and functions are 404 and get no bucket.
    let buckets = s.handle.state.user_rate.len();
    for user in ["nobody", "carol", "alice"] {
        let r = s.get(user, "missing", "/").await;
        assert_eq!(r.status(), 404, "{user}");
    }
    assert_eq!(s.handle.state.user_rate.len(), buckets);

    // After the Retry-After, alice is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = s.get("alice", "a", "/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from a");

    // A user whose last function is gone loses their bucket.
    s.delete(&bob, "b").await;
    s.until("bob", "b", |st, _| st == 404).await;
    // Dropped just after the directory forgot bob (same sync step).
    for _ in 0..200 {
        if s.handle.state.user_rate.len() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("bob's bucket outlived his last function");
}

async fn an_override_applies_without_a_restart(b: TestBackend) {
    let s = stack_at_5_rps(b).await;
    let (alice, bob) = (s.token("alice").await, s.token("bob").await);
    s.deploy_live(&alice, "alice", "a", &replies("from a"), "from a")
        .await;
    s.deploy_live(&bob, "bob", "b", &replies("from b"), "from b")
        .await;
    let store = s.db.store().await;
    let alice_name = UserName::parse("alice").unwrap();

    // 0 requests per second: everything refused, once the router has heard.
    let zero = UserLimits {
        rps: Some(0),
        ..Default::default()
    };
    store.set_user_limits(&alice_name, &zero).await.unwrap();
    let (st, body) = s.until("alice", "a", |st, _| st == 429).await;
    assert_eq!(st, 429);
    assert!(body.contains("rate_limited"), "{body}");
    let r = s.get("bob", "b", "/").await;
    assert_eq!(r.status(), 200, "bob keeps the operator's rate");

    // Raised far above the default: 100 calls in a row all pass, which at
    // the default 5 per second (a burst of 10) would take 18 s.
    let high = UserLimits {
        rps: Some(100_000),
        ..Default::default()
    };
    store.set_user_limits(&alice_name, &high).await.unwrap();
    s.until("alice", "a", |st, _| st == 200).await;
    for i in 0..100 {
        let r = s.get("alice", "a", "/").await;
        assert_eq!(r.status(), 200, "call {i} at the raised rate");
    }

    // Back to the default: limited again.
    store
        .set_user_limits(&alice_name, &UserLimits::default())
        .await
        .unwrap();
    s.until("alice", "a", |st, _| st == 429).await;
}
