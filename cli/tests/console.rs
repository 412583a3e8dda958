//! The web console in real headless Chromium (Debian `chromium` and
//! `chromium-driver`) against a real `skiff dev`: the whole journey of a user
//! (sign up, deploy from the editor, see the type warning at its line, call
//! the function from "try it", see the call in the log tail and the charts,
//! redeploy, diff, roll back, set a secret the function reads, delete, revoke
//! every token), with hostile strings planted in the function's logs, env
//! values and diagnostics. Nothing of them may run: no dialog, no element
//! injected, no script marker set, no CSP violation. The screenshots it takes
//! are the ones in docs/console/ when `SKIFF_CONSOLE_SCREENSHOTS` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use skiff_testkit::{ApiClient, Launch};

/// How long any one thing may take to show up (a deploy type-checks, a
/// function cold-starts, stats are flushed every 2 s by `skiff dev`).
const WAIT: Duration = Duration::from_secs(90);

/// Hostile strings: markup that would run if rendered as HTML (each sets a
/// marker the test looks for), and ANSI escapes.
const HOSTILE_LOG: &str = "<script>window.__pwned='log-script'</script> \"><img src=x onerror=\"window.__pwned='log-img'\"> \u{1b}[31mred\u{1b}[0m";
const HOSTILE_ENV: &str = r#""><img src=x onerror="window.__pwned='env-img'"><script>window.__pwned='env-script'</script>"#;

/// Version 1: a type error on line 3 whose message quotes markup, and a log
/// line of hostile strings.
fn version_one() -> String {
    format!(
        r#"export default {{
  fetch(req: Request): Response {{
    const tag: "<img src=x onerror=window.__pwned='diag'>" = 42;
    console.log({log});
    const token = Deno.env.get("API_TOKEN");
    return Response.json({{
      greeting: "hello from v1",
      path: new URL(req.url).pathname,
      token_length: token ? token.length : 0,
      env: Deno.env.get("GREETING") ?? null,
      tag,
    }});
  }},
}};
"#,
        log = serde_json::to_string(HOSTILE_LOG).unwrap()
    )
}

fn version_two() -> String {
    version_one().replace("hello from v1", "hello from v2")
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{names:?} not found: install Debian's chromium and chromium-driver (scripts/test.sh does)"
    );
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(which(&["chromedriver"]))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    while http
        .get(format!("{}/status", driver.url))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": which(&["chromium", "chromium-browser"]),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--hide-scrollbars", "--force-device-scale-factor=1",
                     "--lang=en-US", "--no-first-run", "--disable-extensions"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Polls `js` (a function body returning a value) until it is truthy; returns it.
async fn wait_for(c: &Client, js: &str, what: &str) -> Value {
    wait_for_with(c, js, vec![], what).await
}

