"""A run: the phases in order, each given the run's state, then the figures and
the report; every process started is stopped at the end."""

import json
import shutil
import time
import traceback
from pathlib import Path

from .callgrind import phase_callgrind
from .cold_start import phase_cold, phase_cold_anatomy
from .common import log
from .context import Stack
from .deploy import phase_deploy, phase_deploy_anatomy, phase_deploy_deps
from .figures import figures
from .instances import phase_burst, phase_warm
from .latency import phase_latency
from .machine import versions
from .many import phase_many
from .metrics_cost import phase_metrics_cost
from .noisy import phase_noisy_neighbour
from .procfs import vm_rss_kb
from .profile_perf import phase_profile
from .report import report_markdown
from .setup import phase_setup
from .throughput import phase_throughput

# (name, phase): the names are what --only takes. After a failed setup or
# many-functions phase the run stops (the later phases need what they set up).
PHASES = [
    ("setup", phase_setup),
    ("throughput", phase_throughput),
    ("added latency", phase_latency),
    ("profile", phase_profile),
    ("callgrind", phase_callgrind),
    ("metrics_cost", phase_metrics_cost),
    ("deploy to first success", phase_deploy),
    ("deploy with dependencies", phase_deploy_deps),
    ("cold start", phase_cold),
    ("cold start anatomy", phase_cold_anatomy),
    ("deploy anatomy", phase_deploy_anatomy),
    ("many functions", phase_many),
    ("burst from zero", phase_burst),
    ("warm instances", phase_warm),
    ("noisy_neighbour", phase_noisy_neighbour),
]
STOP_AFTER_FAILURE = ("setup", "many functions")


def select_phases(run):
    """The phases to run: all, or setup and those --only names."""
    phases = PHASES
    if run.args.only:
        wanted = {w.strip() for w in run.args.only.split(",") if w.strip()}
        known = {n for n, _ in phases}
        if wanted - known:
            raise SystemExit(f"--only: unknown phase(s) {sorted(wanted - known)}; "
                             f"known: {sorted(known)}")
        phases = [(n, f) for n, f in phases if n == "setup" or n in wanted]
        run.results["only"] = sorted(wanted)
    return phases


def run_phases(run):
    """Runs the phases; True when every one succeeded. Always writes the results."""
    run.results["versions"] = versions(run.args, run.deno)
    phases = select_phases(run)
    stack = Stack()
    started = time.monotonic()
    ok = True
    try:
        for name, fn in phases:
            log(f"== {name}")
            t = time.monotonic()
            try:
                fn(run, stack)
            except Exception as e:
                ok = False
                log(f"FAILED {name}: {e}")
                traceback.print_exc()
                run.results["steps_failed"].append(f"{name}: {e}")
                if name in STOP_AFTER_FAILURE:
                    break
            run.results.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t, 1)
            for svc in ("manager", "router"):
                if svc in run.procs.items:
                    run.procs.check_alive(svc)
    finally:
        run.results["raw"]["router_rss_kb_end"] = (
            vm_rss_kb(stack.router.pid) if stack.router is not None else None)
        run.procs.stop_all()
        run.results["total_seconds"] = round(time.monotonic() - started, 1)
        try:
            run.results["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
        except OSError:
            pass
        run.results["figures"] = figures(run.results, run.cfg)
        write(run)
        shutil.rmtree(run.work, ignore_errors=True)
    return ok and not run.results["steps_failed"]


def write(run):
    """The results as JSON (--json) and the report as Markdown (--markdown)."""
    run.out.mkdir(parents=True, exist_ok=True)
    jpath = Path(run.args.json)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    jpath.write_text(json.dumps(run.results, indent=2, sort_keys=False) + "\n")
    Path(run.args.markdown).write_text(report_markdown(run.results, run.args))
    log(f"wrote {jpath} and {run.args.markdown}")
