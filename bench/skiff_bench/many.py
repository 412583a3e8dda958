"""5: many functions (top up to the mode's users and functions through the bulk
manager) and 5a: a warm function's latency through a router holding every
function against one holding one."""

import concurrent.futures as futures
import time

from .api import wait_http
from .callgrind import callgrind_router
from .common import FILLER_TS, StepFailed, log
from .procfs import vm_rss_kb
from .procs import free_port
from .services import start_router
from .stats import median
from .tools import loadgen_rate


def phase_many(run, stack):
    """Brings the totals to cfg users / cfg functions, spread evenly."""
    want_users, want_fns = run.cfg["users"], run.cfg["functions"]
    extra_users = [f"u{i:03d}" for i in range(want_users - len(stack.users))]
    fill = want_fns - stack.count_functions
    if fill < run.cfg["burst"] + run.cfg["warm"] or not extra_users:
        raise StepFailed("not enough filler functions for the burst and warm sets")
    t0 = time.perf_counter()
    with futures.ThreadPoolExecutor(2) as ex:
        toks = list(ex.map(stack.bulk.user, extra_users))
    for u, t in zip(extra_users, toks):
        stack.tokens[u] = t
        stack.users.add(u)
    plan = [(extra_users[i % len(extra_users)], f"f{i:04d}") for i in range(fill)]
    with futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda p: stack.bulk.deploy(stack.tokens[p[0]], p[1], FILLER_TS), plan))
    stack.count_functions += fill
    took = time.perf_counter() - t0
    log(f"  {len(stack.users)} users, {stack.count_functions} functions ({fill} deployed in {took:.1f}s)")
    stack.fillers = plan
    # The router sees deploys within a poll interval (250 ms); wait for the last one.
    u, nm = plan[-1]
    wait_http(f"{stack.rbase}/fn/{u}/{nm}", timeout=30)
    stack.warm_set = plan[-run.cfg["warm"]:]
    stack.burst_set = plan[:run.cfg["burst"]]
    time.sleep(1)
    run.results["raw"]["many"] = {"users": len(stack.users), "functions": stack.count_functions,
                                  "deploy_seconds": took}
    phase_lookup(run, stack)


def phase_lookup(run, stack):
    """5a: the same warm function through two routers of the same build, one
    whose directory holds every function and one started on a copy of the
    database taken when only /fn/alice/hello existed; runs alternate."""
    port = free_port()
    one = start_router(run, "router-one", port, 600, stack.db_one)
    url_one = f"http://127.0.0.1:{port}/fn/alice/hello"
    wait_http(url_one, timeout=30, proc=one)
    runs = {"one": [], "many": []}
    for _ in range(run.cfg["lookup_reps"]):
        for which, url in (("one", url_one), ("many", stack.urls["skiff"])):
            key = "lookup_1_function" if which == "one" else "lookup_many_functions"
            runs[which].append(loadgen_rate(run, key, url, run.cfg["lookup_rate"],
                                            run.cfg["lookup_secs"], warmup=1))
    run.results["raw"]["router_rss_kb_one"] = vm_rss_kb(one.pid)
    run.results["raw"]["router_rss_kb_many"] = vm_rss_kb(stack.router.pid)
    run.procs.stop("router-one")
    for which, n in (("one", 1), ("many", stack.count_functions)):
        p99s = [r["latency_ms"]["p99"] for r in runs[which]]
        p50s = [r["latency_ms"]["p50"] for r in runs[which]]
        d = {"functions": n, "p99_runs": p99s, "p50_runs": p50s, "p99": median(p99s),
             "p50": median(p50s), "errors": sum(r["errors"] + r["non_2xx"] for r in runs[which])}
        run.results["raw"]["lookup_1" if which == "one" else "lookup_many"] = d
        log(f"  with {n} function(s): p50 {d['p50']:.3f} p99 {d['p99']:.3f} ms (p99 runs {p99s})")
    log(f"  router RSS with {stack.count_functions} functions "
        f"{run.results['raw']['router_rss_kb_many'] / 1024:.1f} MB")
    # The same callgrind measurement as in phase_callgrind, now that the
    # database holds every function: instructions per request, 1 vs many.
    cgr = run.results["raw"].get("callgrind")
    if cgr and "skiff" in cgr:
        cg = run.logdir / "callgrind"
        cmds = run.results["commands"].setdefault("callgrind_many", [])
        many = callgrind_router(run, stack, "router-many", cg, run.cfg["callgrind_secs"], cmds)
        many["functions"] = stack.count_functions
        cgr["skiff_many_functions"] = many
        log(f"  instructions per request with {stack.count_functions} functions: "
            f"{many['ir_per_request']:,.0f} (with 1: {cgr['skiff']['ir_per_request']:,.0f})")
