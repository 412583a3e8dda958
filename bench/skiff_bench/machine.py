"""What the run ran on: the machine and the versions of every party."""

import os
import platform
import subprocess

from .common import REPO


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
