//! Soak: the real `skiff dev` binary under a mixed workload over 20 functions
//! (calls, redeploys, deletes and recreates, throwing calls with a log check,
//! cross-tenant probes) for `SKIFF_SOAK_SECS` seconds (default 60; 600 for the
//! full run). Instances go idle (`SKIFF_IDLE_TIMEOUT_SECS=2`) and restart all along.
//!
//! Passes when: no unexpected answer (every status and body is what the state of
//! the functions allows), the RSS of `skiff dev` (manager + router) grows by less
//! than 10 % between the end of the warm-up (20 % of the run) and the end, and
//! after SIGTERM no process mentions the data dir, `instances/` is empty and
//! `functions/` and `logs/` hold only functions that still exist.
//!
//! ```sh
//! SKIFF_SOAK_SECS=600 cargo test -p skiff-cli --test soak -- --nocapture
//! ```
//! Optional: `SKIFF_SOAK_SEED` (a number) fixes the random choices;
//! `SKIFF_SOAK_STRICT=0` tolerates (counts, but does not fail on) the router
//! bugs listed below, which are fixed; strict is the default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const USERS: [&str; 3] = ["soak-ann", "soak-bob", "soak-cyd"];
const PASSWORD: &str = "soak password 0123";
const FUNCTIONS: usize = 20;
/// Threads that call functions (and probe the API); threads that deploy/delete.
const CALLERS: usize = 4;
const MUTATORS: usize = 2;
const MAX_RSS_GROWTH: f64 = 0.10;

// Router bugs the soak found, all fixed, each with a regression test in
// router/tests/e2e. They are still counted separately in the summary; with the
// default (strict) they fail the run like any other unexpected answer.
//
// 1. Replaced versions' code stays on disk: the router removes old `v<N>/` dirs
//    only when it drains a running instance, so redeploying an idle function
//    leaves the previous version behind (router/src/process/mod.rs, `acquire` /
//    `retire` / `reap_idle`).
// 2. A call racing a delete can get `503 function_unavailable` instead of `404`
//    (or the old answer): it finds the function in the directory, starts an
//    instance in a fresh slot while the delete's cleanup removes the code dir,
//    and Deno exits 78 "Module not found" (router/src/process/mod.rs `acquire`
//    vs `apply(Update::Gone)`; files.rs `ensure_code`). The failed start's log
//    line recreates `logs/<id>.log` of the deleted function, which then
//    stays on disk.
// 3. The router answers some requests (e.g. `404` for a missing function)
//    before reading their body and then closes the connection without
//    `Connection: close`; a client's next request on that keep-alive connection
//    fails ("Peer disconnected"). Non-idempotent requests are not retried by
//    clients, so they fail (router/src/proxy.rs `route`, hyper's behaviour).

// ---------------------------------------------------------------------------
// HTTP

struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn short(&self) -> String {
        let b: String = self.body.chars().take(300).collect();
        format!("{} {b}", self.status)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        // Below the servers' idle keep-alive limits (the manager's 5 s, the
        // router's 10 s header timeout), so a pooled connection is never reused
        // just as the server closes it (a client-side race, not a server fault).
        .max_idle_age(Duration::from_secs(2))
        .build()
        .into()
}

fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<Resp, String> {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    // Only the JSON bodies (register, login) start with '{'.
    let ctype = if body.starts_with(b"{") {
        "application/json"
    } else {
        "text/plain"
    };
    let req = req
        .header("Content-Type", ctype)
        .body(body.to_vec())
        .map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Resp { status, body })
}

// ---------------------------------------------------------------------------
// What each function is, as far as the test knows

/// What a call to a function may find: nothing, or one incarnation's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Absent,
    Live { inc: u32, ver: i64 },
}

struct FnState {
    /// Bumped on every completed change; `history` keeps the recent outcomes.
    generation: u64,
    history: VecDeque<(u64, Outcome)>,
    /// A change sent but not answered yet: calls may already see it.
    pending: Option<Outcome>,
    /// Held by the one thread changing or closely inspecting the function.
    busy: bool,
    source: String,
    next_inc: u32,
}

impl FnState {
    fn now(&self) -> Outcome {
        self.history.back().map_or(Outcome::Absent, |h| h.1)
    }
    fn set(&mut self, o: Outcome) {
        self.generation += 1;
        self.history.push_back((self.generation, o));
        if self.history.len() > 16 {
            self.history.pop_front();
        }
        self.pending = None;
    }
}

struct Func {
    index: usize,
    owner: usize,
    name: String,
    state: Mutex<FnState>,
    /// A call overlapped its delete (known bug 2 may leave files behind).
    raced_delete: AtomicBool,
}

struct Snapshot {
    generation: u64,
    now: Outcome,
    pending: Option<Outcome>,
}

