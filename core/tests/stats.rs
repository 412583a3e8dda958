//! Per-minute statistics as several routers write them and an owner reads
//! them, on SQLite and on MariaDB/MySQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use skiff_core::names::{FunctionName, UserName};
use skiff_core::store::{LatencyHistogram, MINUTE_MS, MinuteStats, StatsRow, Store, minute_of};
use skiff_core::time::now_millis;
use skiff_testkit::{TestBackend, TestDb};

skiff_testkit::on_both_backends!(
    two_routers_writing_one_minute_add_up,
    a_router_rewriting_its_row_does_not_count_twice,
    percentiles_come_from_the_merged_buckets,
    the_series_covers_the_window_minute_by_minute,
    rows_of_deleted_functions_are_gone_and_not_written,
    pruning_removes_only_old_rows,
    the_last_called_minute_counts_only_minutes_with_calls,
);

/// A fresh store with alice's function `f`; returns (store, user id, function id).
async fn with_function(b: TestBackend) -> (TestDb, Store, i64, i64) {
    let db = TestDb::new(b).await;
    let s = db.store().await;
    let alice = UserName::parse("alice").unwrap();
    let a = s.create_user(&alice, "h").await.unwrap();
    s.deploy(
        a.id,
        &alice,
        &f(),
        b"export default () => new Response('x')",
    )
    .await
    .unwrap();
    let id = s
        .live_function("alice", "f")
        .await
        .unwrap()
        .unwrap()
        .function_id;
    (db, s, a.id, id)
}

fn f() -> FunctionName {
    FunctionName::parse("f").unwrap()
}

/// Totals of `n` requests of `ms` each, `errors` of them errors.
fn minute(n: u64, errors: u64, cold: u64, ms: f64) -> MinuteStats {
    let mut latency = LatencyHistogram::default();
    for _ in 0..n {
        latency.record_ms(ms);
    }
    MinuteStats {
        invocations: n,
        errors,
        cold_starts: cold,
        latency,
    }
}

fn row(function_id: i64, minute: i64, stats: MinuteStats) -> StatsRow {
    StatsRow {
        function_id,
        minute,
        stats,
    }
}

