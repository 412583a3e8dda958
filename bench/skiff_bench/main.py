"""The command line of the driver (bench/run.sh passes every path in)."""

import argparse
import json
import signal
import sys
from pathlib import Path

from .common import MODES
from .context import new_run
from .report import report_markdown
from .runner import run_phases


def parse_args(argv=None):
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
    args = ap.parse_args(argv)
    return ap, args


def main(argv=None):
    ap, args = parse_args(argv)
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

    run = new_run(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    ok = run_phases(run)
    sys.exit(0 if ok else 1)
