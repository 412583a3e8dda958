//! Attacks on the account endpoints' rate limits: lockouts through a shared
//! proxy, forged `X-Forwarded-For`, locking one user out, registration floods,
//! IPv6 address rotation, malformed forwarding headers, and floods of distinct
//! addresses that would grow the limiter's memory.
//!
//! The manager listens on 127.0.0.1. A client bound to 127.0.0.1 plays the
//! trusted proxy (`SKIFF_TRUSTED_PROXIES=127.0.0.1/32`) and names the real
//! client in `X-Forwarded-For`; clients bound to 127.0.0.2 and 127.0.0.3 are
//! other machines that connect directly.

use serde_json::{Value, json};
use skiff_testkit::TestBackend;

use crate::helpers::{Options, PASSWORD, TestApp, client_from, error_code, spawn_app_with};

skiff_testkit::on_both_backends!(
    login_lockout_through_a_trusted_proxy,
    forged_forwarded_for_from_an_untrusted_peer_is_ignored,
    one_address_cannot_lock_a_user_out_elsewhere,
    the_per_user_ceiling_spares_addresses_the_user_logged_in_from,
    failed_attempts_are_forgiven_after_a_success,
    registration_is_rate_limited_per_client_address,
    ipv6_clients_are_counted_per_64,
    malformed_forwarded_for_from_a_trusted_proxy,
    a_flood_of_distinct_addresses_keeps_the_tables_bounded,
    password_hashes_run_one_per_cpu_under_a_flood,
);

const PROXY: &str = "127.0.0.1/32";

fn creds(user: &str, password: &str) -> Value {
    json!({"username": user, "password": password})
}

/// Asserts a `429 rate_limited` with a sane `Retry-After`.
async fn assert_limited(r: reqwest::Response, window_secs: u64) {
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry), "Retry-After {retry}");
    assert_eq!(error_code(r, 429).await, "rate_limited");
}

/// A login through the proxy on behalf of `client`.
async fn login_as(
    app: &TestApp,
    proxy: &reqwest::Client,
    client: &str,
    user: &str,
    pw: &str,
) -> reqwest::Response {
    app.post_forwarded(proxy, "/login", client, &creds(user, pw))
        .await
}

