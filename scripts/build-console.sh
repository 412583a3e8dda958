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
# The bundler is part of Deno: the same sources give the same bytes with the
# same Deno. Which one built the committed files is kept beside them.
version="$("$deno" --version | head -1)"
echo "$version" > "$tmp/BUILT-WITH"

case "$mode" in
  --check)
    built_with="$(cat "$out/BUILT-WITH" 2>/dev/null || echo unknown)"
    if [ "$built_with" != "$version" ]; then
        # Another Deno may order or minify differently: the sources were
        # checked and bundled above; the bytes can only be compared with the
        # Deno that made them.
        echo "console sources check and bundle; manager/console-dist was built with $built_with, this is $version: not compared byte for byte (rebuild with scripts/build-console.sh)"
        exit 0
    fi
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
