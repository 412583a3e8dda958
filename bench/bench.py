#!/usr/bin/env python3
"""Skiff benchmark driver. Run it through bench/run.sh, which builds and installs
what this needs and passes the paths in.

Everything runs on this machine and targets 127.0.0.1 only; every load is bounded
in requests and time. Every process this starts is recorded in a pid file and
stopped at the end (run.sh's trap stops them too if this is killed).

The driver itself is the package `skiff_bench` next to this file, one module per
phase (see skiff_bench/__init__.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skiff_bench.main import main  # noqa: E402

if __name__ == "__main__":
    main()
