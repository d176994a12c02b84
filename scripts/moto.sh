#!/usr/bin/env bash
# Run moto server (DynamoDB, SQS, S3 and the rest of moto) as a background process on 127.0.0.1.
#
#   scripts/moto.sh start|stop|status
#
# Environment:
#   MOTO_PORT           port on 127.0.0.1; default 5000
#   MOTO_HOME           pid/log dir; default $REPO/.cache/moto
#   MOTO_START_TIMEOUT  seconds to wait for the server to answer; default 30
#
# Uses the project's venv ($REPO/.venv/bin/moto_server, from the moto[server] dependency).
# Clients: endpoint_url=http://127.0.0.1:$MOTO_PORT, any region, keys "test"/"test".
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${MOTO_HOME:-$REPO/.cache/moto}"
PORT="${MOTO_PORT:-5000}"
START_TIMEOUT="${MOTO_START_TIMEOUT:-30}"
VENV="$REPO/.venv"
MOTO_SERVER="$VENV/bin/moto_server"
PIDFILE="$HOME_DIR/moto.pid"
LOGFILE="$HOME_DIR/moto.log"
URL="http://127.0.0.1:$PORT/moto-api/data.json"

say() { printf 'moto: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|status" >&2
  exit 2
}

# Print the pid from the pid file if that process is alive and is our moto server.
running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid.
  if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'moto'; then
    return 1
  fi
  echo "$pid"
}

# Succeed when moto answers: GET /moto-api/data.json gives 200 with a JSON object (its state dump).
answers() {
  local py
  if [[ -x "$VENV/bin/python" ]]; then py="$VENV/bin/python"; else py="$(command -v python3)"; fi
  "$py" - "$URL" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if isinstance(json.loads(r.read()), dict) else 1)
except Exception:
    sys.exit(1)
EOF
}

port_in_use() {
  "$VENV/bin/python" -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$PORT"
}

take_lock() {
  mkdir -p "$HOME_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$HOME_DIR/.lock"
    flock -w 120 9 || die "could not lock $HOME_DIR/.lock within 120 s"
  fi
}

cmd_start() {
  local t0 pid deadline
  t0=$SECONDS
  if answers; then
    say "already answering on 127.0.0.1:$PORT"
    return 0
  fi
  [[ -x "$MOTO_SERVER" ]] \
    || die "$MOTO_SERVER not found; create the project venv first (python -m venv .venv && .venv/bin/pip install -e '.[dev]')"
  take_lock
  if answers; then
    say "already answering on 127.0.0.1:$PORT"
    return 0
  fi
  if pid="$(running_pid)"; then
    say "process $pid already running, waiting for it to answer"
  else
    rm -f "$PIDFILE"
    if port_in_use; then
      die "port $PORT on 127.0.0.1 is in use by something that does not answer like moto; free it or set MOTO_PORT"
    fi
    : >"$LOGFILE"
    # setsid: own process group, so stop can signal it and any children at once.
    setsid "$MOTO_SERVER" -H 127.0.0.1 -p "$PORT" >>"$LOGFILE" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
    say "started pid $pid (log $LOGFILE)"
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if answers; then
      say "answering on http://127.0.0.1:$PORT after $((SECONDS - t0)) s"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "process $pid exited before answering; last 40 log lines:"
      tail -n 40 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    sleep 0.2
  done
  say "no answer after ${START_TIMEOUT} s; last 40 log lines of $LOGFILE:"
  tail -n 40 "$LOGFILE" >&2 || true
  say "pid $pid is left running; '$0 stop' ends it"
  exit 1
}

cmd_stop() {
  local pid i
  take_lock
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid still alive after 10 s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$PIDFILE"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if answers; then
    echo "moto: answering on http://127.0.0.1:$PORT"
    return 0
  fi
  if pid="$(running_pid)"; then
    say "process $pid running but not answering on 127.0.0.1:$PORT (log $LOGFILE)"
  else
    say "not running on 127.0.0.1:$PORT"
  fi
  return 1
}

[[ $# -eq 1 ]] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
