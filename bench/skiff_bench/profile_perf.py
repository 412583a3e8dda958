"""The perf profiles of a full run (evidence, not measured runs)."""

import re
import subprocess
import time

from .common import log
from .throughput import proxy_pids
from .tools import parse_wrk

REPORTS = {
    "router-children.txt": ["--children", "--sort", "symbol", "--percent-limit", "1.5",
                            "-g", "none"],
    "router-self.txt": ["--no-children", "--sort", "symbol", "--percent-limit", "0.7",
                        "-g", "none"],
    "router-by-dso.txt": ["--no-children", "--sort", "dso", "-g", "none"],
}


def per_request(run, stack, secs, cmds):
    """`perf stat` of each proxy under the same wrk load: per-request figures."""
    out = {}
    # No hardware counters in this VM (instructions: <not supported>): time and
    # software events only.
    events = "raw_syscalls:sys_enter,context-switches,task-clock"
    for name in ("skiff", "haproxy", "nginx"):
        pids = proxy_pids(run, stack, name)
        if name == "nginx":
            pids = pids[1:] or pids  # the workers
        argv = ["perf", "stat", "-x,", "-e", events, "-p", ",".join(map(str, pids)), "--",
                "wrk", "-t2", "-c50", f"-d{secs}s", stack.urls[name]]
        cmds.append(" ".join(argv))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
        reqs = parse_wrk(r.stdout)["requests"] or 0
        vals = {}
        for line in r.stderr.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0].replace(".", "").isdigit():
                vals[f[2]] = float(f[0])
        if reqs:
            out[name] = {
                "requests": reqs,
                "syscalls": vals.get("raw_syscalls:sys_enter", 0) / reqs,
                "context_switches": vals.get("context-switches", 0) / reqs,
                "cpu_us": vals.get("task-clock", 0) * 1e3 / reqs,
            }
    return out


def router_call_graphs(stack, pdir, secs, cmds):
    """Call graphs of the router (DWARF unwinding: the release build has no frame
    pointers), as perf report tables."""
    data = pdir / "router.perf.data"
    wrk = subprocess.Popen(["wrk", "-t2", "-c50", f"-d{secs + 2}s", stack.urls["skiff"]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    rec = ["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", str(data),
           "-p", str(stack.router.pid), "--", "sleep", str(secs)]
    cmds += [f"wrk -t2 -c50 -d{secs + 2}s {stack.urls['skiff']} &", " ".join(rec)]
    subprocess.run(rec, capture_output=True, timeout=secs + 60)
    wrk.wait(timeout=secs + 30)
    parsed = {}
    for fname, opts in REPORTS.items():
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
    return parsed


def system_by_comm(stack, pdir, secs, cmds):
    """Where all CPUs went under load, by thread name (`perf record -a`)."""
    sysdata = pdir / "system.perf.data"
    wrk = subprocess.Popen(["wrk", "-t2", "-c50", f"-d{secs + 2}s", stack.urls["skiff"]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    rec2 = ["perf", "record", "-F", "999", "-a", "-o", str(sysdata), "--", "sleep", str(secs)]
    subprocess.run(rec2, capture_output=True, timeout=secs + 60)
    wrk.wait(timeout=secs + 30)
    rep2 = ["perf", "report", "-i", str(sysdata), "--stdio", "--sort", "comm",
            "--percent-limit", "1"]
    r2 = subprocess.run(rep2, capture_output=True, text=True, timeout=300)
    (pdir / "system-by-comm.txt").write_text(r2.stdout)
    cmds += [f"wrk -t2 -c50 -d{secs + 2}s {stack.urls['skiff']} &", " ".join(rec2), " ".join(rep2)]
    comms = []
    for line in r2.stdout.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(.+?)\s*$", line)
        if m and not line.startswith("#"):
            comms.append({"percent": float(m.group(1)), "comm": m.group(2)})
    return comms


def phase_profile(run, stack):
    """Evidence for 1a (not measured runs): per-request syscalls, context
    switches and CPU of each proxy under the same wrk load (`perf stat`), a
    call-graph profile of the router (`perf record --call-graph dwarf`), and
    where all CPUs went, by process (`perf record -a`)."""
    secs = run.cfg["profile_secs"]
    if not secs or not run.args.perf:
        return
    pdir = run.logdir / "profile"
    pdir.mkdir(exist_ok=True)
    cmds = run.commands("profile")
    prof = {"per_request": per_request(run, stack, secs, cmds)}
    parsed = router_call_graphs(stack, pdir, secs, cmds)
    prof["router_children"] = parsed["router-children.txt"][:60]
    prof["router_self"] = parsed["router-self.txt"][:30]
    prof["router_by_dso"] = parsed["router-by-dso.txt"][:10]
    prof["system_by_comm"] = system_by_comm(stack, pdir, secs, cmds)
    run.results["raw"]["profile"] = prof
    for k, v in prof["per_request"].items():
        log(f"  {k}: {v['syscalls']:.2f} syscalls, {v['context_switches']:.2f} context switches, "
            f"{v['cpu_us']:.1f} us CPU per request")
