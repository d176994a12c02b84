#!/usr/bin/env bash
# Run checkov (IaC security scanner) from its own virtualenv, without touching the project's .venv.
#
#   scripts/checkov.sh install          create/refresh the venv (idempotent; a stamp file records the pins)
#   scripts/checkov.sh run DIR [ARGS]   scan DIR, print the results; exit 1 on any failed check. Terraform
#                                       unless ARGS name another --framework (e.g. --framework dockerfile)
#   scripts/checkov.sh version
#
# checkov pins dozens of dependencies (boto3, botocore among them) that fight the project's aiobotocore pin,
# so it never goes into .venv.
#
# Environment:
#   CHECKOV_HOME    state dir (venv); default $REPO/.cache/checkov
#   CHECKOV_PYTHON  interpreter used to build the venv (3.9-3.13); default: python3
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${CHECKOV_HOME:-$REPO/.cache/checkov}"
VENV="$HOME_DIR/venv"
STAMP="$VENV/.kordiam-bridge-stamp"
CHECKOV_VERSION="3.3.30"
PINS=(
  "checkov==$CHECKOV_VERSION"
)

say() { printf 'checkov: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 install | run DIR [CHECKOV ARGS...] | version" >&2
  exit 2
}

pins_hash() {
  printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1
}

venv_ready() {
  [[ -x "$VENV/bin/checkov" && -f "$STAMP" ]] || return 1
  [[ "$(cat "$STAMP")" == "$(pins_hash)" ]]
}

take_lock() {
  mkdir -p "$HOME_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$HOME_DIR/.lock"
    flock -w 600 9 || die "could not lock $HOME_DIR/.lock within 600 s"
  fi
}

ensure_venv() {
  venv_ready && return 0
  take_lock
  venv_ready && return 0
  local py t0
  t0=$SECONDS
  py="${CHECKOV_PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || die "no interpreter '$py' (set CHECKOV_PYTHON)"
  rm -f "$STAMP"
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV with $py"
    "$py" -m venv --clear "$VENV"
  fi
  say "installing checkov $CHECKOV_VERSION into $VENV (about a minute the first time)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq --upgrade pip
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq "${PINS[@]}" \
    || die "pip install failed (see output above)"
  "$VENV/bin/checkov" --version >/dev/null || die "checkov does not run after install"
  pins_hash >"$STAMP"
  say "venv ready in $((SECONDS - t0)) s"
}

cmd_run() {
  [[ $# -ge 1 ]] || usage
  local dir="$1"
  shift
  [[ -d "$dir" ]] || die "no such directory: $dir"
  ensure_venv
  local framework=(--framework terraform)
  case " $* " in *" --framework "*|*" --framework="*) framework=() ;; esac
  # Offline and quiet: no Bridgecrew/Prisma platform, no version check, no external module downloads.
  # The skip comments (#checkov:skip=CKV_...:reason) stay next to the resources they excuse.
  BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false \
    "$VENV/bin/checkov" \
    --directory "$dir" \
    "${framework[@]}" \
    --quiet --compact \
    --skip-download \
    --download-external-modules false \
    "$@"
}

[[ $# -ge 1 ]] || usage
case "$1" in
  install) ensure_venv ;;
  run) shift; cmd_run "$@" ;;
  version) ensure_venv; "$VENV/bin/checkov" --version ;;
  *) usage ;;
esac
