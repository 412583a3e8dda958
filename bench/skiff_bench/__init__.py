"""Skiff benchmark driver, split by phase. `bench/bench.py` is the entry point
(run it through `bench/run.sh`); `main.main` parses the arguments.

Modules, in the order a run uses them:
- `common`: paths, sizes of each mode, targets, sources deployed, logging.
- `stats`, `procfs`, `procs`, `api`, `tools`: statistics, /proc readings, the
  processes the run starts, the manager's API, the load tools (wrk, loadgen).
- `context`: the state a run shares (`Run`: settings, results, processes;
  `Stack`: the services and functions set up), passed explicitly to every phase.
- `services`, `proxies`, `setup`: starting the manager, routers, the direct
  instance, HAProxy and nginx; the setup phase.
- `throughput`, `latency`, `profile_perf`, `callgrind`, `deploy`, `cold_start`,
  `many`, `instances`: the measuring phases.
- `figures`, `report`, `machine`: figures from the raw results, `BENCHMARKS.md`.
- `runner`, `main`: the phase list and the run; the command line.
"""
