"""The setup phase: manager, router, the hello function, a bulk manager, the
direct instance, HAProxy and nginx; all four paths must answer alike."""

import sqlite3

from .api import request, wait_http
from .common import HELLO_TS, StepFailed, log
from .procfs import vm_rss_kb
from .procs import free_port
from .proxies import start_haproxy, start_nginx
from .services import start_direct, start_manager, start_router


def phase_setup(run, stack):
    stack.router_port = free_port()
    stack.db = run.work / "skiff.db"
    # The manager tells the router of each deploy (SKIFF_ROUTER_NOTIFY) on the
    # router's private listener, as an operator running both would set it.
    private = f"127.0.0.1:{free_port()}"
    stack.api = start_manager(run, "manager", stack.db, stack.router_port, run.deno,
                              extra_env={"SKIFF_ROUTER_NOTIFY": private})
    stack.router = start_router(run, "router", stack.router_port, 600, stack.db,
                                extra_env={"SKIFF_METRICS_LISTEN": private})
    stack.rbase = f"http://127.0.0.1:{stack.router_port}"
    stack.tokens = {"alice": stack.api.user("alice")}
    stack.count_functions = 0
    stack.users = {"alice"}
    info, _ = stack.api.deploy(stack.tokens["alice"], "hello", HELLO_TS)
    stack.count_functions += 1
    log(f"deployed {info['url']}")
    # A second manager on the same database for the bulk deploys. Every bulk
    # source is FILLER_TS: its checker checks it once (in its sandbox, like
    # any check) and remembers the pass (by SHA-256) for the rest.
    stack.bulk = start_manager(run, "manager-bulk", stack.db, stack.router_port, run.deno)
    # A copy of the database as it is now (one function), for the router that
    # 5a compares against (sqlite3's online backup: a consistent snapshot).
    stack.db_one = run.work / "one-function.db"
    src = sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True)
    dst = sqlite3.connect(stack.db_one)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    hello = run.work / "hello.ts"
    hello.write_text(HELLO_TS)
    stack.direct, stack.direct_port = start_direct(run, hello)
    stack.haproxy_port = start_haproxy(run, stack.direct_port)
    stack.nginx_port = start_nginx(run, stack.direct_port)
    stack.urls = {
        "direct": f"http://127.0.0.1:{stack.direct_port}/",
        "skiff": f"{stack.rbase}/fn/alice/hello",
        "haproxy": f"http://127.0.0.1:{stack.haproxy_port}/fn/alice/hello",
        "nginx": f"http://127.0.0.1:{stack.nginx_port}/fn/alice/hello",
    }
    wait_http(stack.urls["skiff"], timeout=30)
    bodies = {k: request("GET", u)[1] for k, u in stack.urls.items()}
    if len(set(bodies.values())) != 1 or bodies["direct"] != b"hello from /\n":
        raise StepFailed(f"the four paths answer differently: {bodies}")
    log("direct, Skiff, HAProxy and nginx all answer 'hello from /'")
    run.results["raw"]["router_rss_kb_1fn"] = vm_rss_kb(stack.router.pid)
