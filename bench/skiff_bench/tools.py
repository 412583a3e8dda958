"""The load tools (wrk, bench/loadgen): running them, recording their command
lines and parsing their output."""

import json
import re
import subprocess

from .common import StepFailed

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_duration_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s.strip())
    if not m:
        raise ValueError(s)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    r["requests"] = int(m.group(1)) if m else None
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        r[f"p{q}_ms"] = parse_duration_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def run_cmd(run, key, argv, timeout):
    """Runs a load tool; records its exact command line under `key`."""
    run.commands(key).append(" ".join(argv))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    with open(run.logdir / "tools.log", "a") as f:
        f.write(f"$ {' '.join(argv)}\n{r.stdout}\n{r.stderr}\n")
    if r.returncode != 0:
        raise StepFailed(f"{argv[0]} exited {r.returncode}: {r.stderr.strip()[:500]}")
    return r.stdout


def wrk(run, key, url, duration):
    return parse_wrk(run_cmd(
        run, key, ["wrk", "-t2", "-c50", f"-d{duration}", "--latency", url], timeout=120))


def loadgen_rate(run, key, url, rate, secs, warmup=0, conns=16):
    argv = [run.args.loadgen, "rate", "--url", url, "--rate", str(rate),
            "--duration", str(secs), "--connections", str(conns)]
    if warmup:
        argv += ["--warmup", str(warmup)]
    r = json.loads(run_cmd(run, key, argv, timeout=secs + warmup + 120))
    if r["ok"] == 0:
        raise StepFailed(f"no successful request to {url}: {r.get('first_error')}")
    return r
