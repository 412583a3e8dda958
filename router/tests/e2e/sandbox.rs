//! A function tries to leave its sandbox; every attempt must be refused and its
//! request must still get an answer.

use serde_json::Value;
use skiff_testkit::TestBackend;

use crate::helpers::{replies, stack};

skiff_testkit::on_both_backends!(multi_thread; escapes_are_refused,);

/// Runs each attempt and reports `{name: "refused: …" | "ALLOWED: …"}`.
fn prober(
    targets: &[(String, String)],
    other_code: &str,
    own_cache: &str,
    template: &str,
) -> String {
    let fetches: String = targets
        .iter()
        .map(|(name, url)| format!("  [{name:?}, () => fetch({url:?}).then((r) => r.text())],\n"))
        .collect();
    format!(
        r#"const attempts: [string, () => unknown][] = [
  ["read /etc/passwd", () => Deno.readTextFileSync("/etc/passwd")],
  ["read other function", () => Deno.readTextFileSync({other_code:?})],
  ["write own Deno cache", () => Deno.writeTextFileSync({own_cache:?}, "x")],
  ["list the runtime's cache template", () => [...Deno.readDirSync({template:?})].length],
  // The host's env is invisible: a function with no env sees nothing at all.
  ["env HOME", () => {{ const v = Deno.env.get("HOME"); if (v === undefined) throw new Error("not visible"); return v; }}],
  ["env toObject", () => {{ const o = Deno.env.toObject(); if (Object.keys(o).length === 0) throw new Error("empty"); return o; }}],
  ["spawn id", () => new Deno.Command("id").outputSync()],
  ["hostname", () => Deno.hostname()],
{fetches}];
export default async (_req: Request) => {{
  const out: Record<string, string> = {{}};
  for (const [name, run] of attempts) {{
    try {{
      const v = await run();
      out[name] = "ALLOWED: " + String(v).slice(0, 40);
    }} catch (e) {{
      out[name] = "refused: " + String(e).slice(0, 80);
    }}
  }}
  return Response.json(out);
}};
"#
    )
}

async fn escapes_are_refused(b: TestBackend) {
    let s = stack(b).await;
    let bob = s.token("bob").await;
    s.deploy(&bob, "secret", &replies("bob's secret")).await;
    s.until("bob", "secret", |st, _| st == 200).await;
    let other_code = s.code_dir(s.function_id("bob", "secret"), 1).join("fn.js");
    assert!(other_code.exists());

    let manager = s.manager_port;
    let router = s.router_addr.port();
    let mut ports = vec![("manager", manager), ("router", router)];
    if b == TestBackend::MySql {
        let url = skiff_testkit::mysql_server_url();
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        ports.push(("mariadb", port));
    }
    let mut targets = Vec::new();
    for (what, port) in &ports {
        for host in [
            "127.0.0.1",
            "localhost",
            "0.0.0.0",
            "[::1]",
            "127.1",
            "[::ffff:127.0.0.1]",
            "2130706433",
        ] {
            targets.push((
                format!("{what} via {host}"),
                format!("http://{host}:{port}/healthz"),
            ));
        }
    }
    let alice = s.token("alice").await;
    // The probe's own paths name its id: a first version makes it known.
    s.deploy_live(&alice, "alice", "probe", &replies("first"), "first")
        .await;
    let probe_code = s.code_dir(s.function_id("alice", "probe"), 2);
    s.deploy(
        &alice,
        "probe",
        &prober(
            &targets,
            &other_code.display().to_string(),
            &probe_code.join(".deno/planted").display().to_string(),
            &s.data_dir
                .join("runtime/deno-template")
                .display()
                .to_string(),
        ),
    )
    .await;
    let (status, body) = s
        .until("alice", "probe", |st, b| st != 200 || b != "first")
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let results = v.as_object().unwrap();
    assert_eq!(results.len(), 8 + targets.len());
    let allowed: Vec<_> = results
        .iter()
        .filter(|(_, r)| !r.as_str().unwrap().starts_with("refused"))
        .collect();
    assert!(allowed.is_empty(), "escaped the sandbox: {allowed:#?}");
    // Its version's Deno cache exists (seeded with the shared runtime's code),
    // and nothing the function tried to write there arrived.
    let cache = probe_code.join(".deno");
    assert!(
        holds_file_ending(&cache, "runtime/warm/fn.ts.js"),
        "{cache:?} was not seeded from the runtime's cache template"
    );
    assert!(!cache.join("planted").exists());
    // and the platform still works for everyone
    assert_eq!(
        s.get("bob", "secret", "/").await.text().await.unwrap(),
        "bob's secret"
    );
}

fn holds_file_ending(dir: &std::path::Path, suffix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                holds_file_ending(&p, suffix)
            } else {
                p.to_string_lossy().ends_with(suffix)
            }
        })
    })
}
