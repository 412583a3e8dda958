#!/usr/bin/env python3
"""Skiff benchmark driver. Run it through bench/run.sh, which builds and installs
what this needs and passes the paths in.

Everything runs on this machine and targets 127.0.0.1 only; every load is bounded
in requests and time. Every process this starts is recorded in a pid file and
stopped at the end (run.sh's trap stops them too if this is killed).
"""

import argparse
import concurrent.futures as futures
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# ---------------------------------------------------------------------------
# Sizes of each mode (issue 5: full figures; quick: proves the suite runs).

MODES = {
    "full": dict(
        wrk_duration="10s", wrk_warmup="2s", rounds=3,
        rate=2000, rate_secs=20, rate_warmup=1,
        lookup_rate=2000, lookup_secs=4, lookup_reps=5,
        deploys=20, cold_functions=50, cold_rounds=1,
        users=100, functions=1000, burst=50, warm=100,
        profile_secs=5, anatomy_starts=20, check_runs=3, callgrind_secs=10,
    ),
    "quick": dict(
        wrk_duration="2s", wrk_warmup="1s", rounds=1,
        rate=500, rate_secs=3, rate_warmup=1,
        lookup_rate=500, lookup_secs=1, lookup_reps=2,
        deploys=3, cold_functions=10, cold_rounds=1,
        users=5, functions=50, burst=10, warm=10,
        profile_secs=0, anatomy_starts=3, check_runs=1, callgrind_secs=0,
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


# ---------------------------------------------------------------------------
# Statistics


def pct(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    v = sorted(values)
    rank = max(1, min(len(v), int(-(-q * len(v) // 100))))
    return v[rank - 1]


def summary(values):
    if not values:
        return None
    return {
        "count": len(values),
        "min": min(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


# ---------------------------------------------------------------------------
# Processes


class Procs:
    """Processes started by this run, each in its own session; recorded in a pid file."""

    def __init__(self, pidfile, logdir):
        self.pidfile = pidfile
        self.logdir = logdir
        self.items = {}

    def _write(self):
        self.pidfile.write_text("".join(f"{p.pid}\n" for p in self.items.values()))

    def start(self, name, argv, env=None, cwd=None):
        logf = open(self.logdir / f"{name}.log", "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        p = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=cwd, start_new_session=True,
        )
        logf.close()
        self.items[name] = p
        self._write()
        return p

    def stop(self, name, timeout=15):
        p = self.items.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._write()

    def stop_all(self):
        for name in list(self.items)[::-1]:
            try:
                self.stop(name)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name}: {e}")

    def check_alive(self, name):
        p = self.items.get(name)
        if p is None or p.poll() is not None:
            raise StepFailed(f"{name} is not running (see {self.logdir / (name + '.log')})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30, ok=(200,), proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StepFailed(f"{url}: the process serving it exited with {proc.returncode}")
        try:
            st, _, _ = request("GET", url, timeout=2)
            if st in ok:
                return
            last = f"status {st}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise StepFailed(f"{url} did not answer {ok} within {timeout}s ({last})")


# ---------------------------------------------------------------------------
# /proc


def proc_children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == ppid:
                out.append(int(d))
        except (OSError, ValueError):
            pass
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def vm_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_split_kb(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "RssShmem", "Threads"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def instances_of(router_pid):
    """Deno instances the router started: {pid: module path}."""
    out = {}
    for pid in proc_children(router_pid):
        args = cmdline(pid)
        if "--module" in args:
            i = args.index("--module")
            if i + 1 < len(args):
                out[pid] = args[i + 1]
    return out


# ---------------------------------------------------------------------------
# HTTP (stdlib; for the API and for measurements on the millisecond scale)


def request(method, url, body=None, headers=None, timeout=30):
    """One request on a new connection: (status, body, seconds)."""
    assert url.startswith("http://127.0.0.1:"), url
    rest = url[len("http://"):]
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request(method, "/" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t0
    finally:
        conn.close()


class Api:
    def __init__(self, base):
        self.base = base

    def register(self, user):
        st, body, _ = request("POST", f"{self.base}/register",
                              json.dumps({"username": user, "password": PASSWORD}))
        if st not in (201, 409):
            raise StepFailed(f"register {user}: {st} {body[:200]!r}")

    def login(self, user):
        st, body, _ = request("POST", f"{self.base}/login",
                              json.dumps({"username": user, "password": PASSWORD}))
        if st != 200:
            raise StepFailed(f"login {user}: {st} {body[:200]!r}")
        return json.loads(body)["token"]

    def user(self, user):
        self.register(user)
        return self.login(user)

    def deploy(self, token, name, source):
        st, body, secs = request("POST", f"{self.base}/func?name={name}", source.encode(),
                                 {"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/typescript"}, timeout=120)
        if st not in (200, 201):
            raise StepFailed(f"deploy {name}: {st} {body[:300]!r}")
        return json.loads(body), secs


# ---------------------------------------------------------------------------
# Load tools

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


class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.cfg = dict(MODES[self.mode])
        for kv in args.set or []:
            k, _, v = kv.partition("=")
            if k not in self.cfg:
                raise SystemExit(f"--set: unknown setting {k}")
            self.cfg[k] = type(self.cfg[k])(v)
        self.out = Path(args.out)
        self.logdir = Path(args.logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        # Not under /tmp: instances get a private /tmp, which would cover it.
        self.work = Path(tempfile.mkdtemp(prefix="skb-", dir="/var/tmp"))
        os.chmod(self.work, 0o755)
        self.procs = Procs(Path(args.pidfile), self.logdir)
        self.deno = args.deno
        self.results = {
            "mode": self.mode,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "params": dict(self.cfg),
            "machine": machine_info(),
            "versions": {},
            "raw": {},
            "commands": {},
            "steps_failed": [],
            "nice": os.nice(0),
            "paths": {"loadgen": args.loadgen, "logdir": str(args.logdir)},
        }
        self.fig = {}

    # -- helpers -----------------------------------------------------------

    def run_cmd(self, key, argv, timeout):
        """Runs a load tool; records its exact command line under `key`."""
        self.results["commands"].setdefault(key, []).append(" ".join(argv))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        with open(self.logdir / "tools.log", "a") as f:
            f.write(f"$ {' '.join(argv)}\n{r.stdout}\n{r.stderr}\n")
        if r.returncode != 0:
            raise StepFailed(f"{argv[0]} exited {r.returncode}: {r.stderr.strip()[:500]}")
        return r.stdout

    def wrk(self, key, url, duration):
        return parse_wrk(self.run_cmd(
            key, ["wrk", "-t2", "-c50", f"-d{duration}", "--latency", url], timeout=120))

    def loadgen_rate(self, key, url, rate, secs, warmup=0, conns=16):
        argv = [self.args.loadgen, "rate", "--url", url, "--rate", str(rate),
                "--duration", str(secs), "--connections", str(conns)]
        if warmup:
            argv += ["--warmup", str(warmup)]
        r = json.loads(self.run_cmd(key, argv, timeout=secs + warmup + 120))
        if r["ok"] == 0:
            raise StepFailed(f"no successful request to {url}: {r.get('first_error')}")
        return r

    # -- services ----------------------------------------------------------

    def start_manager(self, name, deno):
        port = free_port()
        env = {
            "SKIFF_DATABASE_URL": f"sqlite://{self.db}",
            "SKIFF_JWT_SECRET": "bench-secret-" + "x" * 40,
            "SKIFF_ALLOW_SIGNUP": "true",
            "SKIFF_LISTEN": f"127.0.0.1:{port}",
            "SKIFF_DATA_DIR": str(self.work / name),
            "SKIFF_DENO": deno,
            "SKIFF_PUBLIC_URL": f"http://127.0.0.1:{self.router_port}",
            "SKIFF_LOGIN_LIMIT_PER_USER": "1000",
            "SKIFF_LOGIN_LIMIT_PER_USER_ADDR": "1000",
            "SKIFF_LOGIN_LIMIT_PER_ADDR": "100000",
            "SKIFF_REGISTER_LIMIT_PER_ADDR": "100000",
            "RUST_LOG": "warn",
        }
        p = self.procs.start(name, [self.args.manager], env=env)
        api = Api(f"http://127.0.0.1:{port}")
        wait_http(f"{api.base}/healthz", timeout=60, proc=p)
        return api

    def start_router(self, name, port, idle_secs, db=None):
        data = self.work / name
        env = {
            "SKIFF_DATABASE_URL": f"sqlite://{db or self.db}",
            "SKIFF_DATA_DIR": str(data),
            "SKIFF_LISTEN": f"127.0.0.1:{port}",
            "SKIFF_DENO": self.deno,
            "SKIFF_IDLE_TIMEOUT_SECS": str(idle_secs),
            "RUST_LOG": "warn",
        }
        p = self.procs.start(name, [self.args.router], env=env)
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=p)
        return p

    def start_direct(self, module):
        self.direct_port = free_port()
        argv = [self.deno, "run", "--allow-net", f"--allow-read={module.parent}",
                str(REPO / "client-runtime" / "main.ts"),
                "--module", str(module), "--listen", f"tcp:127.0.0.1:{self.direct_port}"]
        self.results["commands"]["direct_instance"] = [" ".join(argv)]
        self.direct = self.procs.start("deno-direct", argv)
        wait_http(f"http://127.0.0.1:{self.direct_port}/", timeout=60, proc=self.direct)

    def start_haproxy(self):
        self.haproxy_port = free_port()
        cfg = self.work / "haproxy.cfg"
        cfg.write_text(f"""# Plain keep-alive reverse proxy with prefix stripping (Skiff benchmark).
global
    maxconn 4096
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:{self.haproxy_port}
    default_backend fn
backend fn
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request replace-path /fn/alice/hello/?(.*) /\\1
    server direct 127.0.0.1:{self.direct_port}
""")
        self.results["raw"]["haproxy_cfg"] = cfg.read_text()
        p = self.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)])
        wait_http(f"http://127.0.0.1:{self.haproxy_port}/fn/alice/hello", timeout=30, proc=p)

    def start_nginx(self):
        self.nginx_port = free_port()
        d = self.work / "nginx"
        d.mkdir()
        cfg = d / "nginx.conf"
        cfg.write_text(f"""# Plain keep-alive reverse proxy with prefix stripping (Skiff benchmark).
daemon off;
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream fn {{
        server 127.0.0.1:{self.direct_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.nginx_port};
        location /fn/alice/hello {{
            rewrite ^/fn/alice/hello/?(.*)$ /$1 break;
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_buffering off;
        }}
    }}
}}
""")
        self.results["raw"]["nginx_conf"] = cfg.read_text()
        p = self.procs.start("nginx", ["nginx", "-c", str(cfg), "-p", str(d)])
        wait_http(f"http://127.0.0.1:{self.nginx_port}/fn/alice/hello", timeout=30, proc=p)

    # -- phases ------------------------------------------------------------

    def phase_setup(self):
        self.router_port = free_port()
        self.db = self.work / "skiff.db"
        self.api = self.start_manager("manager", self.deno)
        self.router = self.start_router("router", self.router_port, 600)
        self.rbase = f"http://127.0.0.1:{self.router_port}"
        self.tokens = {"alice": self.api.user("alice")}
        self.count_functions = 0
        self.users = {"alice"}
        info, _ = self.api.deploy(self.tokens["alice"], "hello", HELLO_TS)
        self.count_functions += 1
        log(f"deployed {info['url']}")
        # A second manager on the same database for the bulk deploys. Every bulk
        # source is FILLER_TS: its checker checks it once (in its sandbox, like
        # any check) and remembers the pass (by SHA-256) for the rest.
        self.bulk = self.start_manager("manager-bulk", self.deno)
        # A copy of the database as it is now (one function), for the router that
        # 5a compares against (sqlite3's online backup: a consistent snapshot).
        self.db_one = self.work / "one-function.db"
        src = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        dst = sqlite3.connect(self.db_one)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        hello = self.work / "hello.ts"
        hello.write_text(HELLO_TS)
        self.start_direct(hello)
        self.start_haproxy()
        self.start_nginx()
        self.urls = {
            "direct": f"http://127.0.0.1:{self.direct_port}/",
            "skiff": f"{self.rbase}/fn/alice/hello",
            "haproxy": f"http://127.0.0.1:{self.haproxy_port}/fn/alice/hello",
            "nginx": f"http://127.0.0.1:{self.nginx_port}/fn/alice/hello",
        }
        wait_http(self.urls["skiff"], timeout=30)
        bodies = {k: request("GET", u)[1] for k, u in self.urls.items()}
        if len(set(bodies.values())) != 1 or bodies["direct"] != b"hello from /\n":
            raise StepFailed(f"the four paths answer differently: {bodies}")
        log("direct, Skiff, HAProxy and nginx all answer 'hello from /'")
        self.results["raw"]["router_rss_kb_1fn"] = vm_rss_kb(self.router.pid)

    def phase_throughput(self):
        """wrk against each target in turn, `rounds` times (interleaved, so slow
        drift on the machine hits every target alike); the median run counts."""
        runs = {name: [] for name in ("direct", "skiff", "haproxy", "nginx")}
        for rnd in range(self.cfg["rounds"]):
            for name in runs:
                url = self.urls[name]
                self.wrk("warmup", url, self.cfg["wrk_warmup"])
                proxy_pids = self.proxy_pids(name)
                upstream = self.upstream_pids(name)
                c0, u0, w0 = cpu_ticks(proxy_pids), cpu_ticks(upstream), children_cpu()
                r = self.wrk(f"throughput_{name}", url, self.cfg["wrk_duration"])
                c1, u1, w1 = cpu_ticks(proxy_pids), cpu_ticks(upstream), children_cpu()
                if r["rps"] is None:
                    raise StepFailed(f"wrk gave no result for {name}")
                n = r["requests"] or 1
                r["cpu_ms_per_1k_req"] = {
                    "proxy": (c1 - c0) / CLK_TCK * 1e6 / n if proxy_pids else 0.0,
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
        self.results["raw"]["throughput"] = res
        if sum(r["non_2xx"] for r in runs["skiff"]) > sum(r["requests"] or 0 for r in runs["skiff"]) * 0.001:
            self.results["steps_failed"].append("throughput: Skiff answered non-2xx")

    def proxy_pids(self, name):
        if name == "skiff":
            return [self.router.pid]
        if name == "haproxy":
            return [self.procs.items["haproxy"].pid]
        if name == "nginx":
            master = self.procs.items["nginx"].pid
            return [master] + proc_children(master)
        return []

    def upstream_pids(self, name):
        if name == "skiff":
            return list(instances_of(self.router.pid))
        return [self.direct.pid]

    def phase_profile(self):
        """Evidence for 1a (not measured runs): per-request syscalls, context
        switches and CPU of each proxy under the same wrk load (`perf stat`), a
        call-graph profile of the router (`perf record --call-graph dwarf`), and
        where all CPUs went, by process (`perf record -a`)."""
        secs = self.cfg["profile_secs"]
        if not secs or not self.args.perf:
            return
        pdir = self.logdir / "profile"
        pdir.mkdir(exist_ok=True)
        cmds = self.results["commands"].setdefault("profile", [])
        prof = {"per_request": {}}
        # No hardware counters in this VM (instructions: <not supported>): time and
        # software events only.
        events = "raw_syscalls:sys_enter,context-switches,task-clock"
        for name in ("skiff", "haproxy", "nginx"):
            pids = self.proxy_pids(name)
            if name == "nginx":
                pids = pids[1:] or pids  # the workers
            argv = ["perf", "stat", "-x,", "-e", events, "-p", ",".join(map(str, pids)), "--",
                    "wrk", "-t2", "-c50", f"-d{secs}s", self.urls[name]]
            cmds.append(" ".join(argv))
            r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
            reqs = parse_wrk(r.stdout)["requests"] or 0
            vals = {}
            for line in r.stderr.splitlines():
                f = line.split(",")
                if len(f) > 2 and f[0].replace(".", "").isdigit():
                    vals[f[2]] = float(f[0])
            if reqs:
                prof["per_request"][name] = {
                    "requests": reqs,
                    "syscalls": vals.get("raw_syscalls:sys_enter", 0) / reqs,
                    "context_switches": vals.get("context-switches", 0) / reqs,
                    "cpu_us": vals.get("task-clock", 0) * 1e3 / reqs,
                }
        # Call graphs of the router (DWARF unwinding: the release build has no frame pointers).
        data = pdir / "router.perf.data"
        wrk = subprocess.Popen(["wrk", "-t2", "-c50", f"-d{secs + 2}s", self.urls["skiff"]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        rec = ["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", str(data),
               "-p", str(self.router.pid), "--", "sleep", str(secs)]
        cmds += [f"wrk -t2 -c50 -d{secs + 2}s {self.urls['skiff']} &", " ".join(rec)]
        subprocess.run(rec, capture_output=True, timeout=secs + 60)
        wrk.wait(timeout=secs + 30)
        reports = {
            "router-children.txt": ["--children", "--sort", "symbol", "--percent-limit", "1.5",
                                    "-g", "none"],
            "router-self.txt": ["--no-children", "--sort", "symbol", "--percent-limit", "0.7",
                                "-g", "none"],
            "router-by-dso.txt": ["--no-children", "--sort", "dso", "-g", "none"],
        }
        parsed = {}
        for fname, opts in reports.items():
            rep = ["perf", "report", "-i", str(data), "--stdio"] + opts
            cmds.append(" ".join(rep))
            r = subprocess.run(rep, capture_output=True, text=True, timeout=600)
            (pdir / fname).write_text(r.stdout)
            rows = []
            for line in r.stdout.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                m = re.match(r"\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?(.*)$", line)
                if m:
                    rest = re.split(r"\s{3,}", m.group(3).strip())[0]
                    rows.append({"percent": float(m.group(1)),
                                 "self": float(m.group(2)) if m.group(2) else None,
                                 "what": rest})
            parsed[fname] = rows
        prof["router_children"] = parsed["router-children.txt"][:60]
        prof["router_self"] = parsed["router-self.txt"][:30]
        prof["router_by_dso"] = parsed["router-by-dso.txt"][:10]
        # Whole system, by process.
        sysdata = pdir / "system.perf.data"
        wrk = subprocess.Popen(["wrk", "-t2", "-c50", f"-d{secs + 2}s", self.urls["skiff"]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        rec2 = ["perf", "record", "-F", "999", "-a", "-o", str(sysdata), "--", "sleep", str(secs)]
        subprocess.run(rec2, capture_output=True, timeout=secs + 60)
        wrk.wait(timeout=secs + 30)
        rep2 = ["perf", "report", "-i", str(sysdata), "--stdio", "--sort", "comm",
                "--percent-limit", "1"]
        r2 = subprocess.run(rep2, capture_output=True, text=True, timeout=300)
        (pdir / "system-by-comm.txt").write_text(r2.stdout)
        cmds += [f"wrk -t2 -c50 -d{secs + 2}s {self.urls['skiff']} &", " ".join(rec2), " ".join(rep2)]
        comms = []
        for line in r2.stdout.splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(.+?)\s*$", line)
            if m and not line.startswith("#"):
                comms.append({"percent": float(m.group(1)), "comm": m.group(2)})
        prof["system_by_comm"] = comms
        self.results["raw"]["profile"] = prof
        for k, v in prof["per_request"].items():
            log(f"  {k}: {v['syscalls']:.2f} syscalls, {v['context_switches']:.2f} context switches, "
                f"{v['cpu_us']:.1f} us CPU per request")

    def phase_callgrind(self):
        """Evidence for 1a and 2 that machine load cannot blur: user-space
        instructions per proxied request (valgrind callgrind), for the router and
        for HAProxy, each run under callgrind on its own port and sent the same
        fixed-rate load; counters are zeroed after a warm-up and dumped after."""
        secs = self.cfg["callgrind_secs"]
        if not secs or not self.args.perf or not shutil.which("valgrind"):
            return
        cg = self.logdir / "callgrind"
        cg.mkdir(exist_ok=True)
        cmds = self.results["commands"].setdefault("callgrind", [])
        out = {}
        # The router, on the same database (one function so far), with its own
        # data dir and instance.
        out["skiff"] = self.callgrind_router("router", cg, secs, cmds)
        # HAProxy with the same configuration on another port.
        hport = free_port()
        cfg = self.work / "haproxy-cg.cfg"
        cfg.write_text(self.results["raw"]["haproxy_cfg"].replace(
            f"bind 127.0.0.1:{self.haproxy_port}", f"bind 127.0.0.1:{hport}"))
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}/haproxy.out",
                "haproxy", "-db", "-f", str(cfg)]
        cmds.append(" ".join(argv))
        p = self.procs.start("haproxy-callgrind", argv)
        url = f"http://127.0.0.1:{hport}/fn/alice/hello"
        wait_http(url, timeout=180, proc=p)
        out["haproxy"] = self.callgrind_measure("haproxy", p, url, cg / "haproxy.out", secs, cmds)
        self.procs.stop("haproxy-callgrind", timeout=60)
        self.results["raw"]["callgrind"] = out
        log("  instructions per request: " + ", ".join(
            f"{k} {v['ir_per_request']:,.0f}" for k, v in out.items()))

    def callgrind_router(self, name, cg, secs, cmds):
        port = free_port()
        env = {"SKIFF_DATABASE_URL": f"sqlite://{self.db}",
               "SKIFF_DATA_DIR": str(self.work / f"{name}-cg"),
               "SKIFF_LISTEN": f"127.0.0.1:{port}", "SKIFF_DENO": self.deno, "RUST_LOG": "warn"}
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}/{name}.out",
                self.args.router]
        cmds.append(" ".join(argv))
        p = self.procs.start(f"{name}-callgrind", argv, env=env)
        url = f"http://127.0.0.1:{port}/fn/alice/hello"
        wait_http(url, timeout=180, proc=p)
        try:
            return self.callgrind_measure(name, p, url, cg / f"{name}.out", secs, cmds)
        finally:
            self.procs.stop(f"{name}-callgrind", timeout=60)

    def callgrind_measure(self, name, p, url, outfile, secs, cmds):
        rate = 200
        self.loadgen_rate("callgrind", url, rate, 2)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, timeout=60)
        r = self.loadgen_rate("callgrind", url, rate, secs)
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
        keys = {
            "Directory::lookup": "skiff_router::directory::Directory::lookup",
            "proxy::route": "skiff_router::proxy::route::{{closure}}",
            "strip_hop_by_hop": "skiff_router::proxy::strip_hop_by_hop",
            "add_forwarded": "skiff_router::proxy::add_forwarded",
            "Client::send_request": "hyper_util::client::legacy::client::Client<C,B>::send_request::{{closure}}",
            "sqlx fetch_all (change-feed poll)": "sqlx_core::query::Query<DB,A>::fetch_all::{{closure}}",
        }
        res["key_functions"] = {}
        for short, full in keys.items():
            for row in tables["inclusive"]:
                if row["function"] == full:
                    res["key_functions"][short] = row["ir_per_request"]
                    break
        res["inclusive"] = [x for x in tables["inclusive"] if x["percent"] < 70][:45]
        return res

    def phase_cold_anatomy(self):
        """Evidence for 3 and 6: the client runtime started the way the router
        starts it (flags of deno-flags.txt, no uid/cgroup), spawn → socket accepts
        → first response, with a fresh DENO_DIR per start and with one kept
        between starts (what the router does per version); the same kept start
        through the sandbox launcher with the router's layers ("sandboxed":
        Landlock, seccomp, private mount/IPC namespaces with a private /tmp,
        rlimits; no uid switch or cgroup); plus the CPU each start costs."""
        n = self.cfg["anatomy_starts"]
        if not n:
            return
        code = self.work / "anatomy-code"
        code.mkdir()
        (code / "fn.ts").write_text(FILLER_TS)
        shutil.copy(REPO / "client-runtime" / "main.ts", code / "main.ts")
        flags = []
        for line in (REPO / "client-runtime" / "deno-flags.txt").read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                flags.append(line)
        deny = ("127.0.0.0/8,0.0.0.0/8,[::],[::1],169.254.0.0/16,10.0.0.0/8,172.16.0.0/12,"
                "192.168.0.0/16,100.64.0.0/10,[fd00:ec2::254]")
        kept = self.work / "anatomy-kept-deno-dir"
        launcher = Path(self.args.manager).resolve().parent / "skiff-sandbox"
        kinds = ["fresh", "kept", "bare"] + (["sandboxed"] if launcher.exists() else [])
        res = {k: [] for k in kinds}
        bare = self.work / "bare.ts"
        bare.write_text('const path = Deno.args[0];\n'
                        'Deno.serve({ path, onListen() {} }, () => new Response("ok\\n"));\n')

        def one(kind, i):
            tmp = self.work / f"anatomy-{kind}-{i}"
            tmp.mkdir()
            # Padded like the router's (the launcher's seccomp filter allows
            # bind() for exactly this length).
            sock = tmp / ("s" + "_" * max(0, 107 - len(str(tmp)) - 2))
            if kind == "bare":
                argv = [self.deno, "run", "--allow-read", "--allow-write", "--allow-net",
                        str(bare), str(sock)]
            else:
                subst = {"{code_dir}": str(code), "{tmp_dir}": str(tmp), "{write_dirs}": str(tmp),
                         "{heap_mb}": "128", "{deny_net}": deny, "{main}": str(code / "main.ts")}
                argv = [self.deno]
                for fl in flags:
                    for k, v in subst.items():
                        fl = fl.replace(k, v)
                    argv.append(fl)
                argv += ["--module", str(code / "fn.ts"), "--listen", f"unix:{sock}"]
            if kind == "sandboxed":
                dd = str(kept) + kind
                argv = [str(launcher), "--ro", str(code), "--rx", self.deno, "--rw", str(tmp),
                        "--rw", dd, "--system-files", "--landlock", "--deny-tcp-bind",
                        "--seccomp", "--restrict-bind", "--bind-len", "16", "--bind-len", "28",
                        "--bind-len", str(len(str(sock)) + 3), "--namespaces",
                        "--private-tmp", str(64 << 20), "--hide", "/run", "--hide", "/dev/shm",
                        "--nofile", "1024", "--chdir", str(code), "--"] + argv
            env = {"DENO_DIR": str(tmp / ".deno") if kind == "fresh" else str(kept) + kind,
                   "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "PATH": "/usr/bin:/bin"}
            if i == 0:
                self.results["commands"].setdefault("cold_anatomy", []).append(
                    f"DENO_DIR={env['DENO_DIR']} " + " ".join(argv))
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, env=env, cwd=tmp, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while True:
                    if p.poll() is not None:
                        raise StepFailed(f"anatomy {kind}: deno exited {p.returncode}")
                    if time.perf_counter() - t0 > 30:
                        raise StepFailed(f"anatomy {kind}: not ready in 30 s")
                    s = socket.socket(socket.AF_UNIX)
                    try:
                        s.connect(str(sock))
                        break
                    except OSError:
                        s.close()
                        time.sleep(0.001)
                t1 = time.perf_counter()
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(4096):
                    pass
                t2 = time.perf_counter()
                s.close()
            finally:
                p.kill()
                # wait4 gives the child's CPU time to the microsecond.
                _, _, ru = os.wait4(p.pid, 0)
                p.returncode = -9
            cpu = (ru.ru_utime + ru.ru_stime) * 1e3
            shutil.rmtree(tmp, ignore_errors=True)
            return {"ready_ms": (t1 - t0) * 1e3, "first_response_ms": (t2 - t0) * 1e3, "cpu_ms": cpu}

        one("kept", -1)  # fills the kept DENO_DIRs
        one("bare", -1)
        if "sandboxed" in kinds:
            (Path(str(kept) + "sandboxed")).mkdir(exist_ok=True)
            one("sandboxed", -1)
        for i in range(n):
            for kind in kinds:
                res[kind].append(one(kind, i))
        out = {}
        for kind, rows in res.items():
            out[kind] = {k: summary([r[k] for r in rows]) for k in rows[0]}
        self.results["raw"]["cold_anatomy"] = out
        for kind, d in out.items():
            log(f"  {kind}: ready p50 {d['ready_ms']['p50']:.1f} ms, first response p50 "
                f"{d['first_response_ms']['p50']:.1f} p95 {d['first_response_ms']['p95']:.1f} ms, "
                f"CPU p50 {d['cpu_ms']['p50']:.0f} ms")

    def phase_latency(self):
        """Fixed rate, direct, router and HAProxy alternating `rounds` times; the
        median of each percentile counts. HAProxy's own added latency says how much
        of the router's is the extra hop itself."""
        runs = {"direct": [], "skiff": [], "haproxy": []}
        for _ in range(self.cfg["rounds"]):
            for name in runs:
                r = self.loadgen_rate(f"latency_{name}", self.urls[name], self.cfg["rate"],
                                      self.cfg["rate_secs"], warmup=self.cfg["rate_warmup"])
                runs[name].append(r)
                lat = r["latency_ms"]
                log(f"  {name} at {self.cfg['rate']}/s: p50 {lat['p50']:.3f} p99 {lat['p99']:.3f} "
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
        self.results["raw"]["latency"] = res

    def phase_deploy(self):
        user = "deployer"
        self.tokens[user] = self.api.user(user)
        self.users.add(user)
        samples = []
        for i in range(self.cfg["deploys"]):
            name = f"d{i:03d}"
            nonce = f"{time.time_ns()}-{i}"
            url = f"{self.rbase}/fn/{user}/{name}"
            t0 = time.perf_counter()
            _, post_s = self.api.deploy(self.tokens[user], name, deploy_source(nonce))
            t_post = time.perf_counter()
            polls, status = 0, None
            while True:
                status, body, _ = request("GET", url)
                polls += 1
                if status == 200:
                    break
                if status != 404 or time.perf_counter() - t0 > 60:
                    raise StepFailed(f"deploy {name}: router answered {status} {body[:200]!r}")
                time.sleep(0.005)
            t1 = time.perf_counter()
            if nonce.encode() not in body:
                raise StepFailed(f"deploy {name}: wrong body {body[:200]!r}")
            samples.append({"total_ms": (t1 - t0) * 1e3, "post_ms": post_s * 1e3,
                            "until_200_ms": (t1 - t_post) * 1e3, "polls": polls})
            self.count_functions += 1
        totals = [s["total_ms"] for s in samples]
        self.results["raw"]["deploy"] = {
            "total_ms": summary(totals),
            "post_ms": summary([s["post_ms"] for s in samples]),
            "until_200_ms": summary([s["until_200_ms"] for s in samples]),
            "samples": samples,
        }
        self.results["commands"]["deploy"] = [
            "bench/bench.py phase_deploy: POST /func?name=dNNN (a new source each time, so the "
            "type check is not cached), then GET /fn/deployer/dNNN every 5 ms until 200; "
            "time from sending the POST to the 200"]
        s = self.results["raw"]["deploy"]
        log(f"  deploy→200: p50 {s['total_ms']['p50']:.0f} p95 {s['total_ms']['p95']:.0f} ms "
            f"(POST p50 {s['post_ms']['p50']:.0f} ms, then {s['until_200_ms']['p50']:.0f} ms)")

    def phase_cold(self):
        """Cold starts on a second router whose instances stop after 1 s idle."""
        user = "coldu"
        self.tokens[user] = self.bulk.user(user)
        self.users.add(user)
        n = self.cfg["cold_functions"]
        names = [f"c{i:03d}" for i in range(n)]
        with futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda nm: self.bulk.deploy(self.tokens[user], nm, FILLER_TS), names))
        self.count_functions += n
        port = free_port()
        cold = self.start_router("router-cold", port, 1)
        base = f"http://127.0.0.1:{port}/fn/{user}"
        first, again = [], []

        def wait_idle():
            deadline = time.monotonic() + 60
            while instances_of(cold.pid):
                if time.monotonic() > deadline:
                    raise StepFailed("cold router: instances did not stop when idle")
                time.sleep(0.05)
            time.sleep(0.2)

        for rnd in range(1 + self.cfg["cold_rounds"]):
            if rnd:
                wait_idle()
            for nm in names:
                st, body, secs = request("GET", f"{base}/{nm}")
                if st != 200:
                    raise StepFailed(f"cold start {nm}: {st} {body[:200]!r}")
                (again if rnd else first).append(secs * 1e3)
        self.results["raw"]["cold"] = {
            "after_idle_ms": summary(again), "first_call_ms": summary(first),
            "samples_after_idle": again, "samples_first": first,
            "router_idle_timeout_s": 1,
        }
        self.results["commands"]["cold"] = [
            "skiff-router with SKIFF_IDLE_TIMEOUT_SECS=1 on the same database; "
            f"bench/bench.py phase_cold: GET /fn/coldu/cNNN for {n} functions in turn on a new "
            "connection each (first call after deploy: code written to disk, then spawn), "
            "wait until the router has stopped every instance, then the same again "
            "(after idle: the code is on disk); time from sending the request to the full response"]
        self.procs.stop("router-cold")
        a, f = self.results["raw"]["cold"]["after_idle_ms"], self.results["raw"]["cold"]["first_call_ms"]
        log(f"  cold after idle: p50 {a['p50']:.1f} p95 {a['p95']:.1f} p99 {a['p99']:.1f} ms; "
            f"first call: p50 {f['p50']:.1f} p99 {f['p99']:.1f} ms")

    def phase_deploy_anatomy(self):
        """Evidence for 4: the manager's deploy-time check (`deno check`, same
        arguments, files and shared DENO_DIR as manager/src/typecheck), timed alone."""
        n = self.cfg["check_runs"]
        if not n:
            return
        base = self.work / "check-anatomy"
        base.mkdir()
        deno_dir = base / "deno-cache"
        env_dts = (REPO / "client-runtime" / "svrless-env.d.ts").read_text()

        def check(d, source):
            d.mkdir(exist_ok=True)
            (d / "fn.ts").write_text(source)
            (d / "skiff-env.d.ts").write_text(env_dts)
            (d / "deno.json").write_text('{"compilerOptions":{"types":["./skiff-env.d.ts"]}}')
            argv = [self.deno, "check", "--no-remote", "--no-npm", "--no-lock", "--config",
                    "deno.json", "fn.ts"]
            t0 = time.perf_counter()
            r = subprocess.run(argv, cwd=d, capture_output=True, timeout=120,
                               env={"DENO_DIR": str(deno_dir), "NO_COLOR": "1",
                                    "DENO_NO_UPDATE_CHECK": "1", "HOME": str(d)})
            if r.returncode != 0:
                raise StepFailed(f"deno check failed: {r.stderr[:300]!r}")
            return (time.perf_counter() - t0) * 1e3

        self.results["commands"]["check_anatomy"] = [
            f"cd DIR && DENO_DIR={deno_dir} {self.deno} check --no-remote --no-npm --no-lock "
            "--config deno.json fn.ts   (DIR holds fn.ts, skiff-env.d.ts, deno.json as the manager writes them)"]
        check(base / "warmup", deploy_source("warmup"))
        res = {"new_source_new_dir": [], "new_source_same_dir": [], "same_source_same_dir": []}
        for i in range(n):
            res["new_source_new_dir"].append(check(base / f"new-{i}", deploy_source(f"a{i}")))
            res["new_source_same_dir"].append(check(base / "same", deploy_source(f"b{i}")))
            res["same_source_same_dir"].append(check(base / "same", deploy_source(f"b{i}")))
        out = {k: summary(v) for k, v in res.items()}
        self.results["raw"]["check_anatomy"] = out
        log("  deno check: " + ", ".join(f"{k} p50 {v['p50']:.0f} ms" for k, v in out.items()))

    def phase_many(self):
        """Brings the totals to cfg users / cfg functions, spread evenly."""
        want_users, want_fns = self.cfg["users"], self.cfg["functions"]
        extra_users = [f"u{i:03d}" for i in range(want_users - len(self.users))]
        fill = want_fns - self.count_functions
        if fill < self.cfg["burst"] + self.cfg["warm"] or not extra_users:
            raise StepFailed("not enough filler functions for the burst and warm sets")
        t0 = time.perf_counter()
        with futures.ThreadPoolExecutor(2) as ex:
            toks = list(ex.map(self.bulk.user, extra_users))
        for u, t in zip(extra_users, toks):
            self.tokens[u] = t
            self.users.add(u)
        plan = [(extra_users[i % len(extra_users)], f"f{i:04d}") for i in range(fill)]
        with futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda p: self.bulk.deploy(self.tokens[p[0]], p[1], FILLER_TS), plan))
        self.count_functions += fill
        took = time.perf_counter() - t0
        log(f"  {len(self.users)} users, {self.count_functions} functions ({fill} deployed in {took:.1f}s)")
        self.fillers = plan
        # The router sees deploys within a poll interval (250 ms); wait for the last one.
        u, nm = plan[-1]
        wait_http(f"{self.rbase}/fn/{u}/{nm}", timeout=30)
        self.warm_set = plan[-self.cfg["warm"]:]
        self.burst_set = plan[:self.cfg["burst"]]
        time.sleep(1)
        self.results["raw"]["many"] = {"users": len(self.users), "functions": self.count_functions,
                                       "deploy_seconds": took}
        self.phase_lookup()

    def phase_lookup(self):
        """5a: the same warm function through two routers of the same build, one
        whose directory holds every function and one started on a copy of the
        database taken when only /fn/alice/hello existed; runs alternate."""
        port = free_port()
        one = self.start_router("router-one", port, 600, db=self.db_one)
        url_one = f"http://127.0.0.1:{port}/fn/alice/hello"
        wait_http(url_one, timeout=30, proc=one)
        runs = {"one": [], "many": []}
        for _ in range(self.cfg["lookup_reps"]):
            for which, url in (("one", url_one), ("many", self.urls["skiff"])):
                key = "lookup_1_function" if which == "one" else "lookup_many_functions"
                runs[which].append(self.loadgen_rate(key, url, self.cfg["lookup_rate"],
                                                     self.cfg["lookup_secs"], warmup=1))
        self.results["raw"]["router_rss_kb_one"] = vm_rss_kb(one.pid)
        self.results["raw"]["router_rss_kb_many"] = vm_rss_kb(self.router.pid)
        self.procs.stop("router-one")
        for which, n in (("one", 1), ("many", self.count_functions)):
            p99s = [r["latency_ms"]["p99"] for r in runs[which]]
            p50s = [r["latency_ms"]["p50"] for r in runs[which]]
            d = {"functions": n, "p99_runs": p99s, "p50_runs": p50s, "p99": median(p99s),
                 "p50": median(p50s), "errors": sum(r["errors"] + r["non_2xx"] for r in runs[which])}
            self.results["raw"]["lookup_1" if which == "one" else "lookup_many"] = d
            log(f"  with {n} function(s): p50 {d['p50']:.3f} p99 {d['p99']:.3f} ms (p99 runs {p99s})")
        log(f"  router RSS with {self.count_functions} functions "
            f"{self.results['raw']['router_rss_kb_many'] / 1024:.1f} MB")
        # The same callgrind measurement as in phase_callgrind, now that the
        # database holds every function: instructions per request, 1 vs many.
        cgr = self.results["raw"].get("callgrind")
        if cgr and "skiff" in cgr:
            cg = self.logdir / "callgrind"
            cmds = self.results["commands"].setdefault("callgrind_many", [])
            many = self.callgrind_router("router-many", cg, self.cfg["callgrind_secs"], cmds)
            many["functions"] = self.count_functions
            cgr["skiff_many_functions"] = many
            log(f"  instructions per request with {self.count_functions} functions: "
                f"{many['ir_per_request']:,.0f} (with 1: {cgr['skiff']['ir_per_request']:,.0f})")

    def phase_burst(self):
        urls = [f"{self.rbase}/fn/{u}/{nm}" for u, nm in self.burst_set]
        running = set(instances_of(self.router.pid).values())
        if any(f"/{u}/{nm}/" in m for u, nm in self.burst_set for m in running):
            raise StepFailed("a burst function already has an instance")
        argv = [self.args.loadgen, "burst"]
        for u in urls:
            argv += ["--url", u]
        r0 = cpu_ticks([self.router.pid])
        t0 = time.monotonic()
        r = json.loads(self.run_cmd("burst", argv, timeout=180))
        wall = time.monotonic() - t0
        r1 = cpu_ticks([self.router.pid])
        inst = instances_of(self.router.pid)
        mine = [pid for pid, m in inst.items()
                if any(f"/functions/{u}/{nm}/" in m for u, nm in self.burst_set)]
        r["cpu"] = {
            "instances_found": len(mine),
            "instances_cpu_s": cpu_ticks(mine) / CLK_TCK,
            "router_cpu_s": (r1 - r0) / CLK_TCK,
            "wall_s_including_connects": wall,
            "cpus": os.cpu_count(),
        }
        self.results["commands"]["burst"] = [
            f"{self.args.loadgen} burst --url {urls[0]} ... ({len(urls)} --url, one per idle function)"]
        self.results["raw"]["burst"] = r
        lat = r["latency_ms"] or {}
        log(f"  burst of {len(urls)}: {r['ok']} ok, {r['non_2xx']} non-2xx, {r['errors']} errors, "
            f"p50 {lat.get('p50')} p95 {lat.get('p95')} max {lat.get('max')} ms; CPU {r['cpu']}")

    def phase_warm(self):
        urls = [f"{self.rbase}/fn/{u}/{nm}" for u, nm in self.warm_set]

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
        inst = instances_of(self.router.pid)
        wanted = {f"/functions/{u}/{nm}/" for u, nm in self.warm_set}
        mine = [pid for pid, m in inst.items() if any(w in m for w in wanted)]
        if len(mine) != len(self.warm_set):
            raise StepFailed(f"expected {len(self.warm_set)} warm instances, found {len(mine)}")
        rss = [vm_rss_kb(p) or 0 for p in mine]
        pss = [pss_kb(p) or 0 for p in mine]
        split = [rss_split_kb(p) for p in mine]
        self.results["raw"]["warm"] = {
            "instances": len(mine),
            "total_rss_mb": sum(rss) / 1024, "avg_rss_mb": sum(rss) / len(rss) / 1024,
            "max_rss_mb": max(rss) / 1024,
            "total_pss_mb": sum(pss) / 1024, "avg_pss_mb": sum(pss) / len(pss) / 1024,
            "avg_rss_anon_mb": sum(x.get("RssAnon", 0) for x in split) / len(split) / 1024,
            "avg_rss_file_mb": sum(x.get("RssFile", 0) for x in split) / len(split) / 1024,
            "avg_rss_shmem_mb": sum(x.get("RssShmem", 0) for x in split) / len(split) / 1024,
            "avg_threads": sum(x.get("Threads", 0) for x in split) / len(split),
            "all_router_instances": len(inst),
            "router_rss_kb": vm_rss_kb(self.router.pid),
        }
        self.results["commands"]["warm"] = [
            f"bench/bench.py phase_warm: GET each of {len(urls)} functions (4 at a time), twice, "
            "then sum VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of their Deno "
            "processes (children of skiff-router, found by their --module path)"]
        w = self.results["raw"]["warm"]
        log(f"  {w['instances']} warm instances: total RSS {w['total_rss_mb']:.0f} MB, "
            f"avg {w['avg_rss_mb']:.1f} MB (PSS avg {w['avg_pss_mb']:.1f} MB); "
            f"router RSS {w['router_rss_kb'] / 1024:.1f} MB")

    # -- run ---------------------------------------------------------------

    def run(self):
        self.results["versions"] = versions(self.args, self.deno)
        phases = [
            ("setup", self.phase_setup),
            ("throughput", self.phase_throughput),
            ("added latency", self.phase_latency),
            ("profile", self.phase_profile),
            ("callgrind", self.phase_callgrind),
            ("deploy to first success", self.phase_deploy),
            ("cold start", self.phase_cold),
            ("cold start anatomy", self.phase_cold_anatomy),
            ("deploy anatomy", self.phase_deploy_anatomy),
            ("many functions", self.phase_many),
            ("burst from zero", self.phase_burst),
            ("warm instances", self.phase_warm),
        ]
        if self.args.only:
            wanted = {w.strip() for w in self.args.only.split(",") if w.strip()}
            known = {n for n, _ in phases}
            if wanted - known:
                raise SystemExit(f"--only: unknown phase(s) {sorted(wanted - known)}; "
                                 f"known: {sorted(known)}")
            phases = [(n, f) for n, f in phases if n == "setup" or n in wanted]
            self.results["only"] = sorted(wanted)
        started = time.monotonic()
        ok = True
        try:
            for name, fn in phases:
                log(f"== {name}")
                t = time.monotonic()
                try:
                    fn()
                except Exception as e:
                    ok = False
                    log(f"FAILED {name}: {e}")
                    traceback.print_exc()
                    self.results["steps_failed"].append(f"{name}: {e}")
                    if name in ("setup",):
                        break
                    if name == "many functions":
                        break
                self.results.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t, 1)
                for svc in ("manager", "router"):
                    if svc in self.procs.items:
                        self.procs.check_alive(svc)
        finally:
            self.results["raw"]["router_rss_kb_end"] = (
                vm_rss_kb(self.router.pid) if hasattr(self, "router") else None)
            self.procs.stop_all()
            self.results["total_seconds"] = round(time.monotonic() - started, 1)
            try:
                self.results["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
            except OSError:
                pass
            self.figures()
            self.write()
            shutil.rmtree(self.work, ignore_errors=True)
        return ok and not self.results["steps_failed"]

    # -- figures and report ------------------------------------------------

    def figures(self):
        raw = self.results["raw"]
        figs = []

        def add(fid, name, skiff, peers=None, ratio=None, target_key=None, cmd=None, unit=""):
            tgt = TARGETS.get(target_key) if target_key else None
            judged = ratio if target_key and target_key.endswith(("ratio", "haproxy")) else skiff
            met = None
            if tgt and judged is not None:
                op, v = tgt
                met = judged >= v if op == ">=" else judged <= v
            figs.append({"id": fid, "name": name, "unit": unit, "skiff": skiff,
                         "peers": peers or {}, "ratio": ratio,
                         "target": f"{tgt[0]} {tgt[1]}" if tgt else None,
                         "target_key": target_key, "met": met,
                         "commands": list(dict.fromkeys(cmd or []))})

        c = self.results["commands"]
        t = raw.get("throughput")
        if t:
            sk = t["skiff"]["rps"]
            add("1a", f"Warm throughput, wrk -t2 -c50 (req/s; median of {self.cfg['rounds']} runs)", sk,
                {k: t[k]["rps"] for k in ("direct", "haproxy", "nginx")},
                sk / t["haproxy"]["rps"], "router_div_haproxy",
                [x for k in ("direct", "skiff", "haproxy", "nginx") for x in c.get(f"throughput_{k}", [])],
                "req/s")
            add("1b", "Warm throughput: p50 latency under load (ms; median of runs)", t["skiff"]["p50_ms_median"],
                {k: t[k]["p50_ms_median"] for k in ("direct", "haproxy", "nginx")}, unit="ms")
            add("1c", "Warm throughput: p99 latency under load (ms; median of runs)", t["skiff"]["p99_ms_median"],
                {k: t[k]["p99_ms_median"] for k in ("direct", "haproxy", "nginx")}, unit="ms")
            add("1d", "Router ÷ direct throughput", sk / t["direct"]["rps"],
                ratio=sk / t["direct"]["rps"])
            add("1e", "Proxy CPU per 1,000 requests (ms)", t["skiff"]["cpu_ms_per_1k_req"]["proxy"],
                {k: t[k]["cpu_ms_per_1k_req"]["proxy"] for k in ("haproxy", "nginx")},
                t["skiff"]["cpu_ms_per_1k_req"]["proxy"] / max(t["haproxy"]["cpu_ms_per_1k_req"]["proxy"], 1e-9),
                unit="ms")
        lat = raw.get("latency")
        if lat:
            d, s = lat["direct"]["latency_ms"], lat["skiff"]["latency_ms"]
            h = lat["haproxy"]["latency_ms"] if "haproxy" in lat else None
            rate = self.cfg["rate"]
            cmds = (c.get("latency_direct", []) + c.get("latency_skiff", [])
                    + c.get("latency_haproxy", []))
            n = self.cfg["rounds"]

            def peers(q):
                p = {"direct": d[q], "router (absolute)": s[q]}
                if h:
                    p["HAProxy added"] = h[q] - d[q]
                return p

            add("2a", f"Added latency at {rate} req/s, p50 (ms; median of {n} runs)", s["p50"] - d["p50"],
                peers("p50"), None, "added_p50_ms", cmds, "ms")
            add("2b", f"Added latency at {rate} req/s, p99 (ms; median of {n} runs)", s["p99"] - d["p99"],
                peers("p99"), None, "added_p99_ms", cmds, "ms")
            add("2c", f"Added latency at {rate} req/s, p99.9 (ms; median of {n} runs)", s["p999"] - d["p999"],
                peers("p999"), cmd=cmds, unit="ms")
        cold = raw.get("cold")
        if cold:
            a, f = cold["after_idle_ms"], cold["first_call_ms"]
            cc = c.get("cold", [])
            add("3a", f"Cold start after idle, p50 (ms, n={a['count']})", a["p50"], target_key="cold_p50_ms", cmd=cc, unit="ms")
            add("3b", f"Cold start after idle, p95 (ms, n={a['count']})", a["p95"], cmd=cc, unit="ms")
            add("3c", f"Cold start after idle, p99 (ms, n={a['count']})", a["p99"], target_key="cold_p99_ms", cmd=cc, unit="ms")
            add("3d", f"Cold start, first call after deploy, p50 (ms, n={f['count']})", f["p50"], target_key="cold_p50_ms", cmd=cc, unit="ms")
            add("3e", f"Cold start, first call after deploy, p99 (ms, n={f['count']})", f["p99"], target_key="cold_p99_ms", cmd=cc, unit="ms")
        dep = raw.get("deploy")
        if dep:
            cc = c.get("deploy", [])
            n = dep["total_ms"]["count"]
            add("4a", f"Deploy to first success, p50 (ms, n={n})", dep["total_ms"]["p50"],
                {"of which POST /func": dep["post_ms"]["p50"], "of which until 200": dep["until_200_ms"]["p50"]},
                target_key="deploy_p50_ms", cmd=cc, unit="ms")
            add("4b", f"Deploy to first success, p95 (ms, n={n})", dep["total_ms"]["p95"],
                {"of which POST /func": dep["post_ms"]["p95"], "of which until 200": dep["until_200_ms"]["p95"]},
                cmd=cc, unit="ms")
        l1, lm = raw.get("lookup_1"), raw.get("lookup_many")
        if l1 and lm:
            cc = c.get("lookup_1_function", [])[:1] + c.get("lookup_1000_functions", [])[:1]
            add("5a", f"Router latency, warm function, with {lm['functions']} functions vs {l1['functions']}: p99 (ms)",
                lm["p99"], {f"with {l1['functions']}": l1["p99"]}, lm["p99"] / l1["p99"],
                "lookup_p99_ratio", cc, "ms")
            add("5b", f"… same, p50 (ms)", lm["p50"], {f"with {l1['functions']}": l1["p50"]},
                lm["p50"] / l1["p50"], cmd=cc, unit="ms")
        cgr = raw.get("callgrind") or {}
        if "skiff" in cgr and "skiff_many_functions" in cgr:
            one, many = cgr["skiff"], cgr["skiff_many_functions"]
            nf = many["functions"]
            cc = c.get("callgrind", [])[:1] + c.get("callgrind_many", [])[:1]
            lk1 = one["key_functions"].get("Directory::lookup")
            lkn = many["key_functions"].get("Directory::lookup")
            if lk1 and lkn:
                add("5a1", f"`Directory::lookup` instructions per request, with {nf} functions vs 1 "
                    "(callgrind)", lkn, {"with 1": lk1}, lkn / lk1, cmd=cc)
            r1 = one["key_functions"].get("proxy::route")
            rn = many["key_functions"].get("proxy::route")
            if r1 and rn:
                add("5a2", f"`proxy::route` (the request path) instructions per request, with {nf} "
                    "functions vs 1 (callgrind)", rn, {"with 1": r1}, rn / r1, cmd=cc)
            add("5a3", "Router process instructions per request, incl. background change-feed polls, "
                f"with {nf} functions vs 1 (callgrind)", many["ir_per_request"],
                {"with 1": one["ir_per_request"]}, many["ir_per_request"] / one["ir_per_request"], cmd=cc)
        if raw.get("router_rss_kb_one") and raw.get("router_rss_kb_many"):
            m = raw.get("many", {})
            add("5c", f"Router RSS with {m.get('functions')} functions (MB), after the 5a runs",
                raw["router_rss_kb_many"] / 1024,
                {"router with 1 function": raw["router_rss_kb_one"] / 1024}, unit="MB",
                cmd=["VmRSS of each skiff-router from /proc/PID/status"])
        w = raw.get("warm")
        if w:
            cc = c.get("warm", [])
            add("5d", f"{w['instances']} warm instances: total RSS (MB)", w["total_rss_mb"],
                {"total PSS": w["total_pss_mb"]}, cmd=cc, unit="MB")
            add("5e", "RSS per warm instance (MB)", w["avg_rss_mb"],
                {"PSS": w["avg_pss_mb"], "RssAnon": w.get("avg_rss_anon_mb"),
                 "RssFile": w.get("avg_rss_file_mb")},
                target_key="rss_per_instance_mb", cmd=cc, unit="MB")
            add("5f", f"Router RSS with {w['instances']} warm instances (MB)", w["router_rss_kb"] / 1024,
                unit="MB", cmd=["VmRSS of skiff-router from /proc/PID/status"])
        b = raw.get("burst")
        if b:
            cc = c.get("burst", [])
            add("6a", f"Burst of {b['requests']} idle functions: errors", b["errors"] + b["non_2xx"],
                target_key="burst_errors", cmd=cc)
            if b.get("latency_ms"):
                add("6b", f"Burst of {b['requests']} idle functions: p95 (ms)", b["latency_ms"]["p95"],
                    {"p50": b["latency_ms"]["p50"], "max": b["latency_ms"]["max"],
                     "CPU s of the new instances": (b.get("cpu") or {}).get("instances_cpu_s"),
                     "router CPU s": (b.get("cpu") or {}).get("router_cpu_s")},
                    target_key="burst_p95_ms", cmd=cc, unit="ms")
        self.results["figures"] = figs

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        jpath = Path(self.args.json)
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(self.results, indent=2, sort_keys=False) + "\n")
        Path(self.args.markdown).write_text(report_markdown(self.results, self.args))
        log(f"wrote {jpath} and {self.args.markdown}")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_info():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    osname = platform.platform()
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "loadavg_at_start": load, "memory_gib": round(mem, 1) if mem else None,
            "os": osname, "kernel": platform.release()}


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (r.stdout or "") + (r.stderr or "")
        return text.strip().splitlines()[0] if text.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions(args, deno):
    git = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "skiff": f"{git}{' + uncommitted changes' if dirty else ''}",
        "rustc": first_line(["rustc", "-V"]),
        "deno": first_line([deno, "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "perf": first_line(["perf", "--version"]) if args.perf else None,
        "python": platform.python_version(),
    }


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if unit == "req/s" or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def report_markdown(res, args):
    loadgen_path = args.loadgen

    def clean(cmd):
        """Command lines as shown: the load generator by name, paths under the repository relative."""
        if loadgen_path:
            cmd = cmd.replace(loadgen_path, "loadgen")
        return cmd.replace(str(REPO) + "/", "")

    m, v = res["machine"], res["versions"]
    quick = res["mode"] == "quick"
    L = []
    L.append("# Skiff benchmarks" + (" (quick mode: small counts, figures not meaningful)" if quick else ""))
    L.append("")
    L.append("Generated by `bash bench/run.sh" + (" --quick" if quick else "") +
             "` (see `bench/README.md`); every figure below comes from that one run on one machine. "
             "Targets are from issue 5 and are reported, not asserted.")
    L.append("")
    L.append(f"- **Date:** {res['date']} (run took {res.get('total_seconds')} s after the build)")
    L.append(f"- **Machine:** {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, "
             f"{m['os']}, kernel {m['kernel']}; load average (1/5/15 min) at start "
             f"{' '.join(m.get('loadavg_at_start') or [])}, at end {' '.join(m.get('loadavg_at_end') or [])}")
    L.append("- **Versions:** " + "; ".join(f"{k} `{val}`" for k, val in v.items() if val))
    L.append("- **Build:** `cargo build --release` (workspace profile: thin LTO, 4 codegen units)")
    L.append(f"- **Priority:** every process of the run at nice {res.get('nice')} (other work on the "
             "machine at 0); all measured parties alike")
    if res["steps_failed"]:
        L.append(f"- **Steps that failed:** {'; '.join(res['steps_failed'])}")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("| # | figure | Skiff | direct | HAProxy | nginx | ratio | target | met? |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for f in res.get("figures", []):
        peers = dict(f["peers"])
        direct = peers.pop("direct", None)
        hap = peers.pop("haproxy", None)
        ngx = peers.pop("nginx", None)
        extra = "; ".join(f"{k} {fmt(val, f['unit'])}" for k, val in peers.items())
        sk = fmt(f["skiff"], f["unit"]) + (f" ({extra})" if extra else "")
        met = "–" if f["met"] is None else ("**yes**" if f["met"] else "**NO**")
        ratio = "–" if f["ratio"] is None else f"{f['ratio']:.2f}"
        L.append(f"| {f['id']} | {f['name']} | {sk} | {fmt(direct, f['unit'])} | {fmt(hap, f['unit'])} | "
                 f"{fmt(ngx, f['unit'])} | {ratio} | {f['target'] or '–'} | {met} |")
    L.append("")
    L.append("Ratios: 1a router ÷ HAProxy; 1d router ÷ direct; 1e router CPU ÷ HAProxy CPU per request; "
             "5a/5b with many functions ÷ with one. Added latency (2a–2c) = router percentile − direct "
             "percentile at the same fixed rate. Latencies are from the request being written to the "
             "last byte of the response.")
    L.append("")
    L.append("## What is measured, and how")
    L.append("")
    L.append(
        "- **The function** (`/fn/alice/hello`) answers `hello from <path>` "
        "(`export default (req: Request) => new Response(...)`). *Direct* is the same client runtime (`client-runtime/main.ts`) "
        "serving the same module on TCP (`deno run --allow-net client-runtime/main.ts --module hello.ts "
        "--listen tcp:127.0.0.1:PORT`). **Skiff's router talks to its own instance of the function** — "
        "a sandboxed Deno process it started (own uid, prlimit, cgroup, the flags of "
        "`client-runtime/deno-flags.txt`) — **over a Unix socket**, while HAProxy and nginx proxy over "
        "TCP to the direct instance. Both instances run the same program and module; the transports differ.")
    L.append(
        "- **HAProxy and nginx** are configured as plain keep-alive reverse proxies doing the same work "
        "as the router: strip `/fn/alice/hello`, add `X-Forwarded-For/-Proto/-Host`, reuse upstream "
        "connections (HAProxy `http-reuse always`, nginx `keepalive 64`), 2 threads / 2 workers each "
        "(the router runs tokio's default of one worker per CPU). Their configs are in `bench/results.json` "
        "(`raw.haproxy_cfg`, `raw.nginx_conf`).")
    L.append(
        "- **Fixed-rate latency** uses `bench/loadgen` (written for this suite, see `bench/README.md`): "
        "open-loop, a request due every 1/R s over 16 keep-alive connections, latency per request "
        "from write to last byte, nearest-rank percentiles. `wrk` measures throughput (closed loop, 50 "
        "connections).")
    L.append(
        "- **Skiff** runs as `skiff-manager` + `skiff-router` (release build) on SQLite, as root, so "
        "every instance gets its own uid, prlimit and (where the host allows) cgroups. Everything — "
        "load generator, proxies, Deno — shares the same 2 CPUs, so throughput is bounded by CPU "
        "per request of all parties together.")
    L.append("")
    L.append("## Commands")
    L.append("")
    L.append("Ports are picked at random at run time; `bench/results.json` holds the exact command lines of "
             "this run under `commands` (and each figure's under `figures[].commands`).")
    L.append("")
    groups = {}
    for f in res.get("figures", []):
        if f["commands"]:
            groups.setdefault(tuple(f["commands"]), []).append(f["id"])
    loadgen = args.loadgen
    for cmds, ids in groups.items():
        shown = [clean(c) for c in cmds]
        L.append(f"- **{', '.join(ids)}**: " + "<br>".join(f"`{c}`" for c in shown))
    L.append("")
    L.append(f"`loadgen` is `{loadgen}` (built from `bench/loadgen`).")
    L.append("")
    prof = res["raw"].get("profile")
    if prof:
        L.append("## Profiles (this run; not measured runs)")
        L.append("")
        L.append("Commands:")
        L.append("")
        for cmd in res["commands"].get("profile", []):
            L.append(f"    {clean(cmd)}")
        L.append("")
        L.append("Per request, each proxy under `wrk -t2 -c50` (`perf stat` on the proxy's own "
                 "processes/threads):")
        L.append("")
        L.append("| proxy | requests | syscalls / req | context switches / req | CPU µs / req |")
        L.append("|---|---|---|---|---|")
        for k, v in prof["per_request"].items():
            L.append(f"| {k} | {v['requests']:,} | {v['syscalls']:.2f} | {v['context_switches']:.2f} | "
                     f"{v['cpu_us']:.1f} |")
        L.append("")
        L.append("Where the CPUs went during the same load, by thread name (system-wide):")
        L.append("")
        L.append("| % of samples | thread |")
        L.append("|---|---|")
        for cm in prof["system_by_comm"][:12]:
            L.append(f"| {cm['percent']:.1f} | `{cm['comm']}` |")
        L.append("")
        L.append("Router, by object (self time):")
        L.append("")
        L.append("| % | object |")
        L.append("|---|---|")
        for t in prof["router_by_dso"][:8]:
            L.append(f"| {t['percent']:.1f} | `{t['what']}` |")
        L.append("")
        L.append("<details><summary>Router, inclusive time by function (call graphs)</summary>")
        L.append("")
        L.append("| incl. % | self % | function |")
        L.append("|---|---|---|")
        for t in prof["router_children"][:60]:
            sym = t["what"].replace("|", "\\|")
            L.append(f"| {t['percent']:.1f} | {t['self'] if t['self'] is not None else ''} | `{sym[:120]}` |")
        L.append("")
        L.append("</details>")
        L.append("")
        L.append("<details><summary>Router, self time by symbol</summary>")
        L.append("")
        L.append("| % | symbol |")
        L.append("|---|---|")
        for t in prof["router_self"][:30]:
            sym = t["what"].replace("|", "\\|")
            L.append(f"| {t['percent']:.2f} | `{sym[:120]}` |")
        L.append("")
        L.append("</details>")
        L.append("")
    cgr = res["raw"].get("callgrind")
    if cgr:
        L.append("## Instructions per request (valgrind callgrind; user space only)")
        L.append("")
        L.append("Not blurred by other load on the machine: each proxy runs under callgrind on its "
                 "own port and gets the same fixed-rate load; counters are zeroed after a warm-up. "
                 "Kernel work (syscalls, loopback TCP, scheduling) is not counted; see the perf "
                 "figures above for that. The router's figure includes its background change-feed "
                 "poll (every 250 ms; the `sqlx`/`sqlite3` rows below), spread over the requests.")
        L.append("")
        L.append("| proxy | requests | instructions / request |")
        L.append("|---|---|---|")
        for k, v in cgr.items():
            L.append(f"| {k} | {v['requests']:,} | {v['ir_per_request']:,.0f} |")
        L.append("")
        for cmd in res["commands"].get("callgrind", []):
            L.append(f"    {clean(cmd)}")
        L.append("")
        kf = [(k, v) for k, v in cgr.items() if v.get("key_functions")]
        if kf:
            names = list(dict.fromkeys(n for _, v in kf for n in v["key_functions"]))
            L.append("Selected functions, inclusive instructions per request:")
            L.append("")
            L.append("| function | " + " | ".join(k for k, _ in kf) + " |")
            L.append("|---|" + "---|" * len(kf))
            for n in names:
                L.append(f"| `{n}` | " + " | ".join(
                    f"{v['key_functions'][n]:,.0f}" if n in v["key_functions"] else "–" for _, v in kf) + " |")
            L.append("")
        sk = cgr.get("skiff")
        if sk:
            L.append("<details><summary>Router: inclusive instructions per request by function</summary>")
            L.append("")
            L.append("| instr. / req | % | function |")
            L.append("|---|---|---|")
            for t in sk["inclusive"]:
                fn = t["function"].replace("|", "\\|")
                L.append(f"| {t['ir_per_request']:,.0f} | {t['percent']:.1f} | `{fn[:130]}` |")
            L.append("")
            L.append("</details>")
            L.append("")
    an = res["raw"].get("cold_anatomy")
    if an:
        L.append("## Cold start anatomy (this run)")
        L.append("")
        L.append("The client runtime started by hand the way the router starts it (the flags of "
                 "`client-runtime/deno-flags.txt`, a Unix socket; no uid, prlimit or cgroup), "
                 "spawn → the socket accepts → the first response is read; CPU is the process's "
                 "user+system time (wait4). *fresh*: a new empty `DENO_DIR` per start, as the "
                 "router does (`<tmp_dir>/.deno`); *kept*: one `DENO_DIR` reused across starts; "
                 "*bare*: a 2-line `Deno.serve` on a Unix socket, no client runtime, kept `DENO_DIR` "
                 "(the floor: Deno itself).")
        L.append("")
        L.append("| variant | n | ready p50 (ms) | first response p50 / p95 (ms) | CPU p50 (ms) |")
        L.append("|---|---|---|---|---|")
        for kind, d in an.items():
            L.append(f"| {kind} | {d['ready_ms']['count']} | {d['ready_ms']['p50']:.1f} | "
                     f"{d['first_response_ms']['p50']:.1f} / {d['first_response_ms']['p95']:.1f} | "
                     f"{d['cpu_ms']['p50']:.1f} |")
        L.append("")
        for cmd in res["commands"].get("cold_anatomy", []):
            L.append(f"    {clean(cmd)}")
        L.append("")
    ca = res["raw"].get("check_anatomy")
    if ca:
        L.append("## Deploy-time type check alone (this run)")
        L.append("")
        L.append("`deno check` as `manager/src/typecheck` runs it (same arguments, files and one "
                 "shared `DENO_DIR`), timed alone. The manager checks every deploy in a new "
                 "temporary directory (*new source, new dir*).")
        L.append("")
        L.append("| case | n | p50 (ms) | max (ms) |")
        L.append("|---|---|---|---|")
        for k, d in ca.items():
            L.append(f"| {k.replace('_', ' ')} | {d['count']} | {d['p50']:.0f} | {d['max']:.0f} |")
        L.append("")
        for cmd in res["commands"].get("check_anatomy", []):
            L.append(f"    {clean(cmd)}")
        L.append("")
    findings = HERE / "findings.md"
    if findings.exists() and not quick:
        L.append(findings.read_text().rstrip())
        L.append("")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES, default="full")
    ap.add_argument("--render-only", action="store_true",
                    help="only write --markdown again from the results in --json")
    ap.add_argument("--manager")
    ap.add_argument("--router")
    ap.add_argument("--loadgen")
    ap.add_argument("--deno")
    ap.add_argument("--json", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--out")
    ap.add_argument("--logdir")
    ap.add_argument("--pidfile")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override one size of the mode (development)")
    ap.add_argument("--only", metavar="PHASE,...",
                    help="run only these phases after setup (before/after comparisons)")
    args = ap.parse_args()
    if args.render_only:
        res = json.loads(Path(args.json).read_text())
        args.loadgen = res.get("paths", {}).get("loadgen", "loadgen")
        args.logdir = res.get("paths", {}).get("logdir", "")
        Path(args.markdown).write_text(report_markdown(res, args))
        return
    missing = [k for k in ("manager", "router", "loadgen", "deno", "out", "logdir", "pidfile")
               if getattr(args, k) is None]
    if missing:
        ap.error("missing " + ", ".join("--" + k for k in missing))

    b = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    ok = b.run()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