impl Func {
    fn lock(&self) -> MutexGuard<'_, FnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            generation: s.generation,
            now: s.now(),
            pending: s.pending,
        }
    }
    /// Outcomes a call that started at `a` and ended at `b` may observe.
    fn allowed(&self, a: &Snapshot, b: &Snapshot) -> Vec<Outcome> {
        let s = self.lock();
        let mut v = vec![a.now, b.now];
        v.extend(a.pending);
        v.extend(b.pending);
        v.extend(
            s.history
                .iter()
                .filter(|(g, _)| *g >= a.generation && *g <= b.generation)
                .map(|h| h.1),
        );
        v
    }
    fn try_busy(&self) -> Option<Busy<'_>> {
        let mut s = self.lock();
        if s.busy {
            return None;
        }
        s.busy = true;
        Some(Busy(self))
    }
}

struct Busy<'a>(&'a Func);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.lock().busy = false;
    }
}

const SHAPE_ARROW: &str = r#"// soak function TAG
export default async (req: Request): Promise<Response> => {
  const url = new URL(req.url);
  if (url.pathname === "/throw") {
    throw new Error(`soak-boom ${url.searchParams.get("m")}`);
  }
  const body = req.method === "POST" ? await req.text() : "";
  console.log(`call ${req.method} ${url.pathname}`);
  return new Response(`TAG ${req.method} ${url.pathname} ${body}`);
};
"#;

const SHAPE_OBJECT: &str = r#"// soak function TAG
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/throw") {
      throw new Error(`soak-boom ${url.searchParams.get("m")}`);
    }
    const body = req.method === "POST" ? await req.text() : "";
    console.log(`call ${req.method} ${url.pathname}`);
    return new Response(`TAG ${req.method} ${url.pathname} ${body}`);
  },
};
"#;

/// The original svrless handler shape.
const SHAPE_SVRLESS: &str = r#"// soak function TAG
export default async function handler(
  { req }: { req: Deno.RequestEvent; conn?: Deno.Conn },
) {
  const r = req.request;
  const url = new URL(r.url);
  if (url.pathname === "/throw") {
    throw new Error(`soak-boom ${url.searchParams.get("m")}`);
  }
  const body = r.method === "POST" ? await r.text() : "";
  console.log(`call ${r.method} ${url.pathname}`);
  await req.respondWith(new Response(`TAG ${r.method} ${url.pathname} ${body}`));
}
"#;

fn tag(name: &str, inc: u32, ver: i64) -> String {
    format!("{name} i{inc} v{ver}")
}

fn source(f: &Func, inc: u32, ver: i64) -> String {
    let shape = match (f.index + inc as usize) % 3 {
        0 => SHAPE_ARROW,
        1 => SHAPE_OBJECT,
        _ => SHAPE_SVRLESS,
    };
    shape.replace("TAG", &tag(&f.name, inc, ver))
}

// ---------------------------------------------------------------------------
// The shared run

#[derive(Default)]
struct Counters {
    known_delete_race_503: AtomicU64,
    known_unsignalled_close: AtomicU64,
    calls: AtomicU64,
    calls_404: AtomicU64,
    throws: AtomicU64,
    log_checks: AtomicU64,
    deploys: AtomicU64,
    creates: AtomicU64,
    deletes: AtomicU64,
    code_checks: AtomicU64,
    lists: AtomicU64,
    cross_tenant: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Run {
    api: String,
    router: String,
    tokens: Vec<String>,
    funcs: Vec<Func>,
    start: Instant,
    duration: Duration,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
    n: Counters,
    marker: AtomicU64,
    seed: u64,
    strict: bool,
}

impl Run {
    /// Known bug 3: a transport error on a request whose connection the router
    /// closed unannounced after answering an earlier request unread.
    fn known_close(&self, what: &str, err: &str) -> bool {
        let closed = ["Peer disconnected", "onnection reset", "roken pipe"]
            .iter()
            .any(|m| err.contains(m));
        if closed && !self.strict {
            Counters::bump(&self.n.known_unsignalled_close);
            eprintln!(
                "soak: known bug (unannounced close) at {:.1}s: {what}: {err}",
                self.start.elapsed().as_secs_f64()
            );
        }
        closed && !self.strict
    }

    fn unexpected(&self, what: String) {
        let n = self.error_count.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "soak: UNEXPECTED at {:.1}s: {what}",
            self.start.elapsed().as_secs_f64()
        );
        if n < 50 {
            self.errors.lock().unwrap().push(what);
        }
    }

    fn fn_url(&self, f: &Func) -> String {
        format!("{}/fn/{}/{}", self.router, USERS[f.owner], f.name)
    }

