#!/usr/bin/env bash
# `make test`'s main pass: `scripts/main-pass.sh PYTEST [FLAG...]` runs the unit tests in a pytest of their own
# alongside the service tests (every other folder of tests/, the fault suite last), waits for both, prints the unit
# pass's output after the service pass's, and exits non-zero if either failed.
#
# Both passes spend most of their time waiting (a subprocess, a deadline, a worker's answer), not on the CPU: one
# after the other, the unit pass's minutes were added to the service pass's. The unit pass (a few minutes) runs
# beside the integration tests, never beside the fault suite, whose cases are bounded by timeouts.
#
# Each pass has a process group of its own (a background command of a shell without job control would ignore
# SIGINT, and Python would never raise KeyboardInterrupt); a SIGINT or SIGTERM to this script (interruptible.sh
# sends it one) goes on to both, once, and `wait` ends at a trapped signal, so it goes on at once.
set -u

log=.cache/unit-pass.log
mkdir -p .cache
services=()
for folder in tests/*/; do
  folder=${folder%/}
  case "$folder" in tests/unit | tests/faults) continue ;; esac
  compgen -G "$folder/test_*.py" >/dev/null && services+=("$folder")
done
services+=(tests/faults)

passes=()
sent=0
signalled=
# The first signal only, to every pass started (and, through send_on after each start, to one started after it).
pass_on() {
  [ -z "$signalled" ] || return 0
  signalled=$1
  send_on
}
send_on() {
  while [ "$sent" -lt "${#passes[@]}" ]; do
    kill -s "$signalled" -- "-${passes[$sent]}" 2>/dev/null
    sent=$((sent + 1))
  done
}
trap 'pass_on INT' INT
trap 'pass_on TERM' TERM

set -m
"$@" tests/unit </dev/null >"$log" 2>&1 &
passes+=($!)
[ -z "$signalled" ] || send_on
"$@" --durations=15 "${services[@]}" </dev/null &
passes+=($!)
[ -z "$signalled" ] || send_on
set +m

# The exit status of pass $1, waiting through any trapped signal until it has ended.
ended() {
  local status
  wait "$1"
  status=$?
  while kill -0 "$1" 2>/dev/null; do
    wait "$1"
    status=$?
  done
  return "$status"
}

ended "${passes[1]}"
service_status=$?
ended "${passes[0]}"
unit_status=$?
echo "==== unit pass (tests/unit, run alongside; log $log) ===="
cat "$log"
[ "$service_status" -eq 0 ] && [ "$unit_status" -eq 0 ] && [ -z "$signalled" ]
