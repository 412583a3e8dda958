"""The state a run shares, passed explicitly to every phase.

`Run` is what every phase needs: the arguments, the sizes of the mode, the work
and log directories, the processes started and the results being gathered.
`Stack` is what the setup phase brings up (services, URLs, users, functions) and
the later phases use and add to.
"""

import datetime
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .common import MODES
from .machine import machine_info
from .procs import Procs


@dataclass
class Run:
    args: object
    mode: str
    cfg: dict
    out: Path
    logdir: Path
    work: Path
    procs: Procs
    deno: str
    results: dict

    def commands(self, key):
        """The list of command lines recorded under `key` (created when new)."""
        return self.results["commands"].setdefault(key, [])


def new_run(args):
    """The run's settings from the command line; makes its work and log directories."""
    mode = args.mode
    cfg = dict(MODES[mode])
    for kv in args.set or []:
        k, _, v = kv.partition("=")
        if k not in cfg:
            raise SystemExit(f"--set: unknown setting {k}")
        cfg[k] = type(cfg[k])(v)
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    # Not under /tmp: instances get a private /tmp, which would cover it.
    work = Path(tempfile.mkdtemp(prefix="skb-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    results = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "params": dict(cfg),
        "machine": machine_info(),
        "versions": {},
        "raw": {},
        "commands": {},
        "steps_failed": [],
        "nice": os.nice(0),
        "paths": {"loadgen": args.loadgen, "logdir": str(args.logdir)},
    }
    return Run(args=args, mode=mode, cfg=cfg, out=Path(args.out), logdir=logdir, work=work,
               procs=Procs(Path(args.pidfile), logdir), deno=args.deno, results=results)


@dataclass
class Stack:
    """Services and functions of the run; filled by `setup.phase_setup`."""

    db: Path = None             # the SQLite database of the manager and routers
    db_one: Path = None         # a copy of it taken when only /fn/alice/hello existed
    router_port: int = None
    rbase: str = None           # http://127.0.0.1:<router_port>
    api: object = None          # the manager (api.Api)
    bulk: object = None         # the second manager, for bulk deploys (api.Api)
    router: object = None       # the main router (Popen)
    direct: object = None       # the client runtime serving hello.ts on TCP (Popen)
    direct_port: int = None
    haproxy_port: int = None
    nginx_port: int = None
    urls: dict = field(default_factory=dict)    # direct, skiff, haproxy, nginx → URL
    tokens: dict = field(default_factory=dict)  # user → token
    users: set = field(default_factory=set)
    count_functions: int = 0
    fillers: list = None        # [(user, name)] deployed by the many-functions phase
    warm_set: list = None
    burst_set: list = None
