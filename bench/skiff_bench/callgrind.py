"""User-space instructions per proxied request (valgrind callgrind), for the
router and for HAProxy: evidence that machine load cannot blur."""

import re
import shutil
import subprocess
import time

from .api import wait_http
from .common import StepFailed, log
from .procs import free_port
from .services import NO_QUOTAS, SECRETS_KEY, metrics_env
from .tools import loadgen_rate

# Functions whose inclusive instructions per request the report shows.
KEY_FUNCTIONS = {
    "Directory::lookup": "skiff_router::directory::Directory::lookup",
    "proxy::route": "skiff_router::proxy::route::{{closure}}",
    "strip_hop_by_hop": "skiff_router::proxy::strip_hop_by_hop",
    "add_forwarded": "skiff_router::proxy::add_forwarded",
    "Client::send_request": "hyper_util::client::legacy::client::Client<C,B>::send_request::{{closure}}",
    "sqlx fetch_all (change-feed poll)": "sqlx_core::query::Query<DB,A>::fetch_all::{{closure}}",
}


def phase_callgrind(run, stack):
    """Evidence for 1a and 2 that machine load cannot blur: user-space
    instructions per proxied request (valgrind callgrind), for the router and
    for HAProxy, each run under callgrind on its own port and sent the same
    fixed-rate load; counters are zeroed after a warm-up and dumped after."""
    secs = run.cfg["callgrind_secs"]
    if not secs or not run.args.perf or not shutil.which("valgrind"):
        return
    cg = run.logdir / "callgrind"
    cg.mkdir(exist_ok=True)
    cmds = run.commands("callgrind")
    out = {}
    # The router, on the same database (one function so far), with its own
    # data dir and instance.
    out["skiff"] = callgrind_router(run, stack, "router", cg, secs, cmds)
    # HAProxy with the same configuration on another port.
    hport = free_port()
    cfg = run.work / "haproxy-cg.cfg"
    cfg.write_text(run.results["raw"]["haproxy_cfg"].replace(
        f"bind 127.0.0.1:{stack.haproxy_port}", f"bind 127.0.0.1:{hport}"))
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}/haproxy.out",
            "haproxy", "-db", "-f", str(cfg)]
    cmds.append(" ".join(argv))
    p = run.procs.start("haproxy-callgrind", argv)
    url = f"http://127.0.0.1:{hport}/fn/alice/hello"
    wait_http(url, timeout=180, proc=p)
    out["haproxy"] = callgrind_measure(run, "haproxy", p, url, cg / "haproxy.out", secs, cmds)
    run.procs.stop("haproxy-callgrind", timeout=60)
    run.results["raw"]["callgrind"] = out
    log("  instructions per request: " + ", ".join(
        f"{k} {v['ir_per_request']:,.0f}" for k, v in out.items()))


def callgrind_router(run, stack, name, cg, secs, cmds, extra_env=None):
    """A router under callgrind on the run's database, measured and stopped."""
    port = free_port()
    env = {"SKIFF_DATABASE_URL": f"sqlite://{stack.db}",
           "SKIFF_DATA_DIR": str(run.work / f"{name}-cg"),
           "SKIFF_SECRETS_KEY": SECRETS_KEY, **NO_QUOTAS, **metrics_env(),
           "SKIFF_LISTEN": f"127.0.0.1:{port}", "SKIFF_DENO": run.deno, "RUST_LOG": "warn",
           **(extra_env or {})}
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}/{name}.out",
            run.args.router]
    cmds.append(" ".join(argv))
    p = run.procs.start(f"{name}-callgrind", argv, env=env)
    url = f"http://127.0.0.1:{port}/fn/alice/hello"
    wait_http(url, timeout=180, proc=p)
    try:
        return callgrind_measure(run, name, p, url, cg / f"{name}.out", secs, cmds)
    finally:
        run.procs.stop(f"{name}-callgrind", timeout=60)


def callgrind_measure(run, name, p, url, outfile, secs, cmds):
    """Warm-up, zero the counters, fixed-rate load, dump; instructions per request."""
    rate = 200
    loadgen_rate(run, "callgrind", url, rate, 2)
    subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, timeout=60)
    r = loadgen_rate(run, "callgrind", url, rate, secs)
    before = set(outfile.parent.glob(outfile.name + "*"))
    subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, timeout=60)
    dump = None
    for _ in range(200):
        new = set(outfile.parent.glob(outfile.name + "*")) - before
        if new:
            dump = max(new, key=lambda f: f.stat().st_mtime)
            time.sleep(0.5)
            break
        time.sleep(0.1)
    if dump is None:
        raise StepFailed(f"callgrind wrote no dump for {name}")
    cmds.append(f"loadgen rate --url {url} --rate {rate} --duration {secs}  (after 2 s of warm-up "
                f"and callgrind_control -z {p.pid}; then callgrind_control -d {p.pid})")
    res = {"requests": r["ok"] + r["non_2xx"]}
    tables = {}
    for kind, opts in (("inclusive", ["--inclusive=yes", "--threshold=99.5"]),):
        argv = ["callgrind_annotate"] + opts + [str(dump)]
        a = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        (outfile.parent / f"{name}-{kind}.txt").write_text(a.stdout)
        cmds.append(" ".join(argv))
        rows = []
        for line in a.stdout.splitlines():
            m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            what = m.group(3)
            if what == "PROGRAM TOTALS":
                res["ir_total"] = ir
                continue
            fn = what.split(":", 1)[1] if ":" in what else what
            fn = re.sub(r" \[[^\]]*\]$", "", fn)
            rows.append({"ir_per_request": ir / max(res["requests"], 1),
                         "percent": float(m.group(2)), "function": fn})
        tables[kind] = rows
    res["ir_per_request"] = res.get("ir_total", 0) / max(res["requests"], 1)
    res["key_functions"] = {}
    for short, full in KEY_FUNCTIONS.items():
        for row in tables["inclusive"]:
            if row["function"] == full:
                res["key_functions"][short] = row["ir_per_request"]
                break
    res["inclusive"] = [x for x in tables["inclusive"] if x["percent"] < 70][:45]
    return res
