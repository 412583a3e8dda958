"""The processes a run starts, each in its own session, recorded in a pid file
(run.sh's exit trap stops them from it if the driver is killed)."""

import os
import signal
import socket
import subprocess

from .common import StepFailed, log


class Procs:
    """Processes started by this run, each in its own session; recorded in a pid file."""

    def __init__(self, pidfile, logdir):
        self.pidfile = pidfile
        self.logdir = logdir
        self.items = {}

    def _write(self):
        self.pidfile.write_text("".join(f"{p.pid}\n" for p in self.items.values()))

    def start(self, name, argv, env=None, cwd=None):
        logf = open(self.logdir / f"{name}.log", "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        p = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=cwd, start_new_session=True,
        )
        logf.close()
        self.items[name] = p
        self._write()
        return p

    def stop(self, name, timeout=15):
        p = self.items.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._write()

    def stop_all(self):
        for name in list(self.items)[::-1]:
            try:
                self.stop(name)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name}: {e}")

    def check_alive(self, name):
        p = self.items.get(name)
        if p is None or p.poll() is not None:
            raise StepFailed(f"{name} is not running (see {self.logdir / (name + '.log')})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
