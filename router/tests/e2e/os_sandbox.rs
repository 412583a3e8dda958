//! The operating-system layer around instances (the launcher), shown from
//! outside: attacks that Deno's own permissions let through, or that a
//! function could only make after escaping Deno, are refused by the kernel.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_testkit::{Launch, TestBackend};

use crate::helpers::{replies, stack};

skiff_testkit::on_both_backends!(multi_thread;
    abstract_unix_sockets_are_refused_both_ways,
    a_running_instance_carries_every_layer,
    tmp_is_private_to_each_instance_and_capped,
);

/// Pids of running Deno processes whose command line names `needle`.
fn deno_pids(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains(needle) && cmd.contains("--module") && !zombie(*pid)
        })
        .collect()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_none_or(|st| st == "Z")
        })
        .unwrap_or(true)
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_default()
}

const ABSTRACT_PROBE: &str = r#"
export default async (req: Request) => {
  const q = new URL(req.url).searchParams;
  const out: Record<string, string> = {};
  const attempt = async (name: string, run: () => Promise<unknown> | unknown) => {
    try {
      out[name] = "ALLOWED: " + String(await run());
    } catch (e) {
      out[name] = "refused: " + String(e).slice(0, 100);
    }
  };
  const host = q.get("host")!;
  await attempt("connect to the host's abstract socket", async () => {
    const c = await Deno.connect({ transport: "unix", path: "\0" + host });
    c.close();
    return "connected";
  });
  for (const name of (q.get("squat") ?? "").split(",")) {
    await attempt("listen on \\0" + name, () => {
      const l = Deno.listen({ transport: "unix", path: "\0" + name });
      return JSON.stringify(l.addr);
    });
  }
  return Response.json(out);
};
"#;

/// A host service listens on an abstract name: the function can neither
/// connect to it nor take abstract names for itself (of any length,
/// including the 13- and 25-byte names whose address length equals an IPv4
/// or IPv6 address's).
async fn abstract_unix_sockets_are_refused_both_ways(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let host_name = format!("skiff-e2e-host-{}-{}", std::process::id(), b as u8);
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(host_name.as_bytes()).unwrap())
            .unwrap();
    listener.set_nonblocking(true).unwrap();
    let tag = format!("{}{}", std::process::id() % 10_000, b as u8);
    let squat = [
        format!("sq{tag}"),
        format!("{:x<12}", format!("a{tag}")), // 13 bytes with the leading NUL
        format!("{:y<24}", format!("b{tag}")), // 25 bytes
        format!("{:z<100}", format!("c{tag}")), // long
    ];
    s.deploy(&t, "abstract", ABSTRACT_PROBE).await;
    let q = format!("/?host={host_name}&squat={}", squat.join(","));
    let (status, body) = s.until("alice", "abstract", |st, _| st == 200).await;
    assert_eq!(status, 200);
    let _ = body;
    let v: Value = s.get("alice", "abstract", &q).await.json().await.unwrap();
    let attempts = v.as_object().unwrap();
    assert_eq!(attempts.len(), 1 + squat.len(), "{v}");
    for (what, outcome) in attempts {
        let outcome = outcome.as_str().unwrap();
        assert!(outcome.starts_with("refused"), "{what}: {outcome}");
    }
    assert!(
        listener.accept().is_err(),
        "the host's abstract listener saw a connection"
    );
    let bound = std::fs::read_to_string("/proc/net/unix").unwrap();
    for name in &squat {
        assert!(!bound.contains(name.as_str()), "{name} was bound");
    }
}

/// The instance process itself, read from /proc: its own uid (as root), no
/// capabilities, no_new_privs, a seccomp filter, its own mount and IPC
/// namespaces and session, its cgroup, and the limits.
async fn a_running_instance_carries_every_layer(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    s.deploy(&t, "layers", &replies("layered")).await;
    s.until("alice", "layers", |st, _| st == 200).await;
    let pids = deno_pids(&s.data_dir.display().to_string());
    assert_eq!(pids.len(), 1, "one instance expected: {pids:?}");
    let pid = pids[0];
    let root = status_field(std::process::id(), "Uid:").starts_with('0');
    if root {
        let uid = status_field(pid, "Uid:");
        assert!(
            uid.split_whitespace()
                .all(|u| u.parse::<u32>().unwrap() >= 200_000),
            "instance uid: {uid}"
        );
    }
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "Seccomp:"), "2", "no seccomp filter");
    let ns = |p: u32, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).unwrap();
    let me = std::process::id();
    assert_ne!(ns(pid, "mnt"), ns(me, "mnt"), "shares the router's mounts");
    assert_ne!(
        ns(pid, "ipc"),
        ns(me, "ipc"),
        "shares the router's IPC namespace"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // state ppid pgrp session: its own session and process group.
    assert_eq!(fields[3], pid.to_string(), "not its own session");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let limit = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert!(limit("Max open files").contains("1024 1024"), "{limits}");
    assert!(limit("Max core file size").contains("0 0"), "{limits}");
    if root {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroups.contains("/skiff/"), "not in its cgroup: {cgroups}");
    }
}

