#!/usr/bin/env bash
# Run LocalStack (SQS, S3) on the host, without Docker.
#
#   scripts/localstack.sh start|stop|status|env
#
# stop also ends a start still under way (its pid in start.pid), and what that start launched.
#
# Environment:
#   LOCALSTACK_HOME      state dir (venv, log, pid, volume); default $REPO/.cache/localstack
#   LOCALSTACK_PORT      gateway port on 127.0.0.1; default 4566
#   LOCALSTACK_SERVICES  services to enable; default sqs,s3
#   LOCALSTACK_PYTHON    interpreter (>= 3.13) used to build the venv; default: found via pyenv / PATH
#   LOCALSTACK_START_TIMEOUT  seconds to wait for health; default 120
#   LOCALSTACK_GATEWAY_SERVER hypercorn (default) or twisted. LocalStack's own default, twisted, ignores
#                        the host in GATEWAY_LISTEN and binds 0.0.0.0; hypercorn binds 127.0.0.1 only.
#                        twisted is ~1.5x faster for SQS batch calls (about 1,600-2,000 vs 900-1,200 msg/s
#                        received+deleted here), so prefer it for throughput benchmarks on a closed host.
#
# localstack-core 2026.x needs Python >= 3.13 and the dependency pins below, or it will not start.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${LOCALSTACK_HOME:-$REPO/.cache/localstack}"
PORT="${LOCALSTACK_PORT:-4566}"
SERVICES_LIST="${LOCALSTACK_SERVICES:-sqs,s3}"
START_TIMEOUT="${LOCALSTACK_START_TIMEOUT:-120}"
GATEWAY_SERVER_NAME="${LOCALSTACK_GATEWAY_SERVER:-hypercorn}"
VENV="$HOME_DIR/venv"
PIDFILE="$HOME_DIR/localstack.pid"
START_PIDFILE="$HOME_DIR/start.pid"
LOGFILE="$HOME_DIR/localstack.log"
STAMP="$VENV/.kordiam-bridge-stamp"
HEALTH_URL="http://127.0.0.1:$PORT/_localstack/health"

LOCALSTACK_VERSION="2026.3.0"
PINS=(
  "localstack-core[runtime]==$LOCALSTACK_VERSION"
  "cbor2>=5.6,<6"
  "cryptography<45"
  "pyopenssl==24.3.0"
  "joserfc<1.8"
  "service_identity<24.3"
)

say() { printf 'localstack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
}

# --- interpreter -----------------------------------------------------------

py_ok() {
  # True when "$1" runs and is Python >= 3.13.
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' >/dev/null 2>&1
}

find_python() {
  local cand v
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then
    py_ok "$LOCALSTACK_PYTHON" || die "LOCALSTACK_PYTHON=$LOCALSTACK_PYTHON is not a working Python >= 3.13"
    echo "$LOCALSTACK_PYTHON"
    return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    # Prefer 3.13.0 (on the machine image), then any installed 3.13 / 3.14.
    for v in 3.13.0 $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[34](\.[0-9]+)?$' | sort -rV); do
      for cand in "python${v%.*}" python3; do
        cand="$(PYENV_VERSION="$v" pyenv which "$cand" 2>/dev/null || true)"
        if [[ -n "$cand" ]] && py_ok "$cand"; then
          echo "$cand"
          return
        fi
      done
    done
  fi
  # A pyenv shim on PATH answers "command not found" unless its version is selected: py_ok checks it runs.
  for cand in python3.13 python3.14 python3; do
    cand="$(command -v "$cand" 2>/dev/null || true)"
    if [[ -n "$cand" ]] && py_ok "$cand"; then
      echo "$cand"
      return
    fi
  done
  die "no Python >= 3.13 found (tried LOCALSTACK_PYTHON, pyenv 3.13/3.14, python3.13, python3.14 on PATH); install one, e.g. 'pyenv install 3.13'"
}

# --- venv --------------------------------------------------------------------

pins_hash() {
  printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1
}

