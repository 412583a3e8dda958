#!/usr/bin/env bash
# One command to try Skiff on a laptop: makes sure Deno is there, builds the
# `skiff` binary and runs `skiff dev` (manager + router on SQLite in ./.skiff).
# Extra arguments go to `skiff dev`, e.g. scripts/dev.sh --router-addr 127.0.0.1:9000
set -euo pipefail
cd "$(dirname "$0")/.."
SKIFF_DENO=$(bash scripts/ensure-deno.sh)
export SKIFF_DENO
cargo build --release --quiet --bin skiff --bin skiff-sandbox
exec target/release/skiff dev "$@"
