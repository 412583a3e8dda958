#!/usr/bin/env bash
# Fuzzes the manager's HTTP API with schemathesis, driven by the manager's own
# /openapi.json: every operation, with a valid token and without one. Fails on
# any 5xx and on any response (status, content type, headers, body) that the
# document does not describe.
#
#   bash scripts/fuzz-api.sh           # full run: well over 1,000 generated cases
#   bash scripts/fuzz-api.sh --quick   # a few hundred cases, for CI (under ~2 minutes)
#
# It installs schemathesis (pip, into a private virtualenv) when `st` is missing,
# builds skiff-manager, starts it on a free 127.0.0.1 port with SQLite in a temp
# dir, registers a user, logs in, fuzzes, and stops everything it started.
# Environment: SKIFF_FUZZ_SEED (reproduce a run), SKIFF_FUZZ_VENV (where the
# virtualenv goes), CARGO_TARGET_DIR (as for cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=full
case "${1:-}" in
"") ;;
--quick) mode=quick ;;
-h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: scripts/fuzz-api.sh [--quick]" >&2
    exit 2
    ;;
esac

# Cases per operation and pass. POST /func runs `deno check` (~0.6 s a case),
# so it gets its own, smaller budget; everything else is cheap.
if [ "$mode" = quick ]; then
    n_ops=40 n_deploy=12 n_anon=25
else
    n_ops=150 n_deploy=60 n_anon=80
fi
seed=${SKIFF_FUZZ_SEED:-$RANDOM$RANDOM}

say() { printf '== %s\n' "$*"; }

# --- tools ----------------------------------------------------------------
if command -v st >/dev/null 2>&1; then
    st=$(command -v st)
else
    # A virtualenv of its own keeps schemathesis's dependencies away from other
    # pip-installed tools; without venv support, plain pip as a fallback.
    venv=${SKIFF_FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff/schemathesis-venv}
    if ! [ -x "$venv/bin/st" ]; then
        say "installing schemathesis (pip, into $venv)"
        if python3 -m venv "$venv" >/dev/null 2>&1; then
            "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis
        else
            echo "python3 -m venv is not available; installing with pip instead" >&2
            "$(command -v pip3 || command -v pip)" install --quiet schemathesis
        fi
    fi
    if [ -x "$venv/bin/st" ]; then
        st=$venv/bin/st
    else
        hash -r
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
        st=$(command -v st) || {
            echo "schemathesis did not install (pip install schemathesis)" >&2
            exit 1
        }
    fi
fi
echo "schemathesis: $("$st" --version 2>&1 | tail -1)"
SKIFF_DENO=$(bash scripts/ensure-deno.sh)
export SKIFF_DENO

say "building skiff-manager"
cargo build --quiet --bin skiff-manager --bin skiff-sandbox
manager=${CARGO_TARGET_DIR:-$root/target}/debug/skiff-manager
[ -x "$manager" ] || {
    echo "no binary at $manager" >&2
    exit 1
}

# --- the manager under test --------------------------------------------------
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
secrets_key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
SKIFF_DATABASE_URL="sqlite://$work/skiff.db" \
    SKIFF_JWT_SECRET="$secret" \
    SKIFF_SECRETS_KEY="$secrets_key" \
    SKIFF_ALLOW_SIGNUP=true \
    SKIFF_LISTEN=127.0.0.1:0 \
    SKIFF_DATA_DIR="$work/data" \
    SKIFF_PUBLIC_URL=http://127.0.0.1:8000 \
    SKIFF_LOGIN_LIMIT_PER_USER=1000000 \
    SKIFF_LOGIN_LIMIT_PER_USER_ADDR=1000000 \
    SKIFF_LOGIN_LIMIT_PER_ADDR=1000000 \
    SKIFF_REGISTER_LIMIT_PER_ADDR=1000000 \
    RUST_LOG=${RUST_LOG:-warn,skiff_manager=info} NO_COLOR=1 \
    "$manager" >"$work/manager.log" 2>&1 &
pid=$!

