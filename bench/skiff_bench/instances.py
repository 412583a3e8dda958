"""6: a burst to never-started functions at the same instant, and 5d: many
instances warm at once, with their memory."""

import concurrent.futures as futures
import json
import os
import sqlite3
import time

from .api import request
from .common import StepFailed, log
from .procfs import CLK_TCK, cpu_ticks, instances_of, pss_kb, rss_split_kb, vm_rss_kb
from .tools import run_cmd


def module_marks(db, pairs):
    """What an instance's --module path holds for each (user, name): the router
    keeps a function's code under <data>/functions/<function id>/v<version>/."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT u.username, f.name, f.id FROM functions f "
                           "JOIN users u ON u.id = f.user_id").fetchall()
    finally:
        con.close()
    ids = {(u, nm): i for u, nm, i in rows}
    missing = [p for p in pairs if p not in ids]
    if missing:
        raise StepFailed(f"not in the database: {missing[:3]}")
    return {f"/functions/{ids[p]}/" for p in pairs}


def phase_burst(run, stack):
    urls = [f"{stack.rbase}/fn/{u}/{nm}" for u, nm in stack.burst_set]
    marks = module_marks(stack.db, stack.burst_set)
    running = set(instances_of(stack.router.pid).values())
    if any(k in m for k in marks for m in running):
        raise StepFailed("a burst function already has an instance")
    argv = [run.args.loadgen, "burst"]
    for u in urls:
        argv += ["--url", u]
    r0 = cpu_ticks([stack.router.pid])
    t0 = time.monotonic()
    r = json.loads(run_cmd(run, "burst", argv, timeout=180))
    wall = time.monotonic() - t0
    r1 = cpu_ticks([stack.router.pid])
    inst = instances_of(stack.router.pid)
    mine = [pid for pid, m in inst.items() if any(k in m for k in marks)]
    r["cpu"] = {
        "instances_found": len(mine),
        "instances_cpu_s": cpu_ticks(mine) / CLK_TCK,
        "router_cpu_s": (r1 - r0) / CLK_TCK,
        "wall_s_including_connects": wall,
        "cpus": os.cpu_count(),
    }
    run.results["commands"]["burst"] = [
        f"{run.args.loadgen} burst --url {urls[0]} ... ({len(urls)} --url, one per idle function)"]
    run.results["raw"]["burst"] = r
    lat = r["latency_ms"] or {}
    log(f"  burst of {len(urls)}: {r['ok']} ok, {r['non_2xx']} non-2xx, {r['errors']} errors, "
        f"p50 {lat.get('p50')} p95 {lat.get('p95')} max {lat.get('max')} ms; CPU {r['cpu']}")


def phase_warm(run, stack):
    urls = [f"{stack.rbase}/fn/{u}/{nm}" for u, nm in stack.warm_set]

    def call(u):
        st, body, _ = request("GET", u)
        if st != 200:
            raise StepFailed(f"warm {u}: {st} {body[:200]!r}")

    with futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(call, urls))
    time.sleep(2)
    # Every one once more: all must still be warm (no instance stopped).
    with futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(call, urls))
    time.sleep(1)
    inst = instances_of(stack.router.pid)
    wanted = module_marks(stack.db, stack.warm_set)
    mine = [pid for pid, m in inst.items() if any(w in m for w in wanted)]
    if len(mine) != len(stack.warm_set):
        raise StepFailed(f"expected {len(stack.warm_set)} warm instances, found {len(mine)}")
    rss = [vm_rss_kb(p) or 0 for p in mine]
    pss = [pss_kb(p) or 0 for p in mine]
    split = [rss_split_kb(p) for p in mine]
    run.results["raw"]["warm"] = {
        "instances": len(mine),
        "total_rss_mb": sum(rss) / 1024, "avg_rss_mb": sum(rss) / len(rss) / 1024,
        "max_rss_mb": max(rss) / 1024,
        "total_pss_mb": sum(pss) / 1024, "avg_pss_mb": sum(pss) / len(pss) / 1024,
        "avg_rss_anon_mb": sum(x.get("RssAnon", 0) for x in split) / len(split) / 1024,
        "avg_rss_file_mb": sum(x.get("RssFile", 0) for x in split) / len(split) / 1024,
        "avg_rss_shmem_mb": sum(x.get("RssShmem", 0) for x in split) / len(split) / 1024,
        "avg_threads": sum(x.get("Threads", 0) for x in split) / len(split),
        "all_router_instances": len(inst),
        "router_rss_kb": vm_rss_kb(stack.router.pid),
    }
    run.results["commands"]["warm"] = [
        f"bench/bench.py phase_warm: GET each of {len(urls)} functions (4 at a time), twice, "
        "then sum VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of their Deno "
        "processes (children of skiff-router, found by their --module path)"]
    w = run.results["raw"]["warm"]
    log(f"  {w['instances']} warm instances: total RSS {w['total_rss_mb']:.0f} MB, "
        f"avg {w['avg_rss_mb']:.1f} MB (PSS avg {w['avg_pss_mb']:.1f} MB); "
        f"router RSS {w['router_rss_kb'] / 1024:.1f} MB")

# -- run ---------------------------------------------------------------
