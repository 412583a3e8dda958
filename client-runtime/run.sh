#!/bin/sh
# Starts the Skiff client runtime with the Deno command line defined in
# deno-flags.txt (next to this script), then the runtime's own arguments:
#
#   SKIFF_CODE_DIR=/code SKIFF_TMP_DIR=/tmp/inst SKIFF_DENY_NET=127.0.0.0/8,... \
#     run.sh --module /code/fn.ts --listen unix:/tmp/inst/fn.sock
#
# Environment:
#   SKIFF_CODE_DIR  (required) read-only dir with the module and these files
#   SKIFF_TMP_DIR   (required) the instance's writable dir
#   SKIFF_DENY_NET  (required, non-empty) comma list for --deny-net
#   SKIFF_HEAP_MB   (default 128) V8 old-space cap in MiB
#   SKIFF_ENV_NAMES (optional) comma list of the function's env and secret
#                   names: --allow-env=<them>; without it --deny-env
#   SKIFF_ENV_FILE  (optional) the JSON file of their values, readable by the
#                   runtime; pass `--env-file "$SKIFF_ENV_FILE"` in the
#                   runtime's arguments too
#   SKIFF_DENO      (default "deno") the deno executable
#   SKIFF_SANDBOX   (optional) the sandbox launcher: when set, Deno starts
#                   through it, confined by Landlock to the dirs above and by
#                   its seccomp filter, with layers the container refuses
#                   skipped with a warning (--best-effort)
#   SKIFF_BIND_PORTS (optional, with SKIFF_SANDBOX) comma list of the only TCP
#                   ports the runtime may listen on
#
# Values must not contain spaces or commas (commas separate Deno's list
# values); this script does not try to escape them.
set -eu

die() {
  printf 'run.sh: %s\n' "$1" >&2
  exit 64
}

: "${SKIFF_CODE_DIR:?must be set}"
: "${SKIFF_TMP_DIR:?must be set}"
: "${SKIFF_DENY_NET:?must be set (a non-empty comma list)}"
heap_mb=${SKIFF_HEAP_MB:-128}
env_flag=--deny-env
if [ -n "${SKIFF_ENV_NAMES:-}" ]; then env_flag=--allow-env=$SKIFF_ENV_NAMES; fi
env_file=''
if [ -n "${SKIFF_ENV_FILE:-}" ]; then env_file=,$SKIFF_ENV_FILE; fi
deno=${SKIFF_DENO:-deno}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
flags_file=$script_dir/deno-flags.txt
main=$script_dir/main.ts
[ -r "$flags_file" ] || die "cannot read $flags_file"

# replace STRING PLACEHOLDER VALUE: prints STRING with every PLACEHOLDER
# replaced by VALUE.
replace() {
  rest=$1
  out=''
  while :; do
    case $rest in
      *"$2"*)
        out=$out${rest%%"$2"*}$3
        rest=${rest#*"$2"}
        ;;
      *) break ;;
    esac
  done
  printf '%s' "$out$rest"
}

# Append the Deno arguments after the caller's, then rotate the caller's
# arguments to the end, so "$@" keeps its exact quoting.
n_user_args=$#
while IFS= read -r line || [ -n "$line" ]; do
  # trim surrounding whitespace (also a stray CR)
  line=${line#"${line%%[![:space:]]*}"}
  line=${line%"${line##*[![:space:]]}"}
  case $line in
    '' | '#'*) continue ;;
  esac
  line=$(replace "$line" '{code_dir}' "$SKIFF_CODE_DIR")
  line=$(replace "$line" '{write_dirs}' "$SKIFF_TMP_DIR")
  line=$(replace "$line" '{heap_mb}' "$heap_mb")
  line=$(replace "$line" '{deny_net}' "$SKIFF_DENY_NET")
  line=$(replace "$line" '{main}' "$main")
  line=$(replace "$line" '{env}' "$env_flag")
  line=$(replace "$line" '{env_file}' "$env_file")
  case $line in
    *'{'*'}'*) die "unknown placeholder in deno-flags.txt: $line" ;;
  esac
  set -- "$@" "$line"
done <"$flags_file"

i=0
while [ "$i" -lt "$n_user_args" ]; do
  set -- "$@" "$1"
  shift
  i=$((i + 1))
done

if [ -z "${SKIFF_SANDBOX:-}" ]; then
  exec "$deno" "$@"
fi

# Through the launcher: the rules need absolute paths.
case $deno in
  /*) ;;
  *) deno=$(command -v "$deno") || die "cannot find $deno" ;;
esac
sandbox_args="--best-effort --system-files --landlock --seccomp --restrict-bind
--bind-len 16 --bind-len 28 --nofile 1024 --deny-tcp-bind"
ports=${SKIFF_BIND_PORTS:-}
while [ -n "$ports" ]; do
  port=${ports%%,*}
  case $port in
    '' | *[!0-9]*) die "SKIFF_BIND_PORTS must be a comma list of ports" ;;
  esac
  sandbox_args="$sandbox_args --tcp-bind-port $port"
  case $ports in
    *,*) ports=${ports#*,} ;;
    *) ports='' ;;
  esac
done
# Paths go in as separate arguments (they may hold spaces): prepend them in
# reverse order, then the fixed options, in front of the Deno command line.
set -- -- "$deno" "$@"
if [ -d "${DENO_DIR:-}" ]; then set -- --rw "$DENO_DIR" "$@"; fi
# The env file's directory, not the file: a mounted Secret reaches the file
# through symlinks the kubelet swaps on update.
if [ -n "${SKIFF_ENV_FILE:-}" ]; then set -- --ro "$(dirname -- "$SKIFF_ENV_FILE")" "$@"; fi
set -- --ro "$SKIFF_CODE_DIR" --ro "$main" --rx "$deno" --rw "$SKIFF_TMP_DIR" \
  --chdir "$SKIFF_CODE_DIR" "$@"
# shellcheck disable=SC2086 # word splitting of the fixed options is intended
exec "$SKIFF_SANDBOX" $sandbox_args "$@"
