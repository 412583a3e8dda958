"""Paths, the sizes of each mode, the targets, the sources deployed, logging."""

import time
from pathlib import Path

# bench/ (this package lives in bench/skiff_bench/) and the repository root.
HERE = Path(__file__).resolve().parent.parent
REPO = HERE.parent

# ---------------------------------------------------------------------------
# Sizes of each mode (issue 5: full figures; quick: proves the suite runs).

MODES = {
    "full": dict(
        wrk_duration="10s", wrk_warmup="2s", rounds=3, metrics_rounds=7,
        rate=2000, rate_secs=20, rate_warmup=1,
        lookup_rate=2000, lookup_secs=4, lookup_reps=5,
        deploys=20, cold_functions=50, cold_rounds=1,
        users=100, functions=1000, burst=50, warm=100,
        profile_secs=5, anatomy_starts=20, check_runs=3, callgrind_secs=10,
        deps_cold=5, deps_warm=10,
        noisy_secs=12, noisy_rate=200, noisy_conns=256,
    ),
    "quick": dict(
        wrk_duration="2s", wrk_warmup="1s", rounds=1, metrics_rounds=1,
        rate=500, rate_secs=3, rate_warmup=1,
        lookup_rate=500, lookup_secs=1, lookup_reps=2,
        deploys=3, cold_functions=10, cold_rounds=1,
        users=5, functions=50, burst=10, warm=10,
        profile_secs=0, anatomy_starts=3, check_runs=1, callgrind_secs=0,
        deps_cold=1, deps_warm=1,
        noisy_secs=3, noisy_rate=200, noisy_conns=256,
    ),
}

TARGETS = {
    "router_div_haproxy": (">=", 1.0),
    "added_p50_ms": ("<=", 0.15),
    "added_p99_ms": ("<=", 1.0),
    "cold_p50_ms": ("<=", 60.0),
    "cold_p99_ms": ("<=", 150.0),
    "deploy_p50_ms": ("<=", 1000.0),
    "lookup_p99_ratio": ("<=", 1.10),
    "rss_per_instance_mb": ("<=", 40.0),
    "burst_errors": ("<=", 0),
    "burst_p95_ms": ("<=", 1000.0),
    "noisy_b_errors": ("<=", 0),
    "noisy_p99_ratio": ("<=", 3.0),
}

PASSWORD = "bench password 1"

HELLO_TS = """export default (req: Request) =>
  new Response(`hello from ${new URL(req.url).pathname}\\n`);
"""
# Identical source for every filler and cold-start function: the deploy-time type
# check of an already-checked source is cached, so 1,000 deploys stay fast.
FILLER_TS = """export default (_req: Request) => new Response("ok\\n");
"""


def deploy_source(nonce):
    # A new source each time, as a real deploy would be: the type check is not cached.
    return (
        "const started = Date.now();\n"
        "export default (req: Request) =>\n"
        f"  new Response(`deploy {nonce} ${{new URL(req.url).pathname}} ${{started}}\\n`);\n"
    )


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class StepFailed(Exception):
    pass