async fn login_lockout_through_a_trusted_proxy(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 5,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    app.register("bob").await;
    let proxy = client_from("127.0.0.1");
    let attacker = "198.51.100.10";
    let victim = "198.51.100.20";
    for user in ["alice", "bob", "nobody", "alice", "bob"] {
        let r = login_as(&app, &proxy, attacker, user, "wrong password").await;
        assert_eq!(r.status(), 401);
    }
    // The attacker's budget is spent, whatever name and password it tries.
    let r = login_as(&app, &proxy, attacker, "bob", PASSWORD).await;
    assert_limited(r, 60).await;
    // Everyone else behind the same proxy still logs in.
    let r = login_as(&app, &proxy, victim, "bob", PASSWORD).await;
    assert_eq!(r.status(), 200, "the victim behind the proxy is locked out");
    let r = login_as(&app, &proxy, "2001:db8:7::5", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    // The proxy's own requests (no header) are a client of their own.
    assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
}

async fn forged_forwarded_for_from_an_untrusted_peer_is_ignored(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 5,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let attacker = client_from("127.0.0.2");
    // Each attempt claims another address, the victim's among them.
    for forged in [
        "127.0.0.3",
        "198.51.100.1",
        "127.0.0.3, 127.0.0.1",
        "203.0.113.9",
        "2001:db8::1",
    ] {
        let r = app
            .post_forwarded(&attacker, "/login", forged, &creds("alice", "wrong"))
            .await;
        assert_eq!(r.status(), 401, "{forged}");
    }
    // It cannot escape its own limit by claiming yet another address...
    let r = app
        .post_forwarded(
            &attacker,
            "/login",
            "192.0.2.200",
            &creds("alice", PASSWORD),
        )
        .await;
    assert_limited(r, 60).await;
    // ...and it spent only its own budget, not the one of the address it named.
    let victim = client_from("127.0.0.3");
    let r = victim
        .post(app.url("/login"))
        .json(&creds("alice", PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the named address was locked out");
    // Nor the budget of a client behind the proxy that it named.
    let proxy = client_from("127.0.0.1");
    let r = login_as(&app, &proxy, "198.51.100.1", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
}

async fn one_address_cannot_lock_a_user_out_elsewhere(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_user_addr: 3,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    app.register("bob").await;
    let proxy = client_from("127.0.0.1");
    let attacker = "198.51.100.66";
    for _ in 0..3 {
        let r = login_as(&app, &proxy, attacker, "alice", "guess").await;
        assert_eq!(r.status(), 401);
    }
    // Guessing alice's password from this address is over for this window,
    // even with the right one.
    let r = login_as(&app, &proxy, attacker, "alice", PASSWORD).await;
    assert_limited(r, 60).await;
    // Alice, from her own address, is not locked out.
    let r = login_as(&app, &proxy, "203.0.113.5", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200, "one address locked alice out everywhere");
    // The attacker's address may still log in as someone else.
    let r = login_as(&app, &proxy, attacker, "bob", PASSWORD).await;
    assert_eq!(r.status(), 200);
}

async fn the_per_user_ceiling_spares_addresses_the_user_logged_in_from(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            // Alice's own first login and six guesses.
            login_limit_per_user: 7,
            login_limit_per_user_addr: 3,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let proxy = client_from("127.0.0.1");
    let home = "203.0.113.5";
    assert_eq!(
        login_as(&app, &proxy, home, "alice", PASSWORD)
            .await
            .status(),
        200
    );
    // Three attacking addresses guess twice each: six attempts on alice.
    for attacker in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        for _ in 0..2 {
            let r = login_as(&app, &proxy, attacker, "alice", "guess").await;
            assert_eq!(r.status(), 401);
        }
    }
    // The ceiling stops further guessing from any new address.
    let r = login_as(&app, &proxy, "198.51.100.4", "alice", "guess").await;
    assert_limited(r, 60).await;
    // Documented trade-off: a new address of alice's is refused as well...
    let r = login_as(&app, &proxy, "192.0.2.77", "alice", PASSWORD).await;
    assert_limited(r, 60).await;
    // ...but where she logged in before, she still can.
    let r = login_as(&app, &proxy, home, "alice", PASSWORD).await;
    assert_eq!(
        r.status(),
        200,
        "distributed guessing locked alice out at home"
    );
    // Her known address gives no extra guesses: the pair limit still holds.
    for _ in 0..3 {
        let r = login_as(&app, &proxy, home, "alice", "guess").await;
        assert_eq!(r.status(), 401);
    }
    let r = login_as(&app, &proxy, home, "alice", PASSWORD).await;
    assert_limited(r, 60).await;
}

async fn failed_attempts_are_forgiven_after_a_success(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_user_addr: 3,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    for _ in 0..3 {
        // Two typos, then the right password, three times over: nine attempts
        // on one pair whose limit is three.
        for _ in 0..2 {
            assert_eq!(app.login("alice", "typo typo").await.status(), 401);
        }
        assert_eq!(app.login("alice", PASSWORD).await.status(), 200);
    }
}

async fn registration_is_rate_limited_per_client_address(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            register_limit_per_addr: 3,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    let proxy = client_from("127.0.0.1");
    let flooder = "198.51.100.9";
    let register = |client: &'static str, user: &'static str| {
        let (app, proxy) = (&app, &proxy);
        async move {
            app.post_forwarded(proxy, "/register", client, &creds(user, PASSWORD))
                .await
        }
    };
    assert_eq!(register(flooder, "flood-1").await.status(), 201);
    // A taken name and a bad one count too (a `409` tells which names exist).
    assert_eq!(register(flooder, "flood-1").await.status(), 409);
    assert_eq!(register(flooder, "NOT valid").await.status(), 400);
    let r = register(flooder, "flood-2").await;
    assert_limited(r, 3600).await;
    assert!(
        app.store.find_user("flood-2").await.unwrap().is_none(),
        "a refused registration wrote a user"
    );
    // Another client behind the same proxy registers.
    assert_eq!(register("198.51.100.10", "carol").await.status(), 201);
    // A direct client forging the header spends its own budget only.
    let forger = client_from("127.0.0.2");
    for (i, forged) in ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
        .into_iter()
        .enumerate()
    {
        let r = app
            .post_forwarded(&forger, "/register", forged, &creds("NOT valid", "x"))
            .await;
        assert_eq!(r.status(), 400, "attempt {i}");
    }
    let r = app
        .post_forwarded(
            &forger,
            "/register",
            "198.51.100.14",
            &creds("forged", PASSWORD),
        )
        .await;
    assert_limited(r, 3600).await;
    assert_eq!(register("198.51.100.11", "dave").await.status(), 201);
    // Closed signup answers 403 before counting anything (nothing is hashed).
    let closed = spawn_app_with(
        b,
        Options {
            allow_signup: false,
            register_limit_per_addr: 1,
            ..Options::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            error_code(closed.register("erin").await, 403).await,
            "signup_closed"
        );
    }
}

async fn ipv6_clients_are_counted_per_64(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 4,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let proxy = client_from("127.0.0.1");
    // One host rotating through its /64: every address is a fresh one.
    for client in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:ffff:ffff:fffe",
        "2001:db8:1:2:1:2:3:4",
    ] {
        let r = login_as(&app, &proxy, client, "alice", "guess").await;
        assert_eq!(r.status(), 401, "{client}");
    }
    let r = login_as(&app, &proxy, "2001:db8:1:2::99", "alice", PASSWORD).await;
    assert_limited(r, 60).await;
    let r = login_as(&app, &proxy, "[2001:db8:1:2::100]:443", "alice", PASSWORD).await;
    assert_limited(r, 60).await;
    // The neighbouring /64 is somebody else.
    let r = login_as(&app, &proxy, "2001:db8:1:3::1", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    // An IPv4 client written as an IPv4-mapped IPv6 address is that IPv4 client.
    for _ in 0..4 {
        let r = login_as(&app, &proxy, "::ffff:198.51.100.5", "alice", "guess").await;
        assert_eq!(r.status(), 401);
    }
    let r = login_as(&app, &proxy, "198.51.100.5", "alice", PASSWORD).await;
    assert_limited(r, 60).await;
}

async fn malformed_forwarded_for_from_a_trusted_proxy(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 3,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let proxy = client_from("127.0.0.1");
    // A client-written prefix, a port, spaces: the entry the proxy appended counts.
    for xff in [
        "garbage, 198.51.100.7",
        "not an address,198.51.100.7:5555",
        " 198.51.100.7 ",
    ] {
        let r = login_as(&app, &proxy, xff, "alice", "guess").await;
        assert_eq!(r.status(), 401, "{xff:?}");
    }
    let r = login_as(&app, &proxy, "198.51.100.7", "alice", PASSWORD).await;
    assert_limited(r, 60).await;

    // Headers the proxy could never have written: each is answered cleanly
    // (never 5xx) and counted as the proxy itself, one shared budget.
    let many_hops = vec!["203.0.113.1"; 6000].join(",");
    let hostile: Vec<Vec<u8>> = vec![
        b"unknown".to_vec(),
        b"198.51.100.8, garbage".to_vec(),
        b"for=198.51.100.8".to_vec(),
        b"999.1.1.1".to_vec(),
        b"198.51.100.8\xff".to_vec(),
        b",,,".to_vec(),
        format!("{many_hops},nonsense").into_bytes(),
    ];
    let mut statuses = Vec::new();
    for value in &hostile {
        let r = proxy
            .post(app.url("/login"))
            .header(
                "x-forwarded-for",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .json(&creds("alice", "guess"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        3,
        "the unparseable headers did not share the proxy's budget: {statuses:?}"
    );
    // The proxy's budget is spent; correct headers still work.
    assert_eq!(app.login("alice", PASSWORD).await.status(), 429);
    let r = login_as(&app, &proxy, "198.51.100.30", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    // A long list of hops ending in a real client is that client.
    let r = login_as(
        &app,
        &proxy,
        &format!("{many_hops},198.51.100.31"),
        "alice",
        PASSWORD,
    )
    .await;
    assert_eq!(r.status(), 200);
    // Two header lines: the last one is the nearest hop.
    let r = proxy
        .post(app.url("/login"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "198.51.100.32")
        .json(&creds("alice", PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn a_flood_of_distinct_addresses_keeps_the_tables_bounded(b: TestBackend) {
    const MAX_KEYS: usize = 100;
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 1,
            register_limit_per_addr: 1,
            rate_limit_max_keys: MAX_KEYS,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let proxy = client_from("127.0.0.1");
    // Registrations with a bad name are cheap to send and cost no hash, but
    // each new address is a new key.
    for i in 0..2000u32 {
        let client = format!("10.{}.{}.1", i / 256, i % 256);
        let r = app
            .post_forwarded(&proxy, "/register", &client, &creds("NOT valid", "x"))
            .await;
        assert_eq!(r.status(), 400);
    }
    // Logins from new addresses for new (valid, unknown) names: keys in the
    // per-address, per-pair and per-username tables.
    for i in 0..150u32 {
        let client = format!("2001:db8:{i:x}::1");
        let r = login_as(&app, &proxy, &client, &format!("user-{i}"), "guess").await;
        assert_eq!(r.status(), 401);
    }
    let sizes = app.state.limits.sizes();
    assert!(sizes.largest() <= MAX_KEYS, "{sizes:?}");
    assert_eq!(sizes.register_by_addr, MAX_KEYS, "{sizes:?}");
    assert_eq!(sizes.login_by_user, MAX_KEYS, "{sizes:?}");
    // The limits still work: a fresh address gets its one attempt, then 429.
    let r = login_as(&app, &proxy, "198.51.100.50", "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    let r = login_as(&app, &proxy, "198.51.100.50", "alice", PASSWORD).await;
    assert_limited(r, 60).await;
}

async fn password_hashes_run_one_per_cpu_under_a_flood(b: TestBackend) {
    let app = spawn_app_with(
        b,
        Options {
            login_limit_per_addr: 1,
            register_limit_per_addr: 1,
            trusted_proxies: PROXY,
            ..Options::default()
        },
    )
    .await;
    app.register("alice").await;
    let proxy = client_from("127.0.0.1");
    // Many addresses, each within its limit, all at once: each request costs
    // one argon2 hash (19 MiB).
    let logins = (0..32u32).map(|i| {
        let (app, proxy) = (&app, &proxy);
        async move {
            let user = if i % 2 == 0 { "alice" } else { "nobody" };
            let client = format!("198.51.{}.{}", 100 + i / 200, i % 200);
            login_as(app, proxy, &client, user, "guess").await.status()
        }
    });
    let registrations = (0..8u32).map(|i| {
        let (app, proxy) = (&app, &proxy);
        async move {
            let body = creds(&format!("flood-{i}"), PASSWORD);
            let client = format!("203.0.113.{i}");
            app.post_forwarded(proxy, "/register", &client, &body)
                .await
                .status()
        }
    });
    let (logins, registrations) = tokio::join!(
        futures_util::future::join_all(logins),
        futures_util::future::join_all(registrations)
    );
    assert!(logins.iter().all(|s| *s == 401), "{logins:?}");
    assert!(registrations.iter().all(|s| *s == 201), "{registrations:?}");
    let (slots, peak) = skiff_manager::passwords::turns_and_peak();
    assert!(
        (1..=slots).contains(&peak),
        "{peak} hashes ran at once; at most {slots} may"
    );
}
