"""3: cold starts through a router whose instances stop after 1 s idle, and the
anatomy of one start (the client runtime started by hand the router's way)."""

import concurrent.futures as futures
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .api import request
from .common import FILLER_TS, REPO, StepFailed, log
from .procfs import instances_of
from .procs import free_port
from .services import start_router
from .stats import summary


def phase_cold(run, stack):
    """Cold starts on a second router whose instances stop after 1 s idle."""
    user = "coldu"
    stack.tokens[user] = stack.bulk.user(user)
    stack.users.add(user)
    n = run.cfg["cold_functions"]
    names = [f"c{i:03d}" for i in range(n)]
    with futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda nm: stack.bulk.deploy(stack.tokens[user], nm, FILLER_TS), names))
    stack.count_functions += n
    port = free_port()
    cold = start_router(run, "router-cold", port, 1, stack.db)
    base = f"http://127.0.0.1:{port}/fn/{user}"
    first, again = [], []

    def wait_idle():
        deadline = time.monotonic() + 60
        while instances_of(cold.pid):
            if time.monotonic() > deadline:
                raise StepFailed("cold router: instances did not stop when idle")
            time.sleep(0.05)
        time.sleep(0.2)

    for rnd in range(1 + run.cfg["cold_rounds"]):
        if rnd:
            wait_idle()
        for nm in names:
            st, body, secs = request("GET", f"{base}/{nm}")
            if st != 200:
                raise StepFailed(f"cold start {nm}: {st} {body[:200]!r}")
            (again if rnd else first).append(secs * 1e3)
    run.results["raw"]["cold"] = {
        "after_idle_ms": summary(again), "first_call_ms": summary(first),
        "samples_after_idle": again, "samples_first": first,
        "router_idle_timeout_s": 1,
    }
    run.results["commands"]["cold"] = [
        "skiff-router with SKIFF_IDLE_TIMEOUT_SECS=1 on the same database; "
        f"bench/bench.py phase_cold: GET /fn/coldu/cNNN for {n} functions in turn on a new "
        "connection each (first call after deploy: code written to disk, then spawn), "
        "wait until the router has stopped every instance, then the same again "
        "(after idle: the code is on disk); time from sending the request to the full response"]
    run.procs.stop("router-cold")
    a, f = run.results["raw"]["cold"]["after_idle_ms"], run.results["raw"]["cold"]["first_call_ms"]
    log(f"  cold after idle: p50 {a['p50']:.1f} p95 {a['p95']:.1f} p99 {a['p99']:.1f} ms; "
        f"first call: p50 {f['p50']:.1f} p99 {f['p99']:.1f} ms")


def phase_cold_anatomy(run, stack):
    """Evidence for 3 and 6: the client runtime started the way the router
    starts it (flags of deno-flags.txt, no uid/cgroup), spawn → socket accepts
    → first response, with a fresh DENO_DIR per start and with one kept
    between starts (what the router does per version); the same kept start
    through the sandbox launcher with the router's layers ("sandboxed":
    Landlock, seccomp, private mount/IPC namespaces with a private /tmp,
    rlimits; no uid switch or cgroup); plus the CPU each start costs."""
    n = run.cfg["anatomy_starts"]
    if not n:
        return
    code = run.work / "anatomy-code"
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
    kept = run.work / "anatomy-kept-deno-dir"
    launcher = Path(run.args.manager).resolve().parent / "skiff-sandbox"
    kinds = ["fresh", "kept", "bare"] + (["sandboxed"] if launcher.exists() else [])
    res = {k: [] for k in kinds}
    bare = run.work / "bare.ts"
    bare.write_text('const path = Deno.args[0];\n'
                    'Deno.serve({ path, onListen() {} }, () => new Response("ok\\n"));\n')

    def one(kind, i):
        tmp = run.work / f"anatomy-{kind}-{i}"
        tmp.mkdir()
        # Padded like the router's (the launcher's seccomp filter allows
        # bind() for exactly this length).
        sock = tmp / ("s" + "_" * max(0, 107 - len(str(tmp)) - 2))
        if kind == "bare":
            argv = [run.deno, "run", "--allow-read", "--allow-write", "--allow-net",
                    str(bare), str(sock)]
        else:
            subst = {"{code_dir}": str(code), "{tmp_dir}": str(tmp), "{write_dirs}": str(tmp),
                     "{heap_mb}": "128", "{deny_net}": deny, "{main}": str(code / "main.ts"),
                     # No env (the router's flags for a function without any).
                     "{env}": "--deny-env", "{env_file}": ""}
            argv = [run.deno]
            for fl in flags:
                for k, v in subst.items():
                    fl = fl.replace(k, v)
                argv.append(fl)
            argv += ["--module", str(code / "fn.ts"), "--listen", f"unix:{sock}"]
        if kind == "sandboxed":
            dd = str(kept) + kind
            argv = [str(launcher), "--ro", str(code), "--rx", run.deno, "--rw", str(tmp),
                    "--rw", dd, "--system-files", "--landlock", "--deny-tcp-bind",
                    "--seccomp", "--restrict-bind", "--bind-len", "16", "--bind-len", "28",
                    "--bind-len", str(len(str(sock)) + 3), "--namespaces",
                    "--private-tmp", str(64 << 20), "--hide", "/run", "--hide", "/dev/shm",
                    "--nofile", "1024", "--chdir", str(code), "--"] + argv
        env = {"DENO_DIR": str(tmp / ".deno") if kind == "fresh" else str(kept) + kind,
               "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "PATH": "/usr/bin:/bin"}
        if i == 0:
            run.results["commands"].setdefault("cold_anatomy", []).append(
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
    run.results["raw"]["cold_anatomy"] = out
    for kind, d in out.items():
        log(f"  {kind}: ready p50 {d['ready_ms']['p50']:.1f} ms, first response p50 "
            f"{d['first_response_ms']['p50']:.1f} p95 {d['first_response_ms']['p95']:.1f} ms, "
            f"CPU p50 {d['cpu_ms']['p50']:.0f} ms")
