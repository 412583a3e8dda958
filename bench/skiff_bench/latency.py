"""2: added latency at a fixed rate (bench/loadgen), direct, Skiff and HAProxy."""

from .common import log
from .stats import median
from .tools import loadgen_rate


def phase_latency(run, stack):
    """Fixed rate, direct, router and HAProxy alternating `rounds` times; the
    median of each percentile counts. HAProxy's own added latency says how much
    of the router's is the extra hop itself."""
    cfg = run.cfg
    runs = {"direct": [], "skiff": [], "haproxy": []}
    for _ in range(cfg["rounds"]):
        for name in runs:
            r = loadgen_rate(run, f"latency_{name}", stack.urls[name], cfg["rate"],
                             cfg["rate_secs"], warmup=cfg["rate_warmup"])
            runs[name].append(r)
            lat = r["latency_ms"]
            log(f"  {name} at {cfg['rate']}/s: p50 {lat['p50']:.3f} p99 {lat['p99']:.3f} "
                f"p99.9 {lat['p999']:.3f} ms ({r['ok']} ok, {r['errors']} errors)")
    res = {}
    for name, rs in runs.items():
        res[name] = {
            "latency_ms": {q: median([r["latency_ms"][q] for r in rs])
                           for q in ("p50", "p90", "p99", "p999", "max")},
            "ok": sum(r["ok"] for r in rs), "errors": sum(r["errors"] for r in rs),
            "non_2xx": sum(r["non_2xx"] for r in rs),
            "runs": rs,
        }
    run.results["raw"]["latency"] = res
