use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use skiff_core::store::sha256_hex;
use skiff_testkit::{TestBackend, TestDb};
use tokio::task::JoinSet;

use crate::harness::{Manager, ManagerEnv, source};

const FUNCTIONS: [&str; 4] = ["f0", "f1", "f2", "f3"];
const ROUNDS: usize = 6;

#[tokio::test]
async fn sqlite_sigkill_mid_deploy_leaves_each_function_wholly_old_or_new() {
    sigkill_mid_deploy(TestBackend::Sqlite).await;
}

#[tokio::test]
async fn mysql_sigkill_mid_deploy_leaves_each_function_wholly_old_or_new() {
    sigkill_mid_deploy(TestBackend::MySql).await;
}

/// What was sent, and what was acknowledged.
#[derive(Default)]
struct Ledger {
    /// Per function, the sha256 of every source ever sent.
    sent: HashMap<String, Vec<String>>,
    /// (function, version, sha256) of every deploy answered 200/201.
    acked: Vec<(String, i64, String)>,
    /// Deploys cut off by the kill (no answer).
    unanswered: usize,
}

impl Ledger {
    fn record(&mut self, name: &str, src: &str, answer: Option<(u16, Value)>) {
        let sha = sha256_hex(src.as_bytes());
        if let Some((status, body)) = answer {
            // A deploy that got an answer before the kill was either stored or
            // refused as a whole; only the database can say for the others.
            assert!(
                matches!(status, 200 | 201),
                "deploy of {name} answered {status}: {body}"
            );
            let v = body["version"].as_i64().expect("version");
            self.acked.push((name.to_owned(), v, sha));
        } else {
            self.unanswered += 1;
        }
    }
}

/// A source of `kb` KiB, so some deploys spend longer in the checker and the store.
fn sized_source(tag: &str, kb: usize) -> String {
    let mut s = source(tag);
    for i in 0..kb {
        s.push_str(&format!("// {i:04} {}\n", "x".repeat(1016)));
    }
    s
}

async fn sigkill_mid_deploy(backend: TestBackend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().unwrap();
    let env = ManagerEnv {
        database_url: db.url.clone(),
        data_dir: data.path().to_path_buf(),
        extra: vec![],
    };
    let mut mgr = Manager::start(&env).await;
    let token = mgr.token("alice").await;
    let mut ledger = Ledger::default();

    // Every function starts with two acknowledged versions.
    for name in FUNCTIONS {
        for v in 1..=2 {
            let src = source(&format!("{name} initial v{v}"));
            ledger
                .sent
                .entry(name.into())
                .or_default()
                .push(sha256_hex(src.as_bytes()));
            let r = mgr.try_deploy(&token, name, &src).await.unwrap();
            let answer = (r.status().as_u16(), r.json().await.unwrap());
            ledger.record(name, &src, Some(answer));
        }
    }

    for round in 0..ROUNDS {
        // Two deploys per function in flight, one small and one of 900 KiB.
        let mut inflight = JoinSet::new();
        for name in FUNCTIONS {
            for (k, kb) in [(0, 0), (1, 900)] {
                let src = sized_source(&format!("{name} round {round} deploy {k}"), kb);
                ledger
                    .sent
                    .entry(name.into())
                    .or_default()
                    .push(sha256_hex(src.as_bytes()));
                spawn_deploy(&mut inflight, &mgr, &token, name, src);
            }
        }
        // Kill once the first answer is in, a little later each round, so the
        // others are caught in different places (checker, transaction, reply).
        let first = inflight.join_next().await.unwrap().unwrap();
        ledger.record(first.0, &first.1, first.2);
        tokio::time::sleep(Duration::from_millis([0, 5, 15, 40, 90, 160][round % 6])).await;
        mgr.kill().await;
        while let Some(done) = inflight.join_next().await {
            let (name, src, answer) = done.unwrap();
            ledger.record(name, &src, answer);
        }

        // Restarted on the same database and data dir, the old token still works.
        mgr = Manager::start(&env).await;
        verify(&mgr, &token, &db, &ledger, round).await;
    }
    if backend == TestBackend::MySql {
        mgr = kill_inside_open_transactions(mgr, &env, &token, &db, &mut ledger).await;
    }
    mgr.kill().await;
}

