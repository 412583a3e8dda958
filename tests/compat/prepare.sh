#!/usr/bin/env bash
# Fills the compatibility suite's cache (idempotent; quick when warm):
#   <cache>/verdaccio/  Verdaccio 6 installed with npm (the local npm registry)
#   <cache>/tarballs/   hono@4 and zod@3 as `npm pack` made them, to publish there
# Usage: prepare.sh [CACHE_DIR]  (default $SKIFF_COMPAT_CACHE or ~/.cache/skiff-compat)
# Prints the cache dir on stdout. Needs node and npm (CI installs them with apt).
set -euo pipefail

cache="${1:-${SKIFF_COMPAT_CACHE:-$HOME/.cache/skiff-compat}}"
# 6.5 runs on Node 18 (Debian 12's nodejs, what CI installs) and 20; 6.9+ wants Node 22.
VERDACCIO_VERSION=6.5.2
# Ranges, not exact versions: the suite tests `npm:hono@4`-style imports and
# whatever 4.x the registry serves today is what a user would get.
PACKS=("hono@4" "zod@3")

if ! command -v npm >/dev/null 2>&1; then
    echo "the compatibility suite needs node and npm (apt-get install nodejs npm)" >&2
    exit 1
fi
mkdir -p "$cache/verdaccio" "$cache/tarballs"
# The suite's tests may call this at the same time: one fills the cache, the others wait.
exec 9>"$cache/.lock"
flock 9

bin="$cache/verdaccio/node_modules/verdaccio/bin/verdaccio"
if ! [ -f "$bin" ] || ! grep -qs "\"version\": \"$VERDACCIO_VERSION\"" "$cache/verdaccio/node_modules/verdaccio/package.json"; then
    echo "installing verdaccio $VERDACCIO_VERSION into $cache/verdaccio…" >&2
    (cd "$cache/verdaccio" && npm install --no-audit --no-fund --loglevel=error \
        --prefix "$cache/verdaccio" "verdaccio@$VERDACCIO_VERSION" >&2)
fi

for spec in "${PACKS[@]}"; do
    name=${spec%@*}
    # One tarball per package name is kept; `npm pack` names it <name>-<ver>.tgz.
    if ! ls "$cache/tarballs/$name"-[0-9]*.tgz >/dev/null 2>&1; then
        echo "npm pack $spec…" >&2
        (cd "$cache/tarballs" && npm pack --loglevel=error "$spec" >/dev/null)
    fi
done
# Deno's bundler (esbuild) comes from the npm registry the manager is given, so
# the local registry must hold the exact package this Deno asks for: find its
# version by letting a throw-away Deno cache fetch it once.
if ! ls "$cache/tarballs"/esbuild-linux-*.tgz >/dev/null 2>&1; then
    deno="${SKIFF_DENO:-$(command -v deno)}"
    probe=$(mktemp -d)
    trap 'rm -rf "$probe"' EXIT
    echo 'export default 1;' > "$probe/m.ts"
    DENO_DIR="$probe/cache" DENO_TLS_CA_STORE=mozilla,system NO_COLOR=1 \
        "$deno" bundle --quiet --no-config --no-lock -o "$probe/out.js" "$probe/m.ts" >&2
    dl=$(ls -d "$probe"/cache/dl/esbuild-*-1 | head -1)
    version=${dl##*/esbuild-}
    version=${version%-1}
    case "$(uname -m)" in
        aarch64 | arm64) platform=linux-arm64 ;;
        *) platform=linux-x64 ;;
    esac
    echo "npm pack @esbuild/$platform@$version (Deno's bundler)…" >&2
    (cd "$cache/tarballs" && npm pack --loglevel=error "@esbuild/$platform@$version" >/dev/null)
fi
echo "$cache"
