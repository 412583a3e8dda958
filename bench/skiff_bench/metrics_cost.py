"""What the router's metrics cost on the request path (issue 14; budget: at
most 3 % of throughput): two routers on the run's database, one as shipped
(per-request metrics, per-minute stats, access log, Server-Timing) and one
with all of that off (SKIFF_REQUEST_METRICS=false, SKIFF_SERVER_TIMING=false),
and one with metrics on but the access log off (SKIFF_ACCESS_LOG=false), each
serving its own instance of /fn/alice/hello. wrk against each in
interleaved rounds (median run), router CPU per request from /proc, and, when
callgrind runs, user-space instructions per request of each.

The machine is saturated in these rounds (wrk, the router and its instance
share the CPUs), so throughput is the CPUs divided by the CPU all three spend
per request. That CPU (router + its instance + wrk, from /proc and rusage)
is counted per round too: it moves far less with other load on the host than
req/s does, and its paired difference is the throughput cost."""

import os
import shutil

from .api import wait_http
from .callgrind import callgrind_router
from .common import StepFailed, log
from .procfs import CLK_TCK, children_cpu, cpu_ticks, instances_of
from .procs import free_port
from .services import NO_METRICS, start_router
from .stats import median
from .tools import wrk

# The middle one tells the access log's share from the counters'.
VARIANTS = {"metrics_on": {}, "access_log_off": {"SKIFF_ACCESS_LOG": "false"},
            "metrics_off": NO_METRICS}


def phase_metrics_cost(run, stack):
    cfg = run.cfg
    routers = {}
    for name, env in VARIANTS.items():
        port = free_port()
        p = start_router(run, f"router-{name}", port, 300, stack.db, extra_env=env)
        url = f"http://127.0.0.1:{port}/fn/alice/hello"
        wait_http(url, timeout=60, proc=p)
        routers[name] = (p, url)
    runs = {name: [] for name in routers}
    # More rounds than the other phases (the machine's drift is larger than
    # the effect), each in a rotated order so no variant always runs first.
    rounds = int(os.environ.get("BENCH_METRICS_ROUNDS", cfg["metrics_rounds"]))
    names = list(routers)
    try:
        for rnd in range(rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                p, url = routers[name]
                wrk(run, "warmup", url, cfg["wrk_warmup"])
                inst = list(instances_of(p.pid))
                c0, i0, w0 = cpu_ticks([p.pid]), cpu_ticks(inst), children_cpu()
                r = wrk(run, f"metrics_cost_{name}", url, cfg["wrk_duration"])
                c1, i1, w1 = cpu_ticks([p.pid]), cpu_ticks(inst), children_cpu()
                if r["rps"] is None:
                    raise StepFailed(f"wrk gave no result for {name}")
                n = r["requests"] or 1
                r["router_cpu_us_per_req"] = (c1 - c0) / CLK_TCK * 1e6 / n
                r["all_cpu_us_per_req"] = (
                    ((c1 - c0) + (i1 - i0)) / CLK_TCK + (w1 - w0)) * 1e6 / n
                runs[name].append(r)
                log(f"  round {rnd + 1} {name}: {r['rps']:.0f} req/s, "
                    f"router {r['router_cpu_us_per_req']:.1f} µs CPU/req, "
                    f"router+instance+wrk {r['all_cpu_us_per_req']:.1f}")
    finally:
        for name in routers:
            run.procs.stop(f"router-{name}", timeout=30)
    res = {}
    for name, rs in runs.items():
        res[name] = {
            "rps": median([r["rps"] for r in rs]),
            "rps_runs": [r["rps"] for r in rs],
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "router_cpu_us_per_req": median([r["router_cpu_us_per_req"] for r in rs]),
            "all_cpu_us_per_req": median([r["all_cpu_us_per_req"] for r in rs]),
            "non_2xx": sum(r["non_2xx"] for r in rs),
        }
    off, on = res["metrics_off"]["rps"], res["metrics_on"]["rps"]
    res["throughput_cost_pct"] = (off - on) / off * 100 if off else None
    # Paired: each round's on vs off, which shared that round's machine state.
    paired = [(o["rps"] - m["rps"]) / o["rps"] * 100
              for o, m in zip(runs["metrics_off"], runs["metrics_on"]) if o["rps"]]
    res["rounds"] = rounds
    res["paired_cost_pct_runs"] = paired
    res["paired_cost_pct"] = median(paired) if paired else None
    # The same pairing on the CPU all parties spend per request.
    cpu_paired = [(m["all_cpu_us_per_req"] - o["all_cpu_us_per_req"])
                  / o["all_cpu_us_per_req"] * 100
                  for o, m in zip(runs["metrics_off"], runs["metrics_on"])
                  if o["all_cpu_us_per_req"]]
    res["paired_cpu_cost_pct_runs"] = cpu_paired
    res["paired_cpu_cost_pct"] = median(cpu_paired) if cpu_paired else None
    no_log = res["access_log_off"]["rps"]
    res["access_log_cost_pct"] = (no_log - on) / no_log * 100 if no_log else None
    secs = cfg["callgrind_secs"]
    if secs and run.args.perf and shutil.which("valgrind"):
        cg = run.logdir / "callgrind"
        cg.mkdir(exist_ok=True)
        cmds = run.commands("callgrind")
        for name, env in VARIANTS.items():
            m = callgrind_router(run, stack, f"router-{name}", cg, secs, cmds, extra_env=env)
            res[name]["ir_per_request"] = m["ir_per_request"]
        res["ir_per_request_added"] = (
            res["metrics_on"]["ir_per_request"] - res["metrics_off"]["ir_per_request"])
    run.results["raw"]["metrics_cost"] = res
    log(f"  metrics cost: {res['throughput_cost_pct']:.1f} % of throughput "
        f"({on:.0f} vs {off:.0f} req/s without)")
