"""1: warm throughput (wrk) of direct, Skiff, HAProxy and nginx, with the CPU
each party spends per request."""

from .common import StepFailed, log
from .procfs import CLK_TCK, children_cpu, cpu_ticks, instances_of, proc_children
from .stats import median
from .tools import wrk


def proxy_pids(run, stack, name):
    """The processes of the proxy `name` (none for direct)."""
    if name == "skiff":
        return [stack.router.pid]
    if name == "haproxy":
        return [run.procs.items["haproxy"].pid]
    if name == "nginx":
        master = run.procs.items["nginx"].pid
        return [master] + proc_children(master)
    return []


def upstream_pids(stack, name):
    """The Deno processes behind the proxy `name`."""
    if name == "skiff":
        return list(instances_of(stack.router.pid))
    return [stack.direct.pid]


def phase_throughput(run, stack):
    """wrk against each target in turn, `rounds` times (interleaved, so slow
    drift on the machine hits every target alike); the median run counts."""
    cfg = run.cfg
    runs = {name: [] for name in ("direct", "skiff", "haproxy", "nginx")}
    for rnd in range(cfg["rounds"]):
        for name in runs:
            url = stack.urls[name]
            wrk(run, "warmup", url, cfg["wrk_warmup"])
            proxies = proxy_pids(run, stack, name)
            upstream = upstream_pids(stack, name)
            c0, u0, w0 = cpu_ticks(proxies), cpu_ticks(upstream), children_cpu()
            r = wrk(run, f"throughput_{name}", url, cfg["wrk_duration"])
            c1, u1, w1 = cpu_ticks(proxies), cpu_ticks(upstream), children_cpu()
            if r["rps"] is None:
                raise StepFailed(f"wrk gave no result for {name}")
            n = r["requests"] or 1
            r["cpu_ms_per_1k_req"] = {
                "proxy": (c1 - c0) / CLK_TCK * 1e6 / n if proxies else 0.0,
                "deno": (u1 - u0) / CLK_TCK * 1e6 / n,
                "wrk": (w1 - w0) * 1e6 / n,
            }
            if r["non_2xx"] or r["socket_errors"]:
                log(f"  {name}: {r['non_2xx']} non-2xx, {r['socket_errors']} socket errors")
            runs[name].append(r)
            log(f"  round {rnd + 1} {name}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, "
                f"p99 {r['p99_ms']} ms")
    res = {}
    for name, rs in runs.items():
        mid = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        res[name] = dict(mid)
        res[name]["rps_runs"] = [r["rps"] for r in rs]
        res[name]["p50_ms_median"] = median([r["p50_ms"] for r in rs])
        res[name]["p99_ms_median"] = median([r["p99_ms"] for r in rs])
        res[name]["cpu_ms_per_1k_req"] = {
            k: median([r["cpu_ms_per_1k_req"][k] for r in rs]) for k in ("proxy", "deno", "wrk")}
        res[name]["runs"] = rs
    run.results["raw"]["throughput"] = res
    if sum(r["non_2xx"] for r in runs["skiff"]) > sum(r["requests"] or 0 for r in runs["skiff"]) * 0.001:
        run.results["steps_failed"].append("throughput: Skiff answered non-2xx")