venv_ready() {
  [[ -x "$VENV/bin/python" && -f "$STAMP" ]] || return 1
  [[ "$(cat "$STAMP")" == "$(pins_hash)" ]] || return 1
  "$VENV/bin/python" - "$LOCALSTACK_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
import localstack  # noqa: F401
sys.exit(0 if version("localstack-core") == sys.argv[1] else 1)
EOF
}

ensure_venv() {
  if venv_ready; then
    return
  fi
  local py t0
  t0=$SECONDS
  py="$(find_python)"
  mkdir -p "$HOME_DIR"
  if [[ ! -x "$VENV/bin/python" ]] || ! py_ok "$VENV/bin/python"; then
    say "creating venv $VENV with $py"
    "$py" -m venv --clear "$VENV"
  fi
  say "installing localstack-core $LOCALSTACK_VERSION into $VENV (takes about a minute the first time)"
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq --upgrade pip
  "$VENV/bin/python" -m pip install --disable-pip-version-check -qq "${PINS[@]}" \
    || die "pip install failed (see output above)"
  pins_hash >"$STAMP"
  venv_ready || die "venv $VENV does not import localstack-core $LOCALSTACK_VERSION after install"
  say "venv ready in $((SECONDS - t0)) s"
}

# --- process helpers ---------------------------------------------------------

# LocalStack's entry point (python -m localstack.runtime.main) behind a SIGUSR1 handler that settles its heap with
# the bridge's own settle_after_startup (bridge/ops/heap.py, loaded by path: it needs only the standard library,
# and LocalStack's venv has no bridge): collect once, freeze what start-up built out of the garbage collector's
# way, collect the young generation less often. Sent once the warm-up is done. Measured with `python -m
# bench.ingress`: LocalStack's own full collections walked its start-up heap (botocore models, its service
# providers) for 50-190 ms, every call in flight waiting, the slowest hundredth of the ingress's answers.
LAUNCHER='import gc, importlib.util, os, runpy, signal
spec = importlib.util.spec_from_file_location("bridge_heap", os.environ.pop("LOCALSTACK_SH_HEAP_MODULE"))
heap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heap)
def settle(*_):
    heap.settle_after_startup()
    print(f"localstack.sh: start-up heap frozen ({gc.get_freeze_count()} objects)", flush=True)
signal.signal(signal.SIGUSR1, settle)
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)'

# Print the pid from the pid file if that process is alive and is our LocalStack.
running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid.
  if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'localstack'; then
    return 1
  fi
  echo "$pid"
}

# Print health JSON and succeed when the gateway answers and SQS is available/running.
health() {
  local py
  if [[ -x "$VENV/bin/python" ]]; then py="$VENV/bin/python"; else py="$(command -v python3)"; fi
  "$py" - "$HEALTH_URL" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        body = r.read().decode()
    data = json.loads(body)
except Exception:
    sys.exit(1)
if data.get("services", {}).get("sqs") not in ("available", "running"):
    sys.exit(1)
print(body)
EOF
}

port_in_use() {
  "$VENV/bin/python" -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$PORT"
}

# LocalStack loads a service's provider on its first request, which takes a few seconds; do it here so
# the first call of a test does not pay for it (health then shows "running" instead of "available").
warm_up() {
  "$VENV/bin/python" - "http://127.0.0.1:$PORT" "$SERVICES_LIST" <<'EOF' >/dev/null 2>&1 || true
import sys
import boto3
endpoint, services = sys.argv[1], sys.argv[2].split(",")
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
calls = {"sqs": "list_queues", "s3": "list_buckets"}
for name in (s.strip() for s in services):
    if name in calls:
        try:
            getattr(boto3.client(name, **kw), calls[name])()
        except Exception:
            pass
EOF
}

# Serialise start/stop between concurrent invocations (e.g. parallel CI steps sharing one home dir).
take_lock() {
  mkdir -p "$HOME_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$HOME_DIR/.lock"
    flock -w 600 9 || die "could not lock $HOME_DIR/.lock within 600 s"
  fi
}