type Inflight = JoinSet<(&'static str, String, Option<(u16, Value)>)>;

fn spawn_deploy(
    inflight: &mut Inflight,
    mgr: &Manager,
    token: &str,
    name: &'static str,
    src: String,
) {
    let (client, url, token) = (
        mgr.http.clone(),
        mgr.url(&format!("/func?name={name}")),
        token.to_owned(),
    );
    inflight.spawn(async move {
        let answer = match client
            .post(url)
            .bearer_auth(token)
            .body(src.clone())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                r.json::<Value>().await.ok().map(|b| (status, b))
            }
            Err(_) => None,
        };
        (name, src, answer)
    });
}

/// The live version of each function, as the API reports it.
async fn live_versions(mgr: &Manager, token: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for name in FUNCTIONS {
        let info: Value = mgr
            .try_get(token, &format!("/func/{name}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(info["version"].as_i64().unwrap());
    }
    out
}

/// MySQL only, and deterministic: a second connection holds the gap lock at the
/// end of the change feed, so each deploy blocks on its last statement with its
/// version bump and its source already written but not committed. The manager
/// is SIGKILLed right then; every one of those deploys must vanish whole.
async fn kill_inside_open_transactions(
    mut mgr: Manager,
    env: &ManagerEnv,
    token: &str,
    db: &TestDb,
    ledger: &mut Ledger,
) -> Manager {
    use sqlx::{AnyConnection, Connection, Executor};
    sqlx::any::install_default_drivers();
    let before = live_versions(&mgr, token).await;
    let mut locker = AnyConnection::connect(&db.url).await.unwrap();
    let mut watcher = AnyConnection::connect(&db.url).await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM changes")
        .fetch_one(&mut locker)
        .await
        .unwrap();
    locker.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT id FROM changes WHERE id > ? FOR UPDATE")
        .bind(last)
        .fetch_all(&mut locker)
        .await
        .unwrap();

    let mut inflight = Inflight::new();
    for name in FUNCTIONS {
        let src = source(&format!("{name} blocked inside its transaction"));
        ledger
            .sent
            .entry(name.into())
            .or_default()
            .push(sha256_hex(src.as_bytes()));
        spawn_deploy(&mut inflight, &mgr, token, name, src);
    }
    // Wait until every deploy is blocked inside its transaction (bounded).
    let waiting_sql = "SELECT CAST(COUNT(*) AS SIGNED), \
         CAST(COALESCE(SUM(t.trx_rows_modified), 0) AS SIGNED) \
         FROM information_schema.innodb_trx t \
         JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
         WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()";
    let mut waiting = (0i64, 0i64);
    for _ in 0..240 {
        waiting = sqlx::query_as(waiting_sql)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
        if waiting.0 >= FUNCTIONS.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        waiting.0,
        FUNCTIONS.len() as i64,
        "the deploys never blocked inside their transactions"
    );
    // Deploys of one user serialise on the user's row lock (the quota
    // checks): the first has bumped its function's row and stored its
    // version already and waits on the feed; the others wait on that lock.
    assert!(
        waiting.1 >= 2,
        "rows written by the blocked deploys: {}",
        waiting.1
    );
    mgr.kill().await;
    locker.execute("ROLLBACK").await.unwrap();
    while let Some(done) = inflight.join_next().await {
        let (name, src, answer) = done.unwrap();
        assert!(
            answer.is_none(),
            "{name} answered while blocked: {answer:?}"
        );
        ledger.record(name, &src, answer);
    }
    locker.close().await.unwrap();
    watcher.close().await.unwrap();

    let mgr = Manager::start(env).await;
    assert_eq!(
        live_versions(&mgr, token).await,
        before,
        "a deploy killed inside its transaction left something behind"
    );
    verify(&mgr, token, db, ledger, ROUNDS).await;
    // And the version numbers go on from where they were.
    for (name, v) in FUNCTIONS.iter().zip(&before) {
        let src = source(&format!("{name} after the blocked round"));
        ledger
            .sent
            .entry((*name).into())
            .or_default()
            .push(sha256_hex(src.as_bytes()));
        let r = mgr.try_deploy(token, name, &src).await.unwrap();
        let answer = (r.status().as_u16(), r.json::<Value>().await.unwrap());
        assert_eq!(answer.1["version"], v + 1, "{name}");
        ledger.record(name, &src, Some(answer));
    }
    verify(&mgr, token, db, ledger, ROUNDS + 1).await;
    mgr
}

async fn verify(mgr: &Manager, token: &str, db: &TestDb, ledger: &Ledger, round: usize) {
    let store = db.store().await;
    let changes = store.changes_since(0, 1_000_000).await.unwrap();
    let mut stored_unanswered = 0;
    for name in FUNCTIONS {
        let r = mgr.try_get(token, &format!("/func/{name}")).await.unwrap();
        assert_eq!(r.status(), 200, "round {round}: {name} is gone");
        let info: Value = r.json().await.unwrap();
        let stored: Vec<(i64, String, i64)> = info["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["sha256"].as_str().unwrap().to_owned(),
                    v["size"].as_i64().unwrap(),
                )
            })
            .collect();
        // Versions are consecutive from 1, and the live one is the newest.
        let numbers: Vec<i64> = stored.iter().map(|s| s.0).collect();
        assert_eq!(
            numbers,
            (1..=stored.len() as i64).collect::<Vec<_>>(),
            "round {round}: {name}: versions are not consecutive"
        );
        let live = info["version"].as_i64().unwrap();
        assert_eq!(
            live,
            stored.len() as i64,
            "round {round}: {name}: live is not the newest"
        );
        assert_eq!(info["latest_version"], live);
        // The live source is wholly the live version: same bytes, same hash.
        let code = mgr
            .try_get(token, &format!("/func/{name}/code"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (_, live_sha, live_size) = &stored[(live - 1) as usize];
        assert_eq!(
            &sha256_hex(&code),
            live_sha,
            "round {round}: {name}: torn live source"
        );
        assert_eq!(info["sha256"].as_str().unwrap(), live_sha);
        assert_eq!(code.len() as i64, *live_size);
        // Every stored version is something that was sent, once.
        for (v, sha, _) in &stored {
            assert!(
                ledger.sent[name].contains(sha),
                "round {round}: {name} v{v} holds a source nobody sent"
            );
            assert_eq!(
                stored.iter().filter(|s| &s.1 == sha).count(),
                1,
                "round {round}: {name}: one deploy stored twice"
            );
        }
        // Every acknowledged deploy is there, at the version it was told.
        for (n, v, sha) in ledger.acked.iter().filter(|a| a.0 == name) {
            let at = stored.iter().find(|s| s.0 == *v).map(|s| s.1.clone());
            assert_eq!(
                at.as_ref(),
                Some(sha),
                "round {round}: acknowledged {n} v{v} lost"
            );
        }
        stored_unanswered += stored
            .iter()
            .filter(|s| !ledger.acked.iter().any(|a| a.0 == name && a.2 == s.1))
            .count();
        // The change feed has a row per stored version (no deletes here).
        let rows = changes
            .iter()
            .filter(|c| c.user == "alice" && c.function == name)
            .count();
        assert_eq!(
            rows,
            stored.len(),
            "round {round}: {name}: change feed rows"
        );
    }
    // What the kills hit, for whoever reads the test output.
    eprintln!(
        "round {round}: {} deploys acknowledged so far, {} cut off by kills, \
         {stored_unanswered} of those committed before the kill",
        ledger.acked.len(),
        ledger.unanswered
    );
    store.close().await;
}

/// A manager killed during `deno check` leaves its scratch dir behind; the next
/// start removes the old ones and leaves recent ones (another manager's running
/// checks) alone.
#[tokio::test]
async fn scratch_dirs_left_by_a_killed_manager_are_swept_at_start() {
    let db = TestDb::new(TestBackend::Sqlite).await;
    let data = tempfile::tempdir().unwrap();
    let checks = data.path().join("checks");
    let (old, recent) = (checks.join("check-killed"), checks.join("check-running"));
    for d in [&old, &recent] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("fn.ts"), source("left behind")).unwrap();
    }
    let aged = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(aged.success());
    let env = ManagerEnv {
        database_url: db.url.clone(),
        data_dir: data.path().to_path_buf(),
        extra: vec![],
    };
    let mut mgr = Manager::start(&env).await;
    assert!(!old.exists(), "a stale scratch dir survived the start");
    assert!(recent.exists(), "a recent scratch dir was removed");
    assert!(mgr.log().contains("removed type-check scratch dirs"));
    mgr.kill().await;
}