async fn two_routers_writing_one_minute_add_up(b: TestBackend) {
    let (_db, s, uid, id) = with_function(b).await;
    let now = minute_of(now_millis());
    s.write_stats(1, &[row(id, now, minute(10, 2, 1, 5.0))])
        .await
        .unwrap();
    s.write_stats(2, &[row(id, now, minute(7, 1, 2, 5.0))])
        .await
        .unwrap();
    let st = s
        .function_stats(uid, &f(), Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((st.invocations, st.errors, st.cold_starts), (17, 3, 3));
    // The minute may have turned since the write.
    let point = st.series.iter().find(|p| p.t == now).unwrap();
    assert_eq!((point.invocations, point.errors), (17, 3));
    // No such function: none (the API answers 404).
    let other = FunctionName::parse("nope").unwrap();
    assert!(
        s.function_stats(uid, &other, Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_router_rewriting_its_row_does_not_count_twice(b: TestBackend) {
    let (_db, s, _uid, id) = with_function(b).await;
    let m = minute_of(now_millis());
    // A router flushes its running totals for the minute, then again later.
    s.write_stats(9, &[row(id, m, minute(3, 0, 1, 1.0))])
        .await
        .unwrap();
    s.write_stats(9, &[row(id, m, minute(5, 1, 1, 1.0))])
        .await
        .unwrap();
    // The same flush repeated (after an error, say).
    s.write_stats(9, &[row(id, m, minute(5, 1, 1, 1.0))])
        .await
        .unwrap();
    let st = s.function_stats_between(id, m, m).await.unwrap();
    assert_eq!((st.invocations, st.errors, st.cold_starts), (5, 1, 1));
}

async fn percentiles_come_from_the_merged_buckets(b: TestBackend) {
    let (_db, s, _uid, id) = with_function(b).await;
    let m = minute_of(now_millis());
    // Router 1 served only fast requests, router 2 only slow ones, in two
    // minutes: neither row alone has the right percentiles.
    s.write_stats(
        1,
        &[
            row(id, m - MINUTE_MS, minute(45, 0, 0, 2.0)),
            row(id, m, minute(45, 0, 0, 2.0)),
        ],
    )
    .await
    .unwrap();
    s.write_stats(
        2,
        &[
            row(id, m - MINUTE_MS, minute(8, 0, 0, 100.0)),
            row(id, m, minute(2, 0, 0, 1000.0)),
        ],
    )
    .await
    .unwrap();
    let st = s
        .function_stats_between(id, m - MINUTE_MS, m)
        .await
        .unwrap();
    assert_eq!(st.invocations, 100);
    let near = |got: Option<f64>, want: f64| {
        let got = got.unwrap();
        assert!((got - want).abs() / want < 0.10, "{got} vs {want}");
    };
    // 90 of 100 at 2 ms, 8 at 100 ms, 2 at 1 s.
    near(st.p50_ms, 2.0);
    near(st.p95_ms, 100.0);
    near(st.p99_ms, 1000.0);
    assert_eq!(st.series.len(), 2);
    assert_eq!(st.series[0].invocations, 53);
    assert_eq!(st.series[1].invocations, 47);
    // Each minute has its own percentiles (the console charts them): the
    // second minute's 2 slow requests of 47 are past its p95, not its p50.
    near(st.series[0].p50_ms, 2.0);
    near(st.series[0].p99_ms, 100.0);
    near(st.series[1].p50_ms, 2.0);
    near(st.series[1].p99_ms, 1000.0);
}

async fn the_series_covers_the_window_minute_by_minute(b: TestBackend) {
    let (_db, s, uid, id) = with_function(b).await;
    let now = minute_of(now_millis());
    s.write_stats(
        1,
        &[
            row(id, now - 3 * MINUTE_MS, minute(4, 4, 2, 3.0)),
            // Outside a 5-minute window.
            row(id, now - 10 * MINUTE_MS, minute(100, 0, 0, 3.0)),
        ],
    )
    .await
    .unwrap();
    let st = s
        .function_stats(uid, &f(), Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.series.len(), 5, "{:?}", st.series);
    assert_eq!((st.invocations, st.errors), (4, 4));
    let ts: Vec<i64> = st.series.iter().map(|p| p.t).collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == MINUTE_MS), "{ts:?}");
    let with_calls: Vec<_> = st.series.iter().filter(|p| p.invocations > 0).collect();
    assert_eq!(with_calls.len(), 1);
    assert_eq!(with_calls[0].t, now - 3 * MINUTE_MS);
    assert_eq!(with_calls[0].cold_starts, 2);
    // A minute without requests has no percentiles, not zeros.
    assert!(
        st.series
            .iter()
            .filter(|p| p.invocations == 0)
            .all(|p| p.p95_ms.is_none())
    );
    assert!(with_calls[0].p95_ms.is_some());
    // Nothing served: no percentiles.
    let quiet = s
        .function_stats(uid, &f(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((quiet.invocations, quiet.p50_ms), (0, None));
    assert_eq!(quiet.series.len(), 1);
}

async fn rows_of_deleted_functions_are_gone_and_not_written(b: TestBackend) {
    let (_db, s, uid, id) = with_function(b).await;
    let m = minute_of(now_millis());
    s.write_stats(1, &[row(id, m, minute(1, 0, 0, 1.0))])
        .await
        .unwrap();
    let alice = UserName::parse("alice").unwrap();
    assert!(s.delete_function(uid, &alice, &f()).await.unwrap());
    assert_eq!(
        s.function_stats_between(id, m, m)
            .await
            .unwrap()
            .invocations,
        0
    );
    // A router that had not heard of the delete yet flushes: nothing is written.
    s.write_stats(1, &[row(id, m, minute(1, 0, 0, 1.0))])
        .await
        .unwrap();
    assert_eq!(
        s.function_stats_between(id, m, m)
            .await
            .unwrap()
            .invocations,
        0
    );
    // The same name again is a new function with its own statistics.
    s.deploy(uid, &alice, &f(), b"export default () => new Response('y')")
        .await
        .unwrap();
    let st = s
        .function_stats(uid, &f(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.invocations, 0);
}

async fn pruning_removes_only_old_rows(b: TestBackend) {
    let (_db, s, _uid, id) = with_function(b).await;
    let now = minute_of(now_millis());
    let old: Vec<StatsRow> = (10..20)
        .map(|i| row(id, now - i * MINUTE_MS, minute(1, 0, 0, 1.0)))
        .collect();
    s.write_stats(1, &old).await.unwrap();
    s.write_stats(2, &old).await.unwrap();
    s.write_stats(1, &[row(id, now, minute(1, 0, 0, 1.0))])
        .await
        .unwrap();
    let before = now - 5 * MINUTE_MS;
    assert_eq!(s.prune_stats(before, 100).await.unwrap(), 20);
    assert_eq!(s.prune_stats(before, 100).await.unwrap(), 0);
    let st = s
        .function_stats_between(id, now - 30 * MINUTE_MS, now)
        .await
        .unwrap();
    assert_eq!(st.invocations, 1);
}

/// Scale to zero reads a function's last use from here: the newest minute
/// with a call on any router, not a newer minute a router wrote as zero.
async fn the_last_called_minute_counts_only_minutes_with_calls(b: TestBackend) {
    let (_db, s, _uid, id) = with_function(b).await;
    assert_eq!(s.last_called_minutes().await.unwrap().get(&id), None);
    let now = minute_of(now_millis());
    s.write_stats(1, &[row(id, now - 3 * MINUTE_MS, minute(2, 0, 0, 1.0))])
        .await
        .unwrap();
    s.write_stats(2, &[row(id, now - 2 * MINUTE_MS, minute(1, 1, 0, 1.0))])
        .await
        .unwrap();
    // A router's row for a later minute with no call (its totals so far).
    s.write_stats(1, &[row(id, now, minute(0, 0, 0, 1.0))])
        .await
        .unwrap();
    assert_eq!(
        s.last_called_minutes().await.unwrap().get(&id),
        Some(&(now - 2 * MINUTE_MS))
    );
}