    fn token(&self, f: &Func) -> &str {
        &self.tokens[f.owner]
    }

    /// Functions callers pick from now: a window of 10 that moves by 5 every 4 s,
    /// so each function is left alone for 8 s at a time and its instance stops.
    fn active(&self, rng: &mut SmallRng) -> &Func {
        let k = (self.start.elapsed().as_secs() / 4) as usize;
        let i = (k * 5 + rng.random_range(0..10)) % FUNCTIONS;
        &self.funcs[i]
    }

    /// Calls `f` and checks the answer against what its state allows.
    fn call(&self, agent: &ureq::Agent, f: &Func, rng: &mut SmallRng) {
        let path = format!("/p/{}", rng.random::<u32>());
        let (method, body) = if rng.random_bool(0.5) {
            ("POST", format!("b{}", rng.random::<u32>()))
        } else {
            ("GET", String::new())
        };
        let before = f.snapshot();
        let r = send(
            agent,
            method,
            &format!("{}{path}", self.fn_url(f)),
            None,
            body.as_bytes(),
        );
        let after = f.snapshot();
        let r = match r {
            Ok(r) => r,
            Err(e) if self.known_close(&f.name, &e) => return,
            Err(e) => return self.unexpected(format!("call {}: {e}", f.name)),
        };
        let allowed = f.allowed(&before, &after);
        if allowed.contains(&Outcome::Absent) && allowed.iter().any(|o| *o != Outcome::Absent) {
            f.raced_delete.store(true, Ordering::Relaxed);
        }
        let fine = allowed.iter().any(|o| match *o {
            Outcome::Absent => r.status == 404 && r.code() == "not_found",
            Outcome::Live { inc, ver } => {
                r.status == 200
                    && r.body == format!("{} {method} {path} {body}", tag(&f.name, inc, ver))
            }
        });
        // Known bug 2: a call overlapping a delete that got 503.
        if !fine
            && !self.strict
            && allowed.contains(&Outcome::Absent)
            && r.status == 503
            && r.code() == "function_unavailable"
        {
            Counters::bump(&self.n.known_delete_race_503);
            eprintln!(
                "soak: known bug (503 racing a delete) at {:.1}s: {}",
                self.start.elapsed().as_secs_f64(),
                f.name
            );
            return;
        }
        if !fine {
            return self.unexpected(format!(
                "call {method} {}{path}: got {}, allowed {allowed:?}",
                f.name,
                r.short()
            ));
        }
        if r.status == 404 {
            Counters::bump(&self.n.calls_404);
        } else {
            Counters::bump(&self.n.calls);
        }
    }

