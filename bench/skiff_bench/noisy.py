"""Noisy neighbour (issue 13): tenant A floods its function with `wrk -c256`,
far past its rate and its concurrency, while tenant B's function is called at
a steady fixed rate (bench/loadgen). B alone and B under A's flood, on a router
with the per-user rate limit off (`SKIFF_QUOTA_RPS` far above any load) and on
(the operator default), each router started for this phase on the run's
database. During each flood a slow sampler also calls A now and then to record
what A's excess is answered with (status and error code)."""

import json
import re
import shutil
import subprocess
import threading
import time

from .api import request, wait_http
from .common import HELLO_TS, StepFailed, log
from .procfs import CLK_TCK, children_cpu, cpu_ticks, instances_of
from .procs import free_port
from .services import start_router
from .tools import loadgen_rate, parse_wrk

# (label, SKIFF_QUOTA_RPS, more router env): "off" is a rate no load here
# reaches; "on-2t" is "on" with two worker threads instead of the process
# runtime's default of one per two CPUs.
CONFIGS = [("off", 1_000_000_000, {}), ("on", 1000, {}),
           ("on-2t", 1000, {"SKIFF_ROUTER_THREADS": "2"})]
TENANT_A, TENANT_B, FUNCTION = "noisya", "quietb", "hello"


def sample_statuses(url, stop, into):
    """Calls `url` every 200 ms until `stop` is set; counts "status code"."""
    while not stop.is_set():
        try:
            st, body, _ = request("GET", url, timeout=10)
            code = ""
            if st != 200:
                try:
                    code = " " + json.loads(body)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = " ?"
            key = f"{st}{code}"
        except OSError as e:
            key = f"error {type(e).__name__}"
        into[key] = into.get(key, 0) + 1
        stop.wait(0.2)


def flood(run, label, router, a_url, b_url):
    """B at the fixed rate while wrk floods A; returns (b, a, cpu, sampled)."""
    cfg = run.cfg
    secs, conns = cfg["noisy_secs"], cfg["noisy_conns"]
    name = f"wrk-noisy-{label}"
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{secs + 2}s", "--latency", a_url]
    run.commands(f"noisy_{label}_flood").append(" ".join(argv) + " &")
    w0 = children_cpu()
    wrk = run.procs.start(name, argv)
    sampled, stop = {}, threading.Event()
    sampler = threading.Thread(target=sample_statuses, args=(a_url, stop, sampled), daemon=True)
    try:
        time.sleep(1)  # the flood in full swing before B is measured
        sampler.start()
        pids = list(instances_of(router.pid))
        r0, i0, t0 = cpu_ticks([router.pid]), cpu_ticks(pids), time.monotonic()
        b = loadgen_rate(run, f"noisy_{label}_b_flood", b_url, cfg["noisy_rate"], secs)
        r1, i1, t1 = cpu_ticks([router.pid]), cpu_ticks(pids), time.monotonic()
        stop.set()
        sampler.join(timeout=15)
        wrk.wait(timeout=secs + 60)
    finally:
        stop.set()
        run.procs.stop(name)
    w1 = children_cpu()
    out = (run.logdir / f"{name}.log").read_text()
    with open(run.logdir / "tools.log", "a") as f:
        f.write(f"$ {' '.join(argv)}\n{out}\n")
    a = parse_wrk(out)
    if not a["requests"]:
        raise StepFailed(f"wrk gave no result for tenant A ({label}): {out[-300:]}")
    a["ok"] = a["requests"] - a["non_2xx"]
    a["ok_rps"] = a["ok"] / parse_secs(out, secs + 2)
    wall = t1 - t0
    cpu = {
        # Percent of one CPU over B's measured window (the machine has 2).
        "router_pct": (r1 - r0) / CLK_TCK / wall * 100,
        "instances_pct": (i1 - i0) / CLK_TCK / wall * 100,
        # wrk and loadgen together, over the whole flood.
        "load_tools_pct": (w1 - w0) / (secs + 2) * 100,
    }
    return b, a, cpu, sampled


def parse_secs(out, default):
    """The duration wrk reports ("N requests in 12.00s")."""
    m = re.search(r"requests in ([\d.]+)s,", out)
    return float(m.group(1)) if m else default


