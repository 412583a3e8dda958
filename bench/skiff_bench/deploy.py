"""4: deploy to first success (POST /func of a new source, then GET until 200),
and the manager's deploy-time type check timed alone."""

import json
import subprocess
import time

from .api import request
from .common import REPO, StepFailed, deploy_source, log
from .stats import summary


def phase_deploy(run, stack):
    user = "deployer"
    stack.tokens[user] = stack.api.user(user)
    stack.users.add(user)
    samples = []
    for i in range(run.cfg["deploys"]):
        name = f"d{i:03d}"
        nonce = f"{time.time_ns()}-{i}"
        url = f"{stack.rbase}/fn/{user}/{name}"
        t0 = time.perf_counter()
        _, post_s = stack.api.deploy(stack.tokens[user], name, deploy_source(nonce))
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
        stack.count_functions += 1
    totals = [s["total_ms"] for s in samples]
    run.results["raw"]["deploy"] = {
        "total_ms": summary(totals),
        "post_ms": summary([s["post_ms"] for s in samples]),
        "until_200_ms": summary([s["until_200_ms"] for s in samples]),
        "samples": samples,
    }
    run.results["commands"]["deploy"] = [
        "bench/bench.py phase_deploy: POST /func?name=dNNN (a new source each time, so the "
        "type check is not cached), then GET /fn/deployer/dNNN every 5 ms until 200; "
        "time from sending the POST to the 200"]
    s = run.results["raw"]["deploy"]
    log(f"  deploy→200: p50 {s['total_ms']['p50']:.0f} p95 {s['total_ms']['p95']:.0f} ms "
        f"(POST p50 {s['post_ms']['p50']:.0f} ms, then {s['until_200_ms']['p50']:.0f} ms)")


def phase_deploy_anatomy(run, stack):
    """Evidence for 4: the manager's deploy-time check (`deno check`, same
    arguments, files and shared DENO_DIR as manager/src/typecheck), timed alone."""
    n = run.cfg["check_runs"]
    if not n:
        return
    base = run.work / "check-anatomy"
    base.mkdir()
    deno_dir = base / "deno-cache"
    env_dts = (REPO / "client-runtime" / "svrless-env.d.ts").read_text()

    def check(d, source):
        d.mkdir(exist_ok=True)
        (d / "fn.ts").write_text(source)
        (d / "skiff-env.d.ts").write_text(env_dts)
        (d / "deno.json").write_text('{"compilerOptions":{"types":["./skiff-env.d.ts"]}}')
        argv = [run.deno, "check", "--no-remote", "--no-npm", "--no-lock", "--config",
                "deno.json", "fn.ts"]
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=d, capture_output=True, timeout=120,
                           env={"DENO_DIR": str(deno_dir), "NO_COLOR": "1",
                                "DENO_NO_UPDATE_CHECK": "1", "HOME": str(d)})
        if r.returncode != 0:
            raise StepFailed(f"deno check failed: {r.stderr[:300]!r}")
        return (time.perf_counter() - t0) * 1e3

    run.results["commands"]["check_anatomy"] = [
        f"cd DIR && DENO_DIR={deno_dir} {run.deno} check --no-remote --no-npm --no-lock "
        "--config deno.json fn.ts   (DIR holds fn.ts, skiff-env.d.ts, deno.json as the manager writes them)"]
    check(base / "warmup", deploy_source("warmup"))
    res = {"new_source_new_dir": [], "new_source_same_dir": [], "same_source_same_dir": []}
    for i in range(n):
        res["new_source_new_dir"].append(check(base / f"new-{i}", deploy_source(f"a{i}")))
        res["new_source_same_dir"].append(check(base / "same", deploy_source(f"b{i}")))
        res["same_source_same_dir"].append(check(base / "same", deploy_source(f"b{i}")))
    out = {k: summary(v) for k, v in res.items()}
    run.results["raw"]["check_anatomy"] = out
    log("  deno check: " + ", ".join(f"{k} p50 {v['p50']:.0f} ms" for k, v in out.items()))


HONO_ZOD = """import { Hono } from "npm:hono@4";
import { z } from "npm:zod@3";
const Item = z.object({ name: z.string().min(1) });
const app = new Hono();
app.get("/", (c) => c.text("deps NONCE"));
app.post("/items", async (c) => {
  const r = Item.safeParse(await c.req.json());
  return r.success ? c.json(r.data, 201) : c.json(r.error.issues, 400);
});
export default app;
"""


