"""Starting Skiff's services and the direct instance for a run."""

from .api import Api, wait_http
from .common import REPO
from .procs import free_port

# The key every service of a run seals and opens function secrets with
# (SKIFF_SECRETS_KEY; the bench functions have none, but both services need it).
SECRETS_KEY = "b3" * 32

# The per-user quotas out of the way: the bench measures the data path with one
# user's functions at tens of thousands of requests per second and, in the
# density phases, many functions and instances of one user. The noisy-neighbour
# phase sets its own rate.
NO_QUOTAS = {
    # What the services would set for themselves by starting again
    # (core/src/memory.rs); set here, so valgrind measures the service and
    # not a process that left it behind with its exec.
    "MALLOC_ARENA_MAX": "2",
    "SKIFF_QUOTA_FUNCTIONS": "1000000",
    "SKIFF_QUOTA_VERSIONS": "1000",
    "SKIFF_QUOTA_ARTIFACT_BYTES": str(1 << 50),
    "SKIFF_QUOTA_RPS": "1000000000",
    "SKIFF_QUOTA_INSTANCES": "1000000",
}


def metrics_env():
    """A metrics listener of its own for each router and manager of a run:
    several run at once, and the default addresses (127.0.0.1:9464 and :9465)
    are one port each."""
    return {"SKIFF_METRICS_LISTEN": f"127.0.0.1:{free_port()}"}


# Per-request metrics, stats, access log and Server-Timing off: the router as
# it was before issue 14, to measure what they cost.
NO_METRICS = {"SKIFF_REQUEST_METRICS": "false", "SKIFF_SERVER_TIMING": "false"}


def start_manager(run, name, db, router_port, deno, extra_env=None):
    """A manager on `db` whose public URL is the router's; returns its `Api`."""
    port = free_port()
    env = {
        "SKIFF_DATABASE_URL": f"sqlite://{db}",
        "SKIFF_JWT_SECRET": "bench-secret-" + "x" * 40,
        "SKIFF_SECRETS_KEY": SECRETS_KEY,
        "SKIFF_ALLOW_SIGNUP": "true",
        "SKIFF_LISTEN": f"127.0.0.1:{port}",
        "SKIFF_DATA_DIR": str(run.work / name),
        "SKIFF_DENO": deno,
        "SKIFF_PUBLIC_URL": f"http://127.0.0.1:{router_port}",
        "SKIFF_LOGIN_LIMIT_PER_USER": "1000",
        "SKIFF_LOGIN_LIMIT_PER_USER_ADDR": "1000",
        "SKIFF_LOGIN_LIMIT_PER_ADDR": "100000",
        "SKIFF_REGISTER_LIMIT_PER_ADDR": "100000",
        "RUST_LOG": "warn",
        **metrics_env(),
        **NO_QUOTAS,
        **(extra_env or {}),
    }
    p = run.procs.start(name, [run.args.manager], env=env)
    api = Api(f"http://127.0.0.1:{port}")
    wait_http(f"{api.base}/healthz", timeout=60, proc=p)
    return api


def start_router(run, name, port, idle_secs, db, extra_env=None):
    """A router on `db` listening on `port`; returns its process."""
    data = run.work / name
    env = {
        "SKIFF_DATABASE_URL": f"sqlite://{db}",
        "SKIFF_DATA_DIR": str(data),
        "SKIFF_SECRETS_KEY": SECRETS_KEY,
        "SKIFF_LISTEN": f"127.0.0.1:{port}",
        "SKIFF_DENO": run.deno,
        "SKIFF_IDLE_TIMEOUT_SECS": str(idle_secs),
        "RUST_LOG": "warn",
        **metrics_env(),
        **NO_QUOTAS,
        **(extra_env or {}),
    }
    p = run.procs.start(name, [run.args.router], env=env)
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=p)
    return p


def start_direct(run, module):
    """The client runtime serving `module` on TCP, as HAProxy's and nginx's
    upstream: returns (process, port)."""
    port = free_port()
    argv = [run.deno, "run", "--allow-net", f"--allow-read={module.parent}",
            str(REPO / "client-runtime" / "main.ts"),
            "--module", str(module), "--listen", f"tcp:127.0.0.1:{port}"]
    run.results["commands"]["direct_instance"] = [" ".join(argv)]
    direct = run.procs.start("deno-direct", argv)
    wait_http(f"http://127.0.0.1:{port}/", timeout=60, proc=direct)
    return direct, port