/// [`wait_for`] with `arguments` for the script.
async fn wait_for_with(c: &Client, js: &str, args: Vec<Value>, what: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c.execute(js, args.clone()).await.unwrap();
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() > deadline {
            // What the user would see, to tell why.
            let png = c.screenshot().await.unwrap_or_default();
            let shot = std::env::temp_dir().join("skiff-console-failure.png");
            let _ = std::fs::write(&shot, png);
            panic!(
                "waited too long for {what}; the page ({}) reads:\n{}",
                shot.display(),
                page_text(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"))
}

async fn click(c: &Client, selector: &str) {
    css(c, selector).await.click().await.unwrap();
}

async fn type_into(c: &Client, selector: &str, text: &str) {
    let el = css(c, selector).await;
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

/// The text of the page's app, as a user reads it.
async fn page_text(c: &Client) -> String {
    c.execute("return document.getElementById('app').innerText", vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Replaces the editor's text the way a user pastes it.
async fn paste_source(c: &Client, source: &str) {
    let editor = css(c, ".editor .cm-content").await;
    editor.click().await.unwrap();
    editor
        .send_keys(&(fantoccini::key::Key::Control + "a"))
        .await
        .unwrap();
    c.execute(
        r#"const el = document.querySelector('.editor .cm-content');
           const dt = new DataTransfer();
           dt.setData('text/plain', arguments[0]);
           el.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));"#,
        vec![json!(source)],
    )
    .await
    .unwrap();
    let shown = wait_for(
        c,
        "return document.querySelector('.editor .cm-content').innerText",
        "the pasted source",
    )
    .await;
    let first_line = source.lines().next().unwrap();
    assert!(shown.as_str().unwrap().starts_with(first_line), "{shown}");
}

async fn tab(c: &Client, name: &str) {
    click(c, &format!("#tab-{name}")).await;
    wait_for(
        c,
        &format!("return document.querySelector('#tab-{name}[aria-selected=true]') !== null && document.querySelector('.panel').childElementCount > 0"),
        &format!("the {name} tab"),
    )
    .await;
}

/// Sizes the window so that the page's viewport is `width` x `height`.
async fn viewport(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    let inner = c
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    let iw = u32::try_from(inner[0].as_u64().unwrap()).unwrap();
    let ih = u32::try_from(inner[1].as_u64().unwrap()).unwrap();
    c.set_window_size(
        width + width.saturating_sub(iw),
        height + height.saturating_sub(ih),
    )
    .await
    .unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    screenshot_from(c, name, None).await;
}

/// A screenshot of the viewport, scrolled to `from` (a selector) or the top.
async fn screenshot_from(c: &Client, name: &str, from: Option<&str>) {
    // Move the caret out of the picture and scroll where asked.
    c.execute(
        "document.activeElement && document.activeElement.blur(); \
         const el = arguments[0] && document.querySelector(arguments[0]); \
         if (el) el.scrollIntoView({ block: 'start' }); else window.scrollTo(0, 0);",
        vec![json!(from)],
    )
    .await
    .unwrap();
    let png = c.screenshot().await.unwrap();
    // The committed pictures change only when asked for: a run of the suite
    // leaves the work tree clean.
    let dir = if std::env::var_os("SKIFF_CONSOLE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console")
    } else {
        std::env::temp_dir().join("skiff-console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Records CSP violations and any dialog the page would open (from here on;
/// WebDriver's own scripts are not subject to the page's CSP).
async fn watch_for_attacks(c: &Client) {
    c.execute(
        r#"window.__violations = [];
           document.addEventListener('securitypolicyviolation', (e) =>
             window.__violations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
           window.__dialogs = [];
           for (const name of ['alert', 'confirm', 'prompt']) {
             const real = window[name];
             window[name] = (...a) => { window.__dialogs.push(name + ':' + a.join(' ')); return real.apply(window, a); };
           }"#,
        vec![],
    )
    .await
    .unwrap();
}

/// Nothing hostile ran or was injected.
async fn assert_nothing_ran(c: &Client, when: &str) {
    let state = c
        .execute(
            r#"return {
                 pwned: window.__pwned === undefined ? null : String(window.__pwned),
                 dialogs: window.__dialogs,
                 violations: window.__violations,
                 injected: document.querySelectorAll('#app img, #app script, #app iframe, #app [onerror], #app [onload]').length,
               }"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        state["pwned"],
        Value::Null,
        "{when}: a hostile script ran: {state}"
    );
    assert_eq!(state["dialogs"], json!([]), "{when}: {state}");
    assert_eq!(state["violations"], json!([]), "{when}: {state}");
    assert_eq!(state["injected"], json!(0), "{when}: {state}");
    assert!(
        c.get_alert_text().await.is_err(),
        "{when}: a dialog is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deploys_watches_and_manages_a_function_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Launch::dev(env!("CARGO_BIN_EXE_skiff"), &dir.path().join("data"))
        .start()
        .await;
    let api_url = dev.url_of("manager");
    let api = ApiClient::new(&api_url);

    // The page's headers: a strict policy, no framing, no sniffing.
    let page = reqwest::get(format!("{api_url}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'nonce-",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );

    let driver = start_driver().await;
    let c = browser(&driver).await;
    viewport(&c, 1280, 800).await;
    c.goto(&format!("{api_url}/")).await.unwrap();
    watch_for_attacks(&c).await;

    // 1. Sign up.
    type_into(&c, "input[name=username]", "alice").await;
    type_into(&c, "input[name=password]", "correct horse battery").await;
    screenshot(&c, "sign-in").await;
    click(&c, "form.auth button[type=button]").await;
    wait_for(
        &c,
        "return document.querySelector('main h1')?.textContent === 'Functions'",
        "the function list",
    )
    .await;

    // 2. Deploy from the editor: a new function, its source pasted in.
    type_into(&c, "input[name=new-name]", "hello").await;
    click(&c, "form.new-fn button[type=submit]").await;
    paste_source(&c, &version_one()).await;
    click(&c, "#deploy").await;
    // 3. The type warning, listed and marked at its line (3) in the editor.
    wait_for(
        &c,
        "return document.querySelector('.diag.warning')",
        "the type warning",
    )
    .await;
    let warning = css(&c, ".diag.warning").await;
    assert_eq!(
        warning.attr("data-line").await.unwrap().as_deref(),
        Some("3")
    );
    assert!(
        warning
            .text()
            .await
            .unwrap()
            .contains("onerror=window.__pwned='diag'")
    );
    let marked_line = wait_for(
        &c,
        "const lines = [...document.querySelectorAll('.editor .cm-content .cm-line')]; \
         return lines.findIndex((l) => l.querySelector('.cm-lintRange-warning')) + 1",
        "the warning marked in the editor",
    )
    .await;
    assert_eq!(marked_line, json!(3));
    wait_for(
        &c,
        "return document.querySelector('.cm-lint-marker-warning')",
        "the gutter marker",
    )
    .await;
    wait_for(
        &c,
        "return document.querySelector('.live-version')?.textContent === 'v1'",
        "v1 live",
    )
    .await;
    screenshot_from(&c, "function-code", Some(".tabs")).await;
    assert_nothing_ran(&c, "after the deploy").await;

    // 4. Call it from the try-it panel (across origins, to the router),
    // reached from the keyboard: → on the tabs moves to the next one.
    css(&c, "#tab-code")
        .await
        .send_keys(&fantoccini::key::Key::Right.to_string())
        .await
        .unwrap();
    wait_for(
        &c,
        "return document.activeElement?.id === 'tab-try-it' \
         && document.activeElement.getAttribute('aria-selected') === 'true' \
         && document.querySelector('#send')",
        "the try-it tab, focused",
    )
    .await;
    type_into(&c, "input[name=path]", "/greet").await;
    click(&c, "#send").await;
    wait_for(
        &c,
        "return document.getElementById('try-status')?.textContent === '200'",
        "the answer",
    )
    .await;
    let body = css(&c, "#try-body").await.text().await.unwrap();
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["greeting"], "hello from v1");
    assert_eq!(answer["path"], "/greet");
    screenshot(&c, "function-try-it").await;
    // A few more calls for the charts.
    for _ in 0..4 {
        click(&c, "#send").await;
        wait_for(
            &c,
            "return document.getElementById('try-status')?.textContent === '200'",
            "an answer",
        )
        .await;
    }

    // 5. The call in the log tail (hostile line shown as text) and the chart.
    tab(&c, "logs").await;
    wait_for(
        &c,
        "return document.querySelector('.log').innerText.includes(\"window.__pwned='log-script'\")",
        "the call's log line",
    )
    .await;
    let log = css(&c, ".log").await.text().await.unwrap();
    assert!(
        log.contains(r#"<script>window.__pwned='log-script'</script> "><img src=x onerror="#),
        "{log}"
    );
    // The escape reaches the page as visible text, never as a control character.
    assert!(log.contains("[31mred") && !log.contains('\u{1b}'), "{log}");
    screenshot(&c, "function-logs").await;
    assert_nothing_ran(&c, "in the log tail").await;
    tab(&c, "metrics").await;
    wait_for(
        &c,
        "return Number(document.querySelector('[data-total=Invocations]')?.textContent) >= 5",
        "the calls in the stats",
    )
    .await;
    let bars = c
        .execute(
            "return document.querySelectorAll('.chart rect.calls').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(bars.as_u64().unwrap() >= 1, "no bar of calls: {bars}");
    let latency_points = c
        .execute(
            "return document.querySelectorAll('.chart circle.p95').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(latency_points.as_u64().unwrap() >= 1, "no latency point");
    screenshot(&c, "function-metrics").await;

    // The list, with the sparkline of those calls, at desktop and phone width.
    // By the console's own link: a page load would forget the token.
    click(&c, "header.top a.brand").await;
    wait_for(
        &c,
        "return document.querySelector('.fn-list .spark polyline.calls')",
        "the sparkline",
    )
    .await;
    let row = css(&c, ".fn-list tbody tr").await.text().await.unwrap();
    assert!(
        row.contains("hello") && row.contains("v1") && row.contains("deployed"),
        "{row}"
    );
    screenshot(&c, "functions").await;
    viewport(&c, 390, 844).await;
    screenshot(&c, "functions-phone").await;
    click(&c, ".fn-list a").await;
    wait_for(
        &c,
        "return document.querySelector('.cm-content')",
        "the function page",
    )
    .await;
    screenshot(&c, "function-phone").await;
    viewport(&c, 1280, 800).await;

    // 6. Edit and redeploy.
    paste_source(&c, &version_two()).await;
    click(&c, "#deploy").await;
    wait_for(
        &c,
        "return document.querySelector('.live-version')?.textContent === 'v2'",
        "v2 live",
    )
    .await;
    wait_for(
        &c,
        "return document.querySelector('.alert.ok')?.textContent.includes('Deployed version 2')",
        "the deploy's answer",
    )
    .await;

    // 7. Diff v1 and v2.
    tab(&c, "versions").await;
    css(&c, "select[name=from]")
        .await
        .select_by_value("1")
        .await
        .unwrap();
    css(&c, "select[name=to]")
        .await
        .select_by_value("2")
        .await
        .unwrap();
    click(&c, "#show-diff").await;
    wait_for(
        &c,
        "return document.querySelector('#diff .cm-deletedChunk, #diff .cm-deletedLine')",
        "the diff",
    )
    .await;
    let diff = css(&c, "#diff").await.text().await.unwrap();
    assert!(
        diff.contains("hello from v1") && diff.contains("hello from v2"),
        "{diff}"
    );
    let changed = c
        .execute("return [...document.querySelectorAll('#diff .cm-changedLine')].map((l) => l.textContent)", vec![])
        .await
        .unwrap();
    assert!(changed.to_string().contains("hello from v2"), "{changed}");
    screenshot_from(&c, "function-versions", Some(".tabs")).await;

    // 8. Roll back to v1: it answers again.
    click(&c, "button.rollback[data-version='1']").await;
    wait_for(
        &c,
        "return document.querySelector('.live-version')?.textContent === 'v1'",
        "v1 live again",
    )
    .await;
    tab(&c, "try-it").await;
    click(&c, "#send").await;
    wait_for(
        &c,
        "return document.getElementById('try-body')?.textContent.includes('hello from v1')",
        "v1 answering",
    )
    .await;

    // 9. A secret and a hostile env value; the function reads both.
    tab(&c, "config").await;
    type_into(&c, "input[name=secret-name]", "API_TOKEN").await;
    type_into(&c, "input[name=secret-value]", "s3cret-value-17").await;
    click(&c, "form[aria-label=Secrets] button[type=submit]").await;
    wait_for(
        &c,
        "return document.querySelector('.secrets code')?.textContent === 'API_TOKEN'",
        "the secret listed",
    )
    .await;
    assert!(
        !page_text(&c).await.contains("s3cret-value-17"),
        "a secret value is shown"
    );
    click(&c, "form[aria-label=Environment] button[type=button]").await;
    type_into(&c, ".env tbody tr:last-child .env-key", "GREETING").await;
    type_into(&c, ".env tbody tr:last-child .env-value", HOSTILE_ENV).await;
    click(&c, "form[aria-label=Environment] button[type=submit]").await;
    wait_for(
        &c,
        "return document.querySelector('.alert.ok')?.textContent.startsWith('Saved')",
        "the env saved",
    )
    .await;
    // Drawn again from the API: the value comes back as text in its input.
    tab(&c, "versions").await;
    tab(&c, "config").await;
    let shown = css(&c, ".env-value").await.prop("value").await.unwrap();
    assert_eq!(shown.as_deref(), Some(HOSTILE_ENV));
    screenshot_from(&c, "function-config", Some(".tabs")).await;
    assert_nothing_ran(&c, "with the env value shown").await;
    tab(&c, "try-it").await;
    click(&c, "#send").await;
    wait_for(
        &c,
        "return document.getElementById('try-body')?.textContent.includes('token_length\":15')",
        "the function reading its secret",
    )
    .await;
    let answer: Value =
        serde_json::from_str(&css(&c, "#try-body").await.text().await.unwrap()).unwrap();
    assert_eq!(answer["token_length"], 15);
    assert_eq!(answer["env"], HOSTILE_ENV);
    assert_nothing_ran(&c, "with the env value in an answer").await;

    // 10. Delete (typing the name to confirm; no native dialog).
    tab(&c, "config").await;
    type_into(&c, "input[name=confirm-name]", "hello").await;
    click(&c, "#delete").await;
    wait_for(&c, "return document.querySelector('main h1')?.textContent === 'Functions' && document.querySelector('.fn-list') === null", "the empty list").await;
    assert!(page_text(&c).await.contains("No functions yet"));
    let login = api.login("alice", "correct horse battery").await;
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.function(&token, "hello").await.status(), 404);

    // A hostile address (a link someone sent): the name is shown as text and
    // refused by the API, a malformed escape does not break the page.
    for (hash, name) in [
        (
            "#/fn/%22%3E%3Cimg%20src%3Dx%20onerror%3D%22window.__pwned%3D'hash'%22%3E",
            r#""><img src=x onerror="window.__pwned='hash'">"#,
        ),
        ("#/fn/%E0%A4%A", "%E0%A4%A"),
    ] {
        c.execute("location.hash = arguments[0]", vec![json!(hash)])
            .await
            .unwrap();
        wait_for_with(
            &c,
            "return document.querySelector('main h1')?.textContent === arguments[0] \
             && document.querySelector('.alert.error')?.textContent.includes('400')",
            vec![json!(name)],
            "the name refused",
        )
        .await;
    }
    assert_nothing_ran(&c, "with a hostile address").await;

    // Account: revoke every token; the console is back at sign-in, and a
    // token from before (the one above) is refused.
    click(&c, "a[href='#/account']").await;
    screenshot(&c, "account").await;
    click(&c, "#revoke").await;
    wait_for(
        &c,
        "return document.querySelector('form.auth')",
        "the sign-in form",
    )
    .await;
    assert_eq!(api.function(&token, "hello").await.status(), 401);
    assert_nothing_ran(&c, "at the end").await;

    c.close().await.unwrap();
    drop(driver);
    dev.stop().await;
}