def _registries(run):
    """The compatibility suite's local npm registry (Verdaccio with hono and zod
    published): its URL. Started once per run, stopped with the run."""
    if getattr(run, "npm_registry", None):
        return run.npm_registry
    cache = subprocess.run(["bash", str(REPO / "tests/compat/prepare.sh")], check=True,
                           capture_output=True, text=True).stdout.strip()
    work = run.work / "registries"
    work.mkdir(exist_ok=True)
    argv = [run.deno, "run", "-A", str(REPO / "tests/compat/servers.ts"), "--cache", cache,
            "--work", str(work), "--no-stdin"]
    p = run.procs.start("registries", argv)
    logf = run.procs.logdir / "registries.log"
    deadline = time.time() + 180
    while time.time() < deadline:
        for line in logf.read_text(errors="replace").splitlines():
            if line.startswith("{\"npm\""):
                run.npm_registry = json.loads(line)["npm"]
                return run.npm_registry
        if p.poll() is not None:
            raise StepFailed(f"the local registries stopped: {logf.read_text()[-500:]}")
        time.sleep(0.2)
    raise StepFailed("the local registries did not start in 180 s")


def _deploy_until_200(api, rbase, token, user, name, source, nonce):
    url = f"{rbase}/fn/{user}/{name}"
    t0 = time.perf_counter()
    _, post_s = api.deploy(token, name, source)
    while True:
        status, body, _ = request("GET", url)
        if status == 200 and nonce.encode() in body:
            return (time.perf_counter() - t0) * 1e3, post_s * 1e3
        if status not in (404, 200) or time.perf_counter() - t0 > 120:
            raise StepFailed(f"deploy {name}: router answered {status} {body[:200]!r}")
        time.sleep(0.005)


def phase_deploy_deps(run, stack):
    """4c/4d: deploy to first success of a hono + zod app from a local npm registry,
    with a cold dependency cache (a new manager data dir each time, its bundler
    already fetched) and a warm one (the same manager again)."""
    from .services import start_manager
    npm = _registries(run)
    env = {"SKIFF_NPM_REGISTRY": npm, "SKIFF_EGRESS_TRUST": "127.0.0.1"}
    cold, warm = [], []
    rounds = run.cfg["deps_cold"]
    for r in range(rounds):
        name = f"mgr-deps-{r}"
        api = start_manager(run, name, stack.db, stack.router_port, run.deno, extra_env=env)
        user = f"deps{r}"
        token = api.user(user)
        # The bundler is fetched once per data dir: not part of the figure.
        nonce = f"warmup-{time.time_ns()}"
        _deploy_until_200(api, stack.rbase, token, user, "first", deploy_source(nonce), nonce)
        nonce = f"cold-{time.time_ns()}"
        total, _ = _deploy_until_200(api, stack.rbase, token, user, "app0",
                                     HONO_ZOD.replace("NONCE", nonce), nonce)
        cold.append(total)
        if r == 0:
            for i in range(run.cfg["deps_warm"]):
                nonce = f"warm-{time.time_ns()}-{i}"
                total, _ = _deploy_until_200(api, stack.rbase, token, user, f"app{i + 1}",
                                             HONO_ZOD.replace("NONCE", nonce), nonce)
                warm.append(total)
        run.procs.stop(name)
        stack.count_functions += 2 + (run.cfg["deps_warm"] if r == 0 else 0)
    run.results["raw"]["deploy_deps"] = {"cold_ms": summary(cold), "warm_ms": summary(warm),
                                          "cold": cold, "warm": warm}
    run.results["commands"]["deploy_deps"] = [
        "tests/compat/servers.ts (Verdaccio with hono@4 and zod@3 published, on loopback); "
        "skiff-manager with SKIFF_NPM_REGISTRY=<it> SKIFF_EGRESS_TRUST=127.0.0.1; "
        "POST /func of a hono + zod app (new nonce each time), then GET until 200. "
        "Cold: a new manager data dir (empty Deno cache; the bundler fetched by a first "
        "dependency-free deploy), one deploy each; warm: further deploys on the first one"]
    log(f"  deploy→200 hono+zod: cold p50 {summary(cold)['p50']:.0f} ms (n={len(cold)}), "
        f"warm p50 {summary(warm)['p50']:.0f} ms (n={len(warm)})")