    /// A call that makes the function throw: `500 function_error`, and the error
    /// shows up in the owner's log.
    fn throw(&self, agent: &ureq::Agent, f: &Func) {
        let Some(_busy) = f.try_busy() else { return };
        let Outcome::Live { .. } = f.snapshot().now else {
            return;
        };
        let m = format!(
            "{:x}-{}",
            self.seed & 0xffff,
            self.marker.fetch_add(1, Ordering::Relaxed)
        );
        let r = match send(
            agent,
            "GET",
            &format!("{}/throw?m={m}", self.fn_url(f)),
            None,
            b"",
        ) {
            Ok(r) => r,
            Err(e) if self.known_close(&f.name, &e) => return,
            Err(e) => return self.unexpected(format!("throw {}: {e}", f.name)),
        };
        if r.status != 500 || r.code() != "function_error" {
            return self.unexpected(format!("throw {}: got {}", f.name, r.short()));
        }
        Counters::bump(&self.n.throws);
        // The log is written as the instance's stderr is read: allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = format!("{}/func/{}/logs?tail=5000", self.api, f.name);
            match send(agent, "GET", &url, Some(self.token(f)), b"") {
                Ok(l) if l.status == 200 && l.body.contains(&format!("soak-boom {m}")) => {
                    Counters::bump(&self.n.log_checks);
                    return;
                }
                Ok(l) if l.status == 200 => {}
                Ok(l) => return self.unexpected(format!("logs {}: got {}", f.name, l.short())),
                Err(e) => return self.unexpected(format!("logs {}: {e}", f.name)),
            }
            if Instant::now() > deadline {
                return self.unexpected(format!(
                    "logs {}: the error with marker {m} never appeared",
                    f.name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The API's view of one function (code, info) matches the test's, and other
    /// tenants can neither see nor delete it.
    fn inspect(&self, agent: &ureq::Agent, f: &Func, rng: &mut SmallRng) {
        let Some(_busy) = f.try_busy() else { return };
        let (now, src) = {
            let s = f.lock();
            (s.now(), s.source.clone())
        };
        let base = format!("{}/func/{}", self.api, f.name);
        let tok = self.token(f);
        let check = |what: &str, r: Result<Resp, String>, ok: &dyn Fn(&Resp) -> bool| match r {
            Ok(r) if ok(&r) => true,
            Ok(r) => {
                self.unexpected(format!(
                    "{what} {}: got {} (state {now:?})",
                    f.name,
                    r.short()
                ));
                false
            }
            Err(e) => {
                self.unexpected(format!("{what} {}: {e}", f.name));
                false
            }
        };
        let code = send(agent, "GET", &format!("{base}/code"), Some(tok), b"");
        let info = send(agent, "GET", &base, Some(tok), b"");
        match now {
            Outcome::Live { ver, .. } => {
                check("code", code, &|r| r.status == 200 && r.body == src);
                check("info", info, &|r| {
                    r.status == 200 && r.json()["version"].as_i64() == Some(ver)
                });
            }
            Outcome::Absent => {
                check("code", code, &|r| r.status == 404);
                check("info", info, &|r| r.status == 404);
            }
        }
        Counters::bump(&self.n.code_checks);

        let other = (f.owner + 1 + rng.random_range(0..USERS.len() - 1)) % USERS.len();
        let otok = self.tokens[other].as_str();
        let not_found = |r: &Resp| r.status == 404 && r.code() == "not_found";
        check(
            "cross-tenant info",
            send(agent, "GET", &base, Some(otok), b""),
            &not_found,
        );
        check(
            "cross-tenant code",
            send(agent, "GET", &format!("{base}/code"), Some(otok), b""),
            &not_found,
        );
        check(
            "cross-tenant logs",
            send(agent, "GET", &format!("{base}/logs"), Some(otok), b""),
            &not_found,
        );
        check(
            "cross-tenant delete",
            send(agent, "DELETE", &base, Some(otok), b""),
            &not_found,
        );
        // ... and it is untouched.
        let again = send(agent, "GET", &base, Some(tok), b"");
        match now {
            Outcome::Live { ver, .. } => check("info after cross-tenant", again, &|r| {
                r.status == 200 && r.json()["version"].as_i64() == Some(ver)
            }),
            Outcome::Absent => check("info after cross-tenant", again, &|r| r.status == 404),
        };
        Counters::bump(&self.n.cross_tenant);
    }

    /// `GET /func` agrees with every function of that user that did not change meanwhile.
    fn list(&self, agent: &ureq::Agent, user: usize) {
        let mine: Vec<&Func> = self.funcs.iter().filter(|f| f.owner == user).collect();
        let before: Vec<Snapshot> = mine.iter().map(|f| f.snapshot()).collect();
        let r = match send(
            agent,
            "GET",
            &format!("{}/func", self.api),
            Some(&self.tokens[user]),
            b"",
        ) {
            Ok(r) if r.status == 200 => r,
            Ok(r) => return self.unexpected(format!("list {}: got {}", USERS[user], r.short())),
            Err(e) => return self.unexpected(format!("list {}: {e}", USERS[user])),
        };
        let listed: HashMap<String, Option<i64>> = r.json()["functions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            f["name"].as_str().unwrap_or("").to_owned(),
                            f["version"].as_i64(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for name in listed.keys() {
            if !mine.iter().any(|f| &f.name == name) {
                self.unexpected(format!(
                    "list {}: foreign or unknown function {name}",
                    USERS[user]
                ));
            }
        }
        for (f, b) in mine.iter().zip(&before) {
            let a = f.snapshot();
            if a.generation != b.generation || a.pending.is_some() || b.pending.is_some() {
                continue;
            }
            let want = match a.now {
                Outcome::Absent => None,
                Outcome::Live { ver, .. } => Some(Some(ver)),
            };
            if listed.get(&f.name).cloned() != want {
                self.unexpected(format!(
                    "list {}: {} is {:?}, expected {want:?}",
                    USERS[user],
                    f.name,
                    listed.get(&f.name)
                ));
            }
        }
        Counters::bump(&self.n.lists);
    }

    /// Redeploys a live function (version + 1), deletes one, or recreates a
    /// deleted one (201, version 1); then calls it at once.
    fn mutate(&self, agent: &ureq::Agent, f: &Func, rng: &mut SmallRng) {
        let Some(_busy) = f.try_busy() else { return };
        let now = f.snapshot().now;
        let deploy_url = format!("{}/func?name={}", self.api, f.name);
        match now {
            Outcome::Live { inc, ver } if rng.random_bool(0.7) => {
                let next = Outcome::Live { inc, ver: ver + 1 };
                let src = source(f, inc, ver + 1);
                f.lock().pending = Some(next);
                let r = send(
                    agent,
                    "POST",
                    &deploy_url,
                    Some(self.token(f)),
                    src.as_bytes(),
                );
                match r {
                    Ok(r) if r.status == 200 && r.json()["version"].as_i64() == Some(ver + 1) => {
                        let mut s = f.lock();
                        s.source = src;
                        s.set(next);
                        Counters::bump(&self.n.deploys);
                    }
                    Ok(r) => {
                        self.unexpected(format!("redeploy {} (v{ver}): got {}", f.name, r.short()));
                        return self.resync(agent, f, inc, &src);
                    }
                    Err(e) => {
                        self.unexpected(format!("redeploy {}: {e}", f.name));
                        return self.resync(agent, f, inc, &src);
                    }
                }
            }
            Outcome::Live { inc, .. } => {
                f.lock().pending = Some(Outcome::Absent);
                let r = send(
                    agent,
                    "DELETE",
                    &format!("{}/func/{}", self.api, f.name),
                    Some(self.token(f)),
                    b"",
                );
                match r {
                    Ok(r) if r.status == 204 => {
                        f.lock().set(Outcome::Absent);
                        Counters::bump(&self.n.deletes);
                    }
                    Ok(r) => {
                        self.unexpected(format!("delete {}: got {}", f.name, r.short()));
                        return self.resync(agent, f, inc, "");
                    }
                    Err(e) => {
                        self.unexpected(format!("delete {}: {e}", f.name));
                        return self.resync(agent, f, inc, "");
                    }
                }
                let info = send(
                    agent,
                    "GET",
                    &format!("{}/func/{}", self.api, f.name),
                    Some(self.token(f)),
                    b"",
                );
                if !matches!(&info, Ok(r) if r.status == 404) {
                    self.unexpected(format!(
                        "info right after delete {}: {:?}",
                        f.name,
                        info.map(|r| r.short())
                    ));
                }
            }
            Outcome::Absent => {
                let inc = f.lock().next_inc;
                let next = Outcome::Live { inc, ver: 1 };
                let src = source(f, inc, 1);
                {
                    let mut s = f.lock();
                    s.next_inc += 1;
                    s.pending = Some(next);
                }
                let r = send(
                    agent,
                    "POST",
                    &deploy_url,
                    Some(self.token(f)),
                    src.as_bytes(),
                );
                match r {
                    Ok(r) if r.status == 201 && r.json()["version"].as_i64() == Some(1) => {
                        let mut s = f.lock();
                        s.source = src;
                        s.set(next);
                        Counters::bump(&self.n.creates);
                    }
                    Ok(r) => {
                        self.unexpected(format!("create {}: got {}", f.name, r.short()));
                        return self.resync(agent, f, inc, &src);
                    }
                    Err(e) => {
                        self.unexpected(format!("create {}: {e}", f.name));
                        return self.resync(agent, f, inc, &src);
                    }
                }
            }
        }
        // Answered means served: the very next call sees the change.
        let settled = f.snapshot();
        let want = settled.now;
        let path = format!("/after/{}", rng.random::<u32>());
        match send(
            agent,
            "GET",
            &format!("{}{path}", self.fn_url(f)),
            None,
            b"",
        ) {
            Ok(r) => {
                let fine = match want {
                    Outcome::Absent => r.status == 404 && r.code() == "not_found",
                    Outcome::Live { inc, ver } => {
                        r.status == 200
                            && r.body == format!("{} GET {path} ", tag(&f.name, inc, ver))
                    }
                };
                if !fine {
                    self.unexpected(format!(
                        "call right after the change of {}: got {}, expected {want:?}",
                        f.name,
                        r.short()
                    ));
                }
            }
            Err(e) if self.known_close(&f.name, &e) => {}
            Err(e) => self.unexpected(format!("call right after the change of {}: {e}", f.name)),
        }
    }

    /// After an unexpected answer to a change: learn the function's real state.
    fn resync(&self, agent: &ureq::Agent, f: &Func, inc: u32, src: &str) {
        let r = send(
            agent,
            "GET",
            &format!("{}/func/{}", self.api, f.name),
            Some(self.token(f)),
            b"",
        );
        let code = send(
            agent,
            "GET",
            &format!("{}/func/{}/code", self.api, f.name),
            Some(self.token(f)),
            b"",
        );
        let mut s = f.lock();
        match (r, code) {
            (Ok(r), Ok(c)) if r.status == 200 && c.status == 200 => {
                let ver = r.json()["version"].as_i64().unwrap_or(0);
                if c.body != s.source && c.body != src {
                    eprintln!("soak: {} has code the test does not know", f.name);
                }
                s.source = c.body;
                s.set(Outcome::Live { inc, ver });
            }
            _ => s.set(Outcome::Absent),
        }
    }
}

// ---------------------------------------------------------------------------
// The skiff dev process and what it leaves behind

struct Dev {
    service: skiff_testkit::Service,
    pid: u32,
    data_dir: PathBuf,
}

impl Dev {
    fn stderr_tail(&self) -> String {
        let text = self.service.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Dev {
    /// On a failed run: leave nothing running (the service itself is
    /// SIGKILLed when dropped).
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.data_dir, Some(self.pid)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The process's anonymous resident memory (heap, stacks): what a leak
/// grows. The whole RSS also counts pages of the binary, which grow as more of
/// its code runs for the first time (30 MB of a debug build), not a leak.
fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "RssAnon:")
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes whose command line or working directory is in `dir`.
fn processes_mentioning(dir: &Path, except: Option<u32>) -> Vec<(u32, String)> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == except || pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let in_cmdline = cmdline.windows(needle.len()).any(|w| w == needle);
        let in_cwd = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if in_cmdline || in_cwd {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, text));
        }
    }
    found
}

/// Function instances (not `deno check` runs) of this data dir.
fn instance_processes(dir: &Path, dev: u32) -> Vec<u32> {
    processes_mentioning(dir, Some(dev))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("--exit-with-parent"))
        .map(|(pid, _)| pid)
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn start_dev(tmp: &Path) -> (Dev, String, String) {
    let data_dir = tmp.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let data_dir = std::fs::canonicalize(&data_dir).unwrap();
    let service = skiff_testkit::Launch::dev(env!("CARGO_BIN_EXE_skiff"), &data_dir)
        .env("SKIFF_IDLE_TIMEOUT_SECS", "2")
        .env("RUST_LOG", "warn")
        .start_blocking();
    let (api, router) = (service.url_of("manager"), service.url_of("router"));
    let dev = Dev {
        pid: service.pid(),
        service,
        data_dir,
    };
    (dev, api, router)
}

// ---------------------------------------------------------------------------

#[test]
fn soak_mixed_workload_leaks_nothing() {
    let secs: u64 = std::env::var("SKIFF_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("SKIFF_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let tmp = tempfile::tempdir().unwrap();
    let (mut dev, api, router) = start_dev(tmp.path());
    let data_dir = dev.data_dir.clone();
    let a = agent();
    // skiff dev bounds its malloc arenas (skiff_core::memory) when the
    // environment does not: the test runs it without.
    assert!(std::env::var_os("MALLOC_ARENA_MAX").is_none() || cfg!(not(target_env = "gnu")));
    let environ = std::fs::read(format!("/proc/{}/environ", dev.pid)).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"MALLOC_ARENA_MAX=2"),
        "skiff dev runs without MALLOC_ARENA_MAX=2"
    );

    // Users: one registration and one login each (logins are rate limited).
    let tokens = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = skiff_testkit::ApiClient::new(&api);
            let mut tokens = Vec::new();
            for u in USERS {
                tokens.push(client.token_as(u, PASSWORD).await);
            }
            tokens
        });

    let funcs: Vec<Func> = (0..FUNCTIONS)
        .map(|i| Func {
            index: i,
            owner: i % USERS.len(),
            name: format!("fn-{i:02}"),
            raced_delete: AtomicBool::new(false),
            state: Mutex::new(FnState {
                generation: 0,
                history: VecDeque::from([(0, Outcome::Absent)]),
                pending: None,
                busy: false,
                source: String::new(),
                next_inc: 1,
            }),
        })
        .collect();
    let mut run = Run {
        api: api.clone(),
        router,
        tokens,
        funcs,
        start: Instant::now(),
        duration: Duration::from_secs(secs),
        stop: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        error_count: AtomicU64::new(0),
        n: Counters::default(),
        marker: AtomicU64::new(0),
        seed,
        strict: std::env::var("SKIFF_SOAK_STRICT").map_or(true, |v| v != "0"),
    };

    // Create all 20 (two at a time: the manager type-checks two at once).
    std::thread::scope(|s| {
        for t in 0..MUTATORS {
            let run = &run;
            s.spawn(move || {
                let a = agent();
                let mut rng = SmallRng::seed_from_u64(seed ^ (t as u64 + 100));
                for f in run.funcs.iter().skip(t).step_by(MUTATORS) {
                    run.mutate(&a, f, &mut rng);
                }
            });
        }
    });
    assert_eq!(
        run.error_count.load(Ordering::Relaxed),
        0,
        "creating the functions failed: {:?}",
        run.errors.lock().unwrap()
    );
    run.start = Instant::now();

    // The workload, and a sampler for RSS and instance processes. The
    // baseline is taken a third in: until then the allocator's arenas are
    // still reaching the high-water marks of the workload's bursts (measured
    // with gdb's mallinfo2: the live heap flat at ~5 MB while the arenas grew).
    let warm_at = run.duration / 3;
    let mut rss_warm = None;
    let mut rss_max = 0;
    let mut instance_pids = BTreeSet::new();
    let mut instance_ids = BTreeSet::new();
    let mut max_running = 0;
    std::thread::scope(|s| {
        for t in 0..CALLERS {
            let run = &run;
            s.spawn(move || {
                let a = agent();
                let mut rng = SmallRng::seed_from_u64(seed ^ t as u64);
                while !run.stop.load(Ordering::Relaxed) {
                    let f = run.active(&mut rng);
                    match rng.random_range(0..100) {
                        0..=3 => run.throw(&a, f),
                        4..=7 => run.inspect(&a, f, &mut rng),
                        8..=9 => run.list(&a, rng.random_range(0..USERS.len())),
                        _ => run.call(&a, f, &mut rng),
                    }
                    std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
                }
            });
        }
        for t in 0..MUTATORS {
            let run = &run;
            s.spawn(move || {
                let a = agent();
                let mut rng = SmallRng::seed_from_u64(seed ^ (t as u64 + 10));
                while !run.stop.load(Ordering::Relaxed) {
                    let f = &run.funcs[rng.random_range(0..FUNCTIONS)];
                    run.mutate(&a, f, &mut rng);
                    std::thread::sleep(Duration::from_millis(rng.random_range(100..500)));
                }
            });
        }
        let run = &run;
        let mut next_report = Duration::from_secs(30);
        while run.start.elapsed() < run.duration {
            std::thread::sleep(Duration::from_millis(500));
            let rss = rss_kb(dev.pid).unwrap_or(0);
            rss_max = rss_max.max(rss);
            if rss_warm.is_none() && run.start.elapsed() >= warm_at {
                rss_warm = Some(rss);
            }
            let procs = instance_processes(&data_dir, dev.pid);
            max_running = max_running.max(procs.len());
            instance_pids.extend(procs);
            instance_ids.extend(entries(&data_dir.join("instances")));
            if run.start.elapsed() >= next_report {
                next_report += Duration::from_secs(30);
                eprintln!(
                    "soak: {:>4}s anonymous rss {rss} kB (all {} kB), calls {}, deploys {}, unexpected {}",
                    run.start.elapsed().as_secs(),
                    status_kb(dev.pid, "VmRSS:").unwrap_or(0),
                    run.n.calls.load(Ordering::Relaxed),
                    run.n.deploys.load(Ordering::Relaxed),
                    run.error_count.load(Ordering::Relaxed)
                );
            }
        }
        run.stop.store(true, Ordering::Relaxed);
    });

    // Quiet now: every function agrees with the test, every user's list too,
    // and the live ones are called once more so SIGTERM meets running instances.
    let mut rng = SmallRng::seed_from_u64(seed ^ 999);
    for f in &run.funcs {
        run.call(&a, f, &mut rng);
        run.inspect(&a, f, &mut rng);
    }
    for u in 0..USERS.len() {
        run.list(&a, u);
    }
    let rss_end = rss_kb(dev.pid).unwrap_or(0);
    let running_at_stop = instance_processes(&data_dir, dev.pid).len();
    drop(a);

    // SIGTERM, then nothing may be left.
    let exit = dev
        .service
        .terminate_blocking(Duration::from_secs(90))
        .unwrap_or_else(|| {
            panic!(
                "skiff dev did not stop after SIGTERM:\n{}",
                dev.stderr_tail()
            )
        });
    let mut leaks = Vec::new();
    if !exit.success() {
        leaks.push(format!("skiff dev exited with {exit} after SIGTERM"));
    }
    for (pid, cmd) in processes_mentioning(&data_dir, None) {
        let cmd: String = cmd.chars().take(300).collect();
        leaks.push(format!("process {pid} still running: {cmd}"));
    }
    let left = entries(&data_dir.join("instances"));
    if !left.is_empty() {
        leaks.push(format!("instances/ not empty: {left:?}"));
    }
    let left = entries(&data_dir.join("checks"));
    if !left.is_empty() {
        leaks.push(format!("checks/ not empty: {left:?}"));
    }
    let live: BTreeMap<(String, String), i64> = run
        .funcs
        .iter()
        .filter_map(|f| match f.snapshot().now {
            Outcome::Live { ver, .. } => Some(((USERS[f.owner].to_owned(), f.name.clone()), ver)),
            Outcome::Absent => None,
        })
        .collect();
    // Files of a deleted function: a leak, unless (not strict) a call raced
    // its delete — known bug 2 recreates its log (and may write its code).
    let mut race_files = Vec::new();
    let mut deleted_left = |user: &str, name: &str, what: String| {
        let raced = run.funcs.iter().any(|f| {
            USERS[f.owner] == user && f.name == name && f.raced_delete.load(Ordering::Relaxed)
        });
        if raced && !run.strict {
            race_files.push(what);
        } else {
            leaks.push(format!("{what} left after its delete"));
        }
    };
    // Files are keyed by function id: ask the store which name each live id has.
    let by_id: BTreeMap<i64, (String, String)> = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let url = format!("sqlite://{}", data_dir.join("skiff.db").display());
            let store = skiff_core::store::Store::connect(&url, 1)
                .await
                .expect("opening the dev database");
            let all = store
                .all_live_functions()
                .await
                .expect("reading live functions");
            store.close().await;
            all
        })
        .into_iter()
        .map(|(user, name, l)| (l.function_id, (user, name)))
        .collect();
    let mut stale_versions = Vec::new();
    for entry in entries(&data_dir.join("functions")) {
        let owner = entry.parse::<i64>().ok().and_then(|id| by_id.get(&id));
        let Some((user, name)) = owner else {
            deleted_left("?", &entry, format!("functions/{entry}"));
            continue;
        };
        let Some(ver) = live.get(&(user.clone(), name.clone())) else {
            deleted_left(user, name, format!("functions/{entry} ({user}/{name})"));
            continue;
        };
        for v in entries(&data_dir.join("functions").join(&entry)) {
            if v != format!("v{ver}") {
                stale_versions.push(format!("{user}/{name}/{v} (live v{ver})"));
            }
        }
    }
    for file in entries(&data_dir.join("logs")) {
        let id = file.trim_end_matches(".1").trim_end_matches(".log");
        let owner = id.parse::<i64>().ok().and_then(|id| by_id.get(&id));
        match owner {
            Some((user, name)) if live.contains_key(&(user.clone(), name.clone())) => {}
            Some((user, name)) => deleted_left(user, name, format!("logs/{file}")),
            None => deleted_left("?", id, format!("logs/{file}")),
        }
    }
    // The router names its cgroups `<its pid>-<n>` (spares made ahead of
    // need, and those of running instances): none may outlive it.
    let _ = &instance_ids;
    for c in ["memory", "pids"] {
        let parent = Path::new("/sys/fs/cgroup").join(c).join("skiff");
        for name in entries(&parent) {
            if name.starts_with(&format!("{}-", dev.pid)) {
                leaks.push(format!("cgroup {} left", parent.join(name).display()));
            }
        }
    }

    if run.strict {
        leaks.extend(stale_versions.iter().map(|v| format!("functions/{v} left")));
    }
    let n = &run.n;
    let ld = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let warm = rss_warm.unwrap_or(rss_end).max(1);
    let growth = (rss_end as f64 - warm as f64) / warm as f64;
    println!(
        "soak summary: {secs}s seed={seed} calls={} calls_404={} throws={} log_checks={} \
         deploys={} creates={} deletes={} code_checks={} lists={} cross_tenant={} \
         instances_seen={} max_running={max_running} running_at_stop={running_at_stop} \
         live_functions={} unexpected={} leaks={} known_bugs(stale_version_dirs={} \
         delete_race_503={} delete_race_files={} unannounced_close={}) strict={} \
         anonymous rss_kb warm={warm} end={rss_end} max={rss_max} growth={:+.1}%",
        ld(&n.calls),
        ld(&n.calls_404),
        ld(&n.throws),
        ld(&n.log_checks),
        ld(&n.deploys),
        ld(&n.creates),
        ld(&n.deletes),
        ld(&n.code_checks),
        ld(&n.lists),
        ld(&n.cross_tenant),
        instance_pids.len(),
        live.len(),
        ld(&run.error_count),
        leaks.len(),
        stale_versions.len(),
        ld(&n.known_delete_race_503),
        race_files.len(),
        ld(&n.known_unsignalled_close),
        run.strict,
        growth * 100.0,
    );
    if !stale_versions.is_empty() {
        println!("soak: code of replaced versions still on disk: {stale_versions:?}");
    }
    if !race_files.is_empty() {
        println!(
            "soak: files of deleted functions left by a call racing the delete: {race_files:?}"
        );
    }
    let errors = run.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} unexpected answers, first ones:\n{}\n-- skiff dev stderr --\n{}",
        ld(&run.error_count),
        errors.join("\n"),
        dev.stderr_tail()
    );
    assert!(leaks.is_empty(), "left behind:\n{}", leaks.join("\n"));
    assert!(
        growth < MAX_RSS_GROWTH,
        "anonymous RSS of skiff dev grew {:.1}% (warm {warm} kB, end {rss_end} kB, max {rss_max} kB)",
        growth * 100.0
    );
    assert!(ld(&n.calls) > 0 && ld(&n.deploys) + ld(&n.creates) > 0);
}
