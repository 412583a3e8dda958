use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_core::store::sha256_hex;

use crate::harness::{Manager, ManagerEnv, PASSWORD, PrivateMariaDb, source, status_and_code};

/// One request made while the database came and went.
#[derive(Debug, Clone)]
struct Outcome {
    what: String,
    status: u16,
    code: String,
    /// For deploys: the function, the source sent and the version answered.
    deploy: Option<(String, String, Option<i64>)>,
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `mariadb-admin shutdown`
    Shutdown,
    /// SIGKILL of `mariadbd`
    Crash,
}

const WRITERS: usize = 2;

async fn readyz(mgr: &Manager) -> u16 {
    match mgr.http.get(mgr.url("/readyz")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn acknowledged(outcomes: &Mutex<Vec<Outcome>>) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.deploy.is_some() && (o.status == 200 || o.status == 201))
        .count()
}

#[tokio::test]
async fn database_restart_under_traffic_answers_503_recovers_and_loses_no_acknowledged_write() {
    let db = PrivateMariaDb::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = ManagerEnv {
        database_url: db.url(),
        data_dir: data.path().to_path_buf(),
        extra: vec![],
    };
    let mgr = Arc::new(Manager::start(&env).await);
    let token = mgr.token("alice").await;
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));

    // Traffic: writers deploying new versions of their own function, and a
    // reader listing functions and logging in, until told to stop.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (mgr, token, stop, outcomes) =
            (mgr.clone(), token.clone(), stop.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("f{w}");
            for i in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let src = source(&format!("writer {w} deploy {i}"));
                let (status, code, version) = match mgr.try_deploy(&token, &name, &src).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        (
                            status,
                            body["error"]["code"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            body["version"].as_i64(),
                        )
                    }
                    Err(e) => (0, e.to_string(), None),
                };
                outcomes.lock().unwrap().push(Outcome {
                    what: format!("deploy {name} #{i}"),
                    status,
                    code,
                    deploy: Some((name.clone(), src, version)),
                });
            }
        }));
    }
    {
        let (mgr, token, stop, outcomes) =
            (mgr.clone(), token.clone(), stop.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (what, r) = if i % 2 == 0 {
                    ("GET /func", mgr.try_get(&token, "/func").await)
                } else {
                    (
                        "POST /login",
                        mgr.http
                            .post(mgr.url("/login"))
                            .json(&json!({"username": "alice", "password": PASSWORD}))
                            .send()
                            .await,
                    )
                };
                let (status, code) = match r {
                    Ok(r) => status_and_code(r).await,
                    Err(e) => (0, e.to_string()),
                };
                outcomes.lock().unwrap().push(Outcome {
                    what: what.into(),
                    status,
                    code,
                    deploy: None,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    for (round, outage) in [Outage::Shutdown, Outage::Crash].into_iter().enumerate() {
        // Some deploys are acknowledged before the database goes away.
        let want = (round + 1) * 3;
        for _ in 0..1200 {
            if acknowledged(&outcomes) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            acknowledged(&outcomes) >= want,
            "no deploys got through before the outage"
        );
        match outage {
            Outage::Shutdown => db.stop().await,
            Outage::Crash => db.crash().await,
        }

        // While it is down: 503 database_unavailable, and the process lives on.
        let mut down = false;
        for _ in 0..60 {
            if readyz(&mgr).await == 503 {
                down = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(down, "{outage:?}: /readyz never said the database was down");
        let r = mgr.try_get(&token, "/func").await.unwrap();
        assert_eq!(
            status_and_code(r).await,
            (503, "database_unavailable".into()),
            "{outage:?}: GET /func"
        );
        let r = mgr.try_get(&token, "/func/f0").await.unwrap();
        assert_eq!(
            status_and_code(r).await,
            (503, "database_unavailable".into()),
            "{outage:?}: GET /func/f0"
        );
        let r = mgr
            .http
            .post(mgr.url("/login"))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            status_and_code(r).await,
            (503, "database_unavailable".into()),
            "{outage:?}: POST /login"
        );
        let r = mgr
            .try_deploy(&token, "during-outage", &source("during the outage"))
            .await
            .unwrap();
        assert_eq!(
            status_and_code(r).await,
            (503, "database_unavailable".into()),
            "{outage:?}: POST /func"
        );
        let r = mgr.http.get(mgr.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{outage:?}: /healthz");

        // Back up: the manager recovers by itself.
        db.up().await;
        let mut ready = false;
        for _ in 0..240 {
            if readyz(&mgr).await == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ready, "{outage:?}: the manager did not recover");
        let r = mgr.try_get(&token, "/func").await.unwrap();
        assert_eq!(r.status(), 200, "{outage:?}: GET /func after recovery");
    }

    // More acknowledged deploys after the last recovery, then stop the traffic.
    let after = acknowledged(&outcomes) + WRITERS;
    for _ in 0..1200 {
        if acknowledged(&outcomes) >= after {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();

    // Every answer was a success or a clean 503; never a 500, never a dropped connection.
    for o in &outcomes {
        let ok =
            matches!(o.status, 200 | 201) || (o.status == 503 && o.code == "database_unavailable");
        assert!(ok, "{}: {} {}", o.what, o.status, o.code);
    }
    let failed = outcomes.iter().filter(|o| o.status == 503).count();
    assert!(failed > 0, "no request saw the outage");

    // No acknowledged write was lost: each acknowledged version holds its source.
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for (name, src, _) in outcomes.iter().filter_map(|o| o.deploy.clone()) {
        sent.entry(name)
            .or_default()
            .push(sha256_hex(src.as_bytes()));
    }
    for w in 0..WRITERS {
        let name = format!("f{w}");
        let info: Value = mgr
            .try_get(&token, &format!("/func/{name}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: Vec<(i64, String)> = info["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["sha256"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let numbers: Vec<i64> = stored.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i64> = (1..=stored.len() as i64).collect();
        assert_eq!(numbers, expected, "{name}: versions are not consecutive");
        for (v, sha) in &stored {
            assert!(
                sent[&name].contains(sha),
                "{name} v{v} holds a source nobody sent"
            );
        }
        for o in &outcomes {
            if let Some((n, src, Some(v))) = &o.deploy
                && n == &name
                && matches!(o.status, 200 | 201)
            {
                let at = stored.iter().find(|(sv, _)| sv == v);
                assert_eq!(
                    at.map(|(_, sha)| sha.clone()),
                    Some(sha256_hex(src.as_bytes())),
                    "{}: acknowledged as v{v}, but that version is missing or different",
                    o.what
                );
            }
        }
        let code = mgr
            .try_get(&token, &format!("/func/{name}/code"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            sha256_hex(code.as_bytes()),
            info["sha256"].as_str().unwrap()
        );
        assert_eq!(info["version"], info["latest_version"]);
    }
}
