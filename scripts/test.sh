#!/usr/bin/env bash
# The whole test suite, from a clean machine: installs what it needs (Deno via
# pip, MariaDB via apt, the Kubernetes/Docker validators via pip), starts
# MariaDB on a private port, runs every check and test, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# --full also runs the long parts: a 10-minute soak and the full API fuzzing.
fuzz_mode=--quick
if [ "${1:-}" = "--full" ]; then
    fuzz_mode=
    export SKIFF_SOAK_SECS="${SKIFF_SOAK_SECS:-600}"
fi

step() { printf '\n== %s\n' "$*"; }

step "tools"
SKIFF_DENO=$(bash scripts/ensure-deno.sh)
export SKIFF_DENO
# The tests find Deno on PATH too.
PATH="$(dirname "$SKIFF_DENO"):$PATH"
export PATH
echo "deno: $SKIFF_DENO ($("$SKIFF_DENO" --version | head -1))"
if ! [ -x /usr/sbin/mariadbd ]; then
    echo "installing MariaDB (apt-get install mariadb-server)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq mariadb-server >/dev/null
fi

# The compatibility suite (cli/tests/compat.rs) runs local registries:
# Verdaccio needs node + npm, the test CA needs openssl.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The observability test scrapes skiff dev with a real Prometheus.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The web console's browser test (cli/tests/console.rs) drives headless Chromium.
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} for the compatibility, observability and console tests (apt-get install)…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Verdaccio and the hono/zod tarballs, once, into the suite's cache.
bash tests/compat/prepare.sh >/dev/null

step "MariaDB on a private port"
work=$(mktemp -d)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { bash "$root/scripts/mariadb.sh" stop "$work/mariadb" || true; rm -rf "$work"; }
trap cleanup EXIT
SKIFF_TEST_MYSQL_URL=$(bash scripts/mariadb.sh start "$work/mariadb" "$port")
export SKIFF_TEST_MYSQL_URL
echo "MariaDB up on 127.0.0.1:$port"

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
"$SKIFF_DENO" fmt --check client-runtime
"$SKIFF_DENO" lint client-runtime
# The console's committed bundle is the build of its sources (and they pass
# deno fmt, lint and check).
bash scripts/build-console.sh --check

step "Rust tests (SQLite and MariaDB)"
cargo test --workspace --no-fail-fast

step "manager API fuzzing (schemathesis${fuzz_mode:+, quick})"
bash scripts/fuzz-api.sh $fuzz_mode

step "client-runtime tests (Deno)"
"$SKIFF_DENO" test -A client-runtime/tests/

if [ -x scripts/validate-k8s.sh ] || [ -f scripts/validate-k8s.sh ]; then
    step "Kubernetes manifests, rendered objects and Dockerfiles"
    cargo build --quiet --bin skiff-manager --bin skiff-sandbox
    bash scripts/validate-k8s.sh target/debug/skiff-manager
fi

if [ -f bench/run.sh ]; then
    step "benchmarks (quick mode: proves the suite runs, not the figures)"
    bash bench/run.sh --quick
fi

step "all checks passed"
