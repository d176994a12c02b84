# Sourced by the Makefile's test recipes (bash): `interruptible COMMAND [ARG...]` runs a test pass (pytest, or the
# sub-make that runs one) in a process group of its own, waits for it and returns its exit status; `interrupted`
# names the signal once the shell got SIGINT or SIGTERM (the traps stay, so the recipe's clean-up after it runs whole).
#
# make hands a SIGTERM sent to its pid alone (as some CI runners send it, rather than to its process group) to its
# recipe's shell only, and a shell runs its trap only once its foreground command has ended: the pass never heard of
# it and ran to its end first (a whole test run), and a runner's SIGKILL after its grace period then left pytest,
# the brokers and the background prepares running. A command in the background is waited for with `wait`, which a
# trapped signal ends at once, and the trap passes the signal on to the command's whole group (a Ctrl-C stays a
# SIGINT: pytest stops and runs its teardown), once: a SIGTERM to make's process group reaches this shell twice (from
# the sender and from make), and a second SIGINT would cut pytest's teardown short. In a group of its own (set -m)
# the command has SIGINT as the shell has it, not ignored as a background command of a shell without job control
# (Python would then never raise KeyboardInterrupt), and is signalled once, by this shell. Its stdin is /dev/null:
# a background group that reads the terminal is stopped (SIGTTIN).
interruptible() {
  interrupted=
  local pass= status
  trap '_pass_on INT' INT
  trap '_pass_on TERM' TERM
  set -m
  "$@" </dev/null &
  pass=$!
  set +m
  # A signal between the start and `pass=` had no group to go to yet.
  [ -z "$interrupted" ] || kill -s "$interrupted" -- "-$pass" 2>/dev/null
  wait "$pass"
  status=$?
  # `wait` ended by a trapped signal: the command is still stopping.
  while kill -0 "$pass" 2>/dev/null; do
    wait "$pass"
    status=$?
  done
  return "$status"
}

# The traps' action: the first signal only, to the group `interruptible` started (none once it has returned).
_pass_on() {
  [ -z "$interrupted" ] || return 0
  interrupted=$1
  [ -z "${pass:-}" ] || kill -s "$1" -- "-$pass" 2>/dev/null
}
