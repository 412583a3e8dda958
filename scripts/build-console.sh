#!/usr/bin/env bash
# Builds the web console (console/) into manager/console-dist/, which the
# manager embeds. Deno bundles the TypeScript and the pinned npm packages
# (console/deno.json, console/deno.lock); no Node toolchain is involved.
#   scripts/build-console.sh          rebuild the committed files
#   scripts/build-console.sh --check  fail when they differ from a fresh build
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deno="${SKIFF_DENO:-deno}"
out="$root/manager/console-dist"
mode="${1:-build}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$root/console"
"$deno" fmt --check --quiet .
"$deno" lint --quiet
"$deno" check --quiet --frozen src/main.ts
"$deno" bundle --quiet --frozen --platform=browser --format=esm --minify \
  -o "$tmp/app.js" src/main.ts
cp index.html style.css "$tmp/"
mv "$tmp/style.css" "$tmp/app.css"

case "$mode" in
  --check)
    if ! diff -r -q "$tmp" "$out"; then
      echo "manager/console-dist is not the build of console/: run scripts/build-console.sh" >&2
      exit 1
    fi
    echo "console bundle matches its sources"
    ;;
  build)
    mkdir -p "$out"
    rm -f "$out"/*
    cp "$tmp"/* "$out/"
    ls -l "$out"
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
