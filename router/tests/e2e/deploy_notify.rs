//! With `SKIFF_ROUTER_NOTIFY`, the manager tells the router of each deploy
//! and delete before it answers, so the very first call after the answer is
//! served by the new version: no poll interval in between. The routers here
//! poll once an hour, so only the notification can have told them; a second
//! router that is not told shows that.

use std::time::Duration;

use skiff_testkit::TestBackend;

use crate::helpers::{Opts, replies, stack_with};

async fn first_call_after_the_answer_is_the_new_version(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            tune_router: |r| r.poll_interval = Duration::from_secs(3600),
            notify_router: true,
            ..Opts::default()
        },
    )
    .await;
    let untold = s
        .another_router(|r| r.poll_interval = Duration::from_secs(3600))
        .await;
    let t = s.token("alice").await;
    let text = |r: reqwest::Response| async move {
        let st = r.status().as_u16();
        (st, r.text().await.unwrap_or_default())
    };

    s.deploy(&t, "f", &replies("one")).await;
    assert_eq!(
        text(s.get("alice", "f", "/").await).await,
        (200, "one".into())
    );
    let other = s.manager.call(&untold.url, "alice", "f", "/").await;
    assert_eq!(
        other.status().as_u16(),
        404,
        "a router that was not told cannot know yet"
    );

    s.deploy(&t, "f", &replies("two")).await;
    assert_eq!(
        text(s.get("alice", "f", "/").await).await,
        (200, "two".into())
    );

    s.delete(&t, "f").await;
    assert_eq!(s.get("alice", "f", "/").await.status().as_u16(), 404);
}

/// The private listener's `/sync`: pokes that arrive together are answered
/// (each once the directory has polled), and other methods are refused.
async fn pokes_together_share_polls_and_all_get_answers(b: TestBackend) {
    let s = stack_with(
        b,
        Opts {
            tune_router: |r| r.poll_interval = Duration::from_secs(3600),
            ..Opts::default()
        },
    )
    .await;
    let addr = s.metrics_addr.expect("a private listener");
    let url = format!("http://{addr}/sync");
    let pokes = (0..100).map(|_| s.client.post(&url).send());
    for r in futures_util::future::join_all(pokes).await {
        assert_eq!(r.expect("answered").status().as_u16(), 204);
    }
    let get = s.client.get(&url).send().await.expect("answered");
    assert_eq!(get.status().as_u16(), 405);
    // A deploy written straight to the store (no manager to tell anyone) is
    // seen after a poke.
    // (Registers alice.)
    s.token("alice").await;
    s.deploy_unbuilt("alice", "g", &replies("poked")).await;
    assert_eq!(s.get("alice", "g", "/").await.status().as_u16(), 404);
    let r = s.client.post(&url).send().await.expect("answered");
    assert_eq!(r.status().as_u16(), 204);
    let r = s.get("alice", "g", "/").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "poked");
}

skiff_testkit::on_both_backends!(multi_thread;
    first_call_after_the_answer_is_the_new_version,
    pokes_together_share_polls_and_all_get_answers
);
