# Sourced by the Makefile's test recipes (bash): `interruptible COMMAND [ARG...]` runs a step of `make test` (a
# service's start, pytest, the sub-make that runs a pass) in a process group of its own, waits for it and returns its
# exit status. Once the shell has got SIGINT or SIGTERM, `interrupted` names the signal and `interruptible` starts
# nothing more (it returns 130); the traps stay, so the recipe's clean-up after it runs whole.
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
interrupted=
_step=
trap '_pass_on INT' INT
trap '_pass_on TERM' TERM

interruptible() {
  [ -z "$interrupted" ] || return 130
  local status
  set -m
  "$@" </dev/null &
  _step=$!
  set +m
  # A signal between the start and `_step=` had no group to go to yet.
  [ -z "$interrupted" ] || kill -s "$interrupted" -- "-$_step" 2>/dev/null
  wait "$_step"
  status=$?
  # `wait` ended by a trapped signal: the command is still stopping.
  while kill -0 "$_step" 2>/dev/null; do
    wait "$_step"
    status=$?
  done
  _step=
  return "$status"
}

# The traps' action: the first signal only, to the group of the step that runs (if one does).
_pass_on() {
  [ -z "$interrupted" ] || return 0
  interrupted=$1
  [ -z "$_step" ] || kill -s "$1" -- "-$_step" 2>/dev/null
}