port=
for _ in $(seq 1 600); do
    port=$(grep -o 'port=[0-9]*' "$work/manager.log" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "skiff-manager did not start:" >&2
    cat "$work/manager.log" >&2
    exit 1
fi
base=http://127.0.0.1:$port
say "skiff-manager on $base (pid $pid, seed $seed, $mode mode)"

body='{"username":"fuzzer","password":"fuzzing password 1"}'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/register" -d "$body")
[ "$code" = 201 ] || {
    echo "register answered $code" >&2
    exit 1
}
token=$(curl -s -X POST "$base/login" -d "$body" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || {
    echo "login gave no token" >&2
    exit 1
}
# The documented examples name a function called `hello`: make it exist.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
    --data-binary "export default (req: Request) => new Response('hello');" "$base/func?name=hello")
[ "$code" = 201 ] || {
    echo "seed deploy answered $code" >&2
    exit 1
}

# --- fuzzing ------------------------------------------------------------------
# Every check except positive_data_acceptance: a schema-valid body for POST /func
# is any string, and almost no random string is a TypeScript module that
# type-checks, so a 400 there is the right answer, not a failure.
checks=(--checks all --exclude-checks positive_data_acceptance)
# One worker: the manager has the machine's cores to itself, and Python 3.11's
# parser is not thread-safe under schemathesis's concurrent coverage phase.
common=(--seed "$seed" --workers 1 --no-color --request-timeout 120
    --suppress-health-check "too_slow,filter_too_much" --max-failures 50)

cat >"$work/schemathesis.toml" <<'TOML'
[auth]
# The pass without a token must stay without one: no automatic sign-up and login.
auto-signup = false
TOML
# Function sources travel as application/typescript: text, both ways.
cat >"$work/skiff_st_hooks.py" <<'PY'
import schemathesis

schemathesis.serializer.alias("application/typescript", "text/plain")


@schemathesis.deserializer("application/typescript")
def _typescript(ctx, response):
    return response.content.decode("utf-8")
PY
total=0
with_token=0
without_token=0
failed=0
run_pass() { # token|anon, label, then st arguments
    local kind=$1 label=$2
    shift 2
    say "schemathesis: $label"
    local out=$work/st-$total.out
    set +e
    (cd "$work" && PYTHONPATH="$work" SCHEMATHESIS_HOOKS=skiff_st_hooks "$st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
        "${checks[@]}" "${common[@]}" --generation-database none "$@") 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    set -e
    # "Test cases:" is followed by a line like "  412 generated, 412 passed".
    local n
    n=$(grep -A1 -E '^ *Test cases:' "$out" | grep -oE '[0-9]+ generated' | grep -oE '[0-9]+' | head -1)
    n=${n:-0}
    echo "-- $label: $n cases, exit code $rc"
    total=$((total + n))
    if [ "$kind" = token ]; then
        with_token=$((with_token + n))
    else
        without_token=$((without_token + n))
    fi
    counts+=("$label: $n cases, exit $rc")
    [ "$rc" = 0 ] || failed=1
}
counts=()
auth=(-H "Authorization: Bearer $token")
run_pass token "with a token, every operation but POST /func and POST /tokens/revoke" "${auth[@]}" \
    --exclude-operation-id deploy --exclude-operation-id revoke_tokens -n "$n_ops"
run_pass token "with a token, POST /func" "${auth[@]}" --include-operation-id deploy -n "$n_deploy"
run_pass anon "without a token, every operation" -n "$n_anon"

if kill -0 "$pid" 2>/dev/null; then
    alive=yes
else
    alive=no
    failed=1
fi
if grep -qiE 'panicked|request failed' "$work/manager.log"; then
    echo "the manager logged internal errors:" >&2
    grep -iE -A3 'panicked|request failed' "$work/manager.log" | head -40 >&2
    failed=1
fi

say "summary ($mode mode, seed $seed)"
printf '  %s\n' "${counts[@]}"
echo "  total: $total generated cases ($with_token with a token, $without_token without);" \
    "manager still running: $alive"
# Full mode: at least 1,000 cases with a token and 1,000 without.
min=$([ "$mode" = quick ] && echo 100 || echo 1000)
if [ "$with_token" -lt "$min" ] || [ "$without_token" -lt "$min" ]; then
    echo "fewer than $min cases were generated with or without a token" >&2
    failed=1
fi
[ "$failed" = 0 ] || {
    echo "-- the manager's log, last lines:" >&2
    tail -40 "$work/manager.log" >&2
    echo "API fuzzing FAILED (reproduce with SKIFF_FUZZ_SEED=$seed)" >&2
    exit 1
}
echo "API fuzzing passed"