def phase_noisy_neighbour(run, stack):
    cfg = run.cfg
    for user in (TENANT_A, TENANT_B):
        token = stack.api.user(user)
        stack.tokens[user] = token
        stack.api.deploy(token, FUNCTION, HELLO_TS)
        stack.users.add(user)
        stack.count_functions += 1
    res = {"rate": cfg["noisy_rate"], "secs": cfg["noisy_secs"], "conns": cfg["noisy_conns"],
           "configs": {}}
    for label, rps, env in CONFIGS:
        port = free_port()
        name = f"router-noisy-{label}"
        router = start_router(run, name, port, 600, stack.db,
                              extra_env={"SKIFF_QUOTA_RPS": str(rps), **env})
        try:
            base = f"http://127.0.0.1:{port}/fn"
            a_url, b_url = f"{base}/{TENANT_A}/{FUNCTION}", f"{base}/{TENANT_B}/{FUNCTION}"
            for u in (a_url, b_url):
                wait_http(u, timeout=30)
            w0 = children_cpu()
            alone = loadgen_rate(run, f"noisy_{label}_b_alone", b_url, cfg["noisy_rate"],
                                 cfg["noisy_secs"], warmup=1)
            alone_tools_pct = (children_cpu() - w0) / (cfg["noisy_secs"] + 1) * 100
            time.sleep(1)
            b, a, cpu, sampled = flood(run, label, router, a_url, b_url)
            cpu["loadgen_alone_pct"] = alone_tools_pct
            if label == "on" and run.args.perf and shutil.which("perf"):
                time.sleep(1)
                res["profile"] = profile_flood(run, router, a_url, b_url)
        finally:
            run.procs.stop(name)
        la, lb = alone["latency_ms"], b["latency_ms"]
        res["configs"][label] = {"quota_rps": rps, "env": env, "b_alone": alone, "b_flood": b, "a": a,
                                 "cpu": cpu, "a_sampled": sampled,
                                 "p99_ratio": lb["p99"] / la["p99"] if la["p99"] else None}
        log(f"  rate limit {label} (SKIFF_QUOTA_RPS={rps}): B alone p50 {la['p50']:.3f} "
            f"p99 {la['p99']:.3f} p99.9 {la['p999']:.3f} ms; B under flood p50 {lb['p50']:.3f} "
            f"p99 {lb['p99']:.3f} p99.9 {lb['p999']:.3f} ms, {b['errors']} errors, "
            f"{b['non_2xx']} non-2xx; A {a['rps']:.0f} req/s ({a['ok_rps']:.0f}/s 2xx, "
            f"{a['non_2xx']} non-2xx); sampled {sampled}; router {cpu['router_pct']:.0f} %, "
            f"instances {cpu['instances_pct']:.0f} %, load tools {cpu['load_tools_pct']:.0f} % CPU")
    run.results["raw"]["noisy_neighbour"] = res


def profile_flood(run, router, a_url, b_url):
    """The flood once more, not measured, under `perf record -a -g`: where
    the CPUs go (by process, and the router's own functions)."""
    cfg = run.cfg
    secs = min(cfg["noisy_secs"], 8)
    pdir = run.logdir / "noisy-profile"
    pdir.mkdir(exist_ok=True)
    data = pdir / "noisy.perf.data"
    flood_argv = ["wrk", "-t2", f"-c{cfg['noisy_conns']}", f"-d{secs + 3}s", a_url]
    b_argv = [str(run.args.loadgen), "rate", "--url", b_url, "--rate", str(cfg["noisy_rate"]),
              "--duration", str(secs + 1), "--connections", "16"]
    rec = ["perf", "record", "-F", "999", "-a", "-g", "-o", str(data), "--", "sleep", str(secs)]
    wrk = subprocess.Popen(flood_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = subprocess.Popen(b_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        subprocess.run(rec, capture_output=True, timeout=secs + 60)
    finally:
        for p in (wrk, b):
            try:
                p.wait(timeout=secs + 30)
            except subprocess.TimeoutExpired:
                p.kill()
    by_comm = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "comm",
               "--percent-limit", "1", "-g", "none"]
    router_syms = ["perf", "report", "-i", str(data), "--stdio", "--no-children",
                   "--pid", str(router.pid), "--percentage", "relative", "--sort", "sym",
                   "--percent-limit", "1", "-g", "none"]
    out = {}
    for key, argv in (("by_comm", by_comm), ("router_symbols", router_syms)):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        (pdir / f"{key}.txt").write_text(r.stdout)
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(.+?)\s*$", line)
            if m and not line.startswith("#"):
                rows.append({"percent": float(m.group(1)), "what": m.group(2)})
        out[key] = rows
    run.commands("noisy_profile").extend(
        [" ".join(flood_argv) + " &", " ".join(b_argv) + " &", " ".join(rec),
         " ".join(by_comm), " ".join(router_syms)])
    return out
