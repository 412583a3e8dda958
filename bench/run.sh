#!/usr/bin/env bash
# Skiff benchmark suite: one command (issue 5). See bench/README.md.
#
#   bash bench/run.sh           full run (~10 min after the build): writes BENCHMARKS.md
#                               and bench/results.json
#   bash bench/run.sh --quick   small counts, seconds per step, debug builds (CI):
#                               writes bench/out/quick.md and bench/out/quick.json
#
# Options: --no-perf (skip the perf and callgrind profiles in a full run);
# --only=PHASE,... or --only PHASE,... (full sizes, only these phases after setup, e.g. --only=callgrind
# or --only="cold start,cold start anatomy"; writes bench/out/only.{md,json}).
# As root the run is started with nice -n -10 (BENCH_NICE=no to not).
# Builds the release binaries (debug ones with --quick; CARGO_TARGET_DIR is honoured), installs wrk, HAProxy
# and nginx with apt-get and Deno with pip when missing, runs every measurement
# against 127.0.0.1 only, and stops every process it started. Exits non-zero when
# a step fails; a missed target is reported, not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=full
perf=auto
only=
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
        --quick) mode=quick ;;
        --no-perf) perf=no ;;
        --only=*) only=${arg#--only=} ;;
        --only)
            [ $# -gt 0 ] || { echo "bench/run.sh: --only needs a phase" >&2; exit 64; }
            only=$1
            shift
            ;;
        -h | --help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench/run.sh: unknown argument $arg (try --help)" >&2
            exit 64
            ;;
    esac
done

export PATH="$PATH:/usr/sbin:/sbin"
started=$(date +%s)
step() { printf '\n== bench: %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

step "tools"
export DEBIAN_FRONTEND=noninteractive
missing=()
for tool in wrk haproxy nginx; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)…"
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
optional=()
if [ "$mode" = full ] && [ "$perf" = auto ]; then
    command -v perf >/dev/null 2>&1 || optional+=(linux-perf)
    command -v valgrind >/dev/null 2>&1 || optional+=(valgrind)
fi
if [ ${#optional[@]} -gt 0 ]; then
    echo "installing ${optional[*]} (apt-get) for the profiles…"
    { apt-get update -qq && apt-get install -y -qq "${optional[@]}"; } >/dev/null 2>&1 ||
        echo "could not install ${optional[*]}: the profiles that need them are skipped"
fi
for tool in wrk haproxy nginx python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench/run.sh: $tool is missing" >&2; exit 1; }
done
perf_flag=()
if [ "$mode" = full ] && [ "$perf" = auto ]; then
    if perf stat -e instructions true >/dev/null 2>&1; then
        perf_flag=(--perf)
    else
        echo "perf cannot count here (perf stat -e instructions true failed): no profile"
    fi
fi
deno=$(bash scripts/ensure-deno.sh)
echo "deno: $deno"

# Quick mode (CI) proves the suite runs, not the figures: it takes the debug
# build the tests already made instead of spending minutes on an optimised one.
if [ "$mode" = quick ]; then
    profile=debug
    release=()
else
    profile=release
    release=(--release)
fi
step "build ($profile)"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build "${release[@]}" --quiet --bin skiff-manager --bin skiff-router --bin skiff-sandbox
cargo build "${release[@]}" --quiet --locked --manifest-path bench/loadgen/Cargo.toml \
    --target-dir "$target/bench-loadgen"
manager=$target/$profile/skiff-manager
router=$target/$profile/skiff-router
loadgen=$target/bench-loadgen/$profile/loadgen
ls -l "$manager" "$router" "$loadgen" | awk '{print $5, $9}'

out=$root/bench/out
logdir=$out/logs-$mode
rm -rf "$logdir"
mkdir -p "$logdir"
pidfile=$logdir/pids
only_flag=()
if [ -n "$only" ]; then
    json=$out/only.json
    markdown=$out/only.md
    only_flag=(--only "$only")
elif [ "$mode" = full ]; then
    json=$root/bench/results.json
    markdown=$root/BENCHMARKS.md
else
    json=$out/quick.json
    markdown=$out/quick.md
fi

# Stops whatever the driver started and left behind (it stops them itself
# normally): each recorded pid leads its own process group.
cleanup() {
    [ -f "$pidfile" ] || return 0
    local pid
    while read -r pid; do
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
    done <"$pidfile"
    sleep 1
    while read -r pid; do
        [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done <"$pidfile"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Everything the driver starts inherits its priority. Other work on a shared
# machine (builds, tests) then disturbs the figures less; all parties measured
# (Skiff, HAProxy, nginx, Deno, the load generators) get the same priority.
nice=()
if [ "$(id -u)" = 0 ] && [ "${BENCH_NICE:-yes}" != no ]; then
    nice=(nice -n -10)
fi

step "measurements ($mode)"
"${nice[@]}" python3 -u bench/bench.py --mode "$mode" \
    --manager "$manager" --router "$router" --loadgen "$loadgen" --deno "$deno" \
    --json "$json" --markdown "$markdown" --out "$out" --logdir "$logdir" \
    --pidfile "$pidfile" "${perf_flag[@]}" "${only_flag[@]}"

step "done: $markdown, $json"