const TMP_USER: &str = r#"
export default async (req: Request) => {
  const q = new URL(req.url).searchParams;
  const out: Record<string, string> = {};
  const mine = q.get("mine")!;
  try {
    const before = await Deno.readTextFile("/tmp/shared-name").catch(() => "(none)");
    await Deno.writeTextFile("/tmp/shared-name", mine);
    out.before = before;
    out.after = await Deno.readTextFile("/tmp/shared-name");
  } catch (e) {
    out.error = String(e);
  }
  if (q.get("fill")) {
    try {
      const chunk = new Uint8Array(1 << 20);
      const f = await Deno.open("/tmp/fill", { write: true, create: true });
      let written = 0;
      try {
        for (let i = 0; i < 200; i++) written += await f.write(chunk);
      } finally {
        f.close();
      }
      out.fill = "wrote " + written;
    } catch (e) {
      out.fill = "stopped: " + String(e).slice(0, 60);
    }
  }
  return Response.json(out);
};
"#;

/// Two functions each see their own `/tmp`; nothing reaches the host's; a
/// function cannot write more than its `/tmp` holds (64 MiB by default).
async fn tmp_is_private_to_each_instance_and_capped(b: TestBackend) {
    let s = stack(b).await;
    let t = s.token("alice").await;
    let host_file = std::path::Path::new("/tmp/shared-name");
    let host_before = std::fs::read_to_string(host_file).ok();
    for name in ["tmp-a", "tmp-b"] {
        s.deploy(&t, name, TMP_USER).await;
        s.until("alice", name, |st, _| st == 200).await;
    }
    for (name, mine) in [("tmp-a", "from-a"), ("tmp-b", "from-b")] {
        let v: Value = s
            .get("alice", name, &format!("/?mine={mine}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["after"], mine, "{v}");
    }
    // Each still reads its own value back.
    for (name, mine) in [("tmp-a", "from-a"), ("tmp-b", "from-b")] {
        let v: Value = s
            .get("alice", name, "/?mine=again")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["before"], mine, "{name} saw another /tmp: {v}");
    }
    assert_eq!(
        std::fs::read_to_string(host_file).ok(),
        host_before,
        "a function wrote the host's /tmp"
    );
    let start = Instant::now();
    let v: Value = s
        .get("alice", "tmp-a", "/?mine=x&fill=1")
        .await
        .json()
        .await
        .unwrap();
    let fill = v["fill"].as_str().unwrap();
    assert!(fill.starts_with("stopped"), "200 MiB fit in /tmp: {fill}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

const IMMORTAL: &str = r#"
// Everything a function could do to outlive its router from inside Deno.
const noop = () => {};
try { Deno.exit = noop as never; } catch { /* frozen */ }
try { Object.defineProperty(Deno, "exit", { value: noop }); } catch { /* frozen */ }
try { globalThis.close = noop; } catch { /* frozen */ }
try { Deno.addSignalListener("SIGTERM", noop); Deno.addSignalListener("SIGHUP", noop); } catch { /* denied */ }
setInterval(noop, 1000);
export default () => new Response("immortal");
"#;

/// `kill -9` of a router process: its instances go with it, even one whose
/// module replaced `Deno.exit` and ignores every signal it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_die_with_a_killed_router_whatever_they_patch() {
    let s = stack(TestBackend::Sqlite).await;
    let t = s.token("alice").await;
    s.deploy(&t, "immortal", IMMORTAL).await;
    let data = s.data_dir.join("doomed-router");
    let mut router = Launch::router(env!("CARGO_BIN_EXE_skiff-router"), &s.db.url, &data)
        .env("RUST_LOG", "warn")
        .start()
        .await;
    let url = format!("{}/fn/alice/immortal", router.url());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = s.client.get(&url).send().await
            && r.status() == 200
        {
            assert_eq!(r.text().await.unwrap(), "immortal");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the router process never served the function"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids = deno_pids(&data.display().to_string());
    assert_eq!(pids.len(), 1, "{pids:?}");
    router.kill().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| !zombie(*p)) {
        assert!(
            Instant::now() < deadline,
            "instance {pids:?} outlived its SIGKILLed router"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
