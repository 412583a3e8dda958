#!/usr/bin/env bash
# Makes sure a Deno binary is reachable; installs it with pip when it is not.
# Prints the path of the real binary (not a shell shim) on stdout.
set -euo pipefail

if [ -n "${SKIFF_DENO:-}" ] && [ -x "$SKIFF_DENO" ]; then
    echo "$SKIFF_DENO"
    exit 0
fi
# The Deno this project is tested with (and the web console's bundle is built
# with, manager/console-dist/BUILT-WITH): what a fresh machine gets, so CI
# runs are repeatable. A Deno already installed is used as it is.
version=${SKIFF_DENO_VERSION:-2.9.8}
if ! command -v deno >/dev/null 2>&1; then
    if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
        echo "Deno not found; installing it with pip (pip install deno==$version)…" >&2
        "$(command -v pip3 || command -v pip)" install --quiet "deno==$version" >&2
        command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
        hash -r
    fi
fi
if ! command -v deno >/dev/null 2>&1; then
    echo "skiff needs Deno: install it with 'pip install deno==$version' (or see https://deno.com), then run this again." >&2
    exit 1
fi
deno eval --no-config 'console.log(Deno.execPath())'