# SIGTERM to the process group of $1 (setsid made it the leader; else to $1 alone), SIGKILL after 30 s; the pid
# file goes.
terminate() {
  local pid="$1" i
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid still alive after 30 s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PIDFILE"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
  local t0 pid deadline started=0
  t0=$SECONDS
  if health >/dev/null 2>&1; then
    say "already healthy on 127.0.0.1:$PORT"
    return 0
  fi
  take_lock
  # While it holds the lock: a stop meanwhile ends this start (end_start_under_way) rather than wait for it.
  echo $$ >"$START_PIDFILE"
  trap 'rm -f "$START_PIDFILE"' EXIT
  if health >/dev/null 2>&1; then
    say "already healthy on 127.0.0.1:$PORT"
    return 0
  fi
  ensure_venv
  mkdir -p "$HOME_DIR/volume"
  if pid="$(running_pid)"; then
    say "process $pid already running, waiting for it to become healthy"
  else
    rm -f "$PIDFILE"
    if port_in_use; then
      die "port $PORT on 127.0.0.1 is in use by something that is not a healthy LocalStack; free it or set LOCALSTACK_PORT"
    fi
    : >"$LOGFILE"
    # setsid: own process group, so stop can signal LocalStack and all its children at once.
    DISABLE_EVENTS=1 \
      SERVICES="$SERVICES_LIST" \
      GATEWAY_LISTEN="127.0.0.1:$PORT" \
      GATEWAY_SERVER="$GATEWAY_SERVER_NAME" \
      LOCALSTACK_VOLUME_DIR="$HOME_DIR/volume" \
      LOCALSTACK_SH_HEAP_MODULE="$REPO/bridge/ops/heap.py" \
      setsid "$VENV/bin/python" -c "$LAUNCHER" >>"$LOGFILE" 2>&1 </dev/null 9>&- &
    pid=$!
    started=1
    echo "$pid" >"$PIDFILE"
    say "started pid $pid (services $SERVICES_LIST, $GATEWAY_SERVER_NAME, log $LOGFILE)"
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if health >/dev/null 2>&1; then
      warm_up
      kill -USR1 "$pid" 2>/dev/null || true  # start-up is over: freeze its heap (see LAUNCHER)
      say "healthy on http://127.0.0.1:$PORT after $((SECONDS - t0)) s"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "process $pid exited before becoming healthy on 127.0.0.1:$PORT (its log above: $LOGFILE)"
    fi
    sleep 0.5
  done
  tail -n 40 "$LOGFILE" >&2 || true
  # A start that fails leaves nothing running: `make test-localstack` stops at a failed start and never reaches
  # its stop, so a LocalStack left here would run on, unowned.
  if ((started)); then
    terminate "$pid"
    die "not healthy on 127.0.0.1:$PORT within ${START_TIMEOUT} s: stopped pid $pid again (its log above: $LOGFILE)"
  fi
  die "not healthy on 127.0.0.1:$PORT within ${START_TIMEOUT} s from pid $pid, which an earlier start left; '$0 stop' ends it"
}

# A start holds the lock while it installs and boots LocalStack (minutes the first time): SIGTERM to its children
# first (pip, the health checks, the LocalStack it launched, pid file written or not), then to the start itself,
# which frees the lock. A start pid file that outlived its start may name any process: only a start is signalled.
end_start_under_way() {
  local pid
  pid="$(cat "$START_PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack\.sh start' || return 0
  say "ending the start under way (pid $pid)"
  pkill -TERM -P "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
}

cmd_stop() {
  local pid
  end_start_under_way
  take_lock
  rm -f "$START_PIDFILE"
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  # Signal the process group (setsid made pid the group leader); fall back to the pid alone.
  terminate "$pid"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if health; then
    return 0
  fi
  if pid="$(running_pid)"; then
    say "process $pid running but not healthy on 127.0.0.1:$PORT (log $LOGFILE)"
  else
    say "not running on 127.0.0.1:$PORT"
  fi
  return 1
}

cmd_env() {
  echo "export BRIDGE_TEST_SQS=localstack"
  echo "export LOCALSTACK_ENDPOINT=http://127.0.0.1:$PORT"
}

[[ $# -eq 1 ]] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
