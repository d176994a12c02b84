#!/usr/bin/env bash
# Run ActiveMQ Classic (Debian's package) on 127.0.0.1, STOMP only, without Docker: Kordiam's message-queue option.
#
#   scripts/activemq.sh start|stop|status|env
#
# start   installs `activemq`, `default-jre-headless`, `libxstream-java` and `libjettison-java` if missing (needs
#         root or password-less sudo), writes a broker configuration of its own under $ACTIVEMQ_HOME/conf and runs
#         the broker in the foreground of its own process group: STOMP on 127.0.0.1:$ACTIVEMQ_PORT only, no
#         OpenWire, no web console, no JMX, persistence (KahaDB) and the scheduler store in $ACTIVEMQ_HOME/data,
#         the statistics plugin on (a queue's depth on request, for the bench). Idempotent: a broker that answers
#         STOMP on the port returns at once.
# stop    stops the broker (messages persist; the next start finds them).
# status  exit 0 when the broker answers a STOMP CONNECT.
# env     prints `export BRIDGE_TEST_ACTIVEMQ=stomp://127.0.0.1:$ACTIVEMQ_PORT`.
#
# Environment:
#   ACTIVEMQ_HOME           state dir (conf, data, log, pid); default $REPO/.cache/activemq
#   ACTIVEMQ_PORT           STOMP port on 127.0.0.1; default 61613
#   ACTIVEMQ_START_TIMEOUT  seconds to wait for the broker; default 60
#
# schedulerSupport is on: the bridge's "retry later" re-sends a message with an AMQ_SCHEDULED_DELAY header.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${ACTIVEMQ_HOME:-$REPO/.cache/activemq}"
PORT="${ACTIVEMQ_PORT:-61613}"
START_TIMEOUT="${ACTIVEMQ_START_TIMEOUT:-60}"
CONF="$HOME_DIR/conf"
DATA="$HOME_DIR/data"
PIDFILE="$HOME_DIR/activemq.pid"
LOGFILE="$HOME_DIR/activemq.log"
AMQ_SHARE=/usr/share/activemq
# XStream and Jettison let the broker answer a statistics request over STOMP as JSON (the broker's own build leaves
# them out); the bench reads a queue's depth that way (bench/run.py, StompQueues.depth).
PACKAGES=(default-jre-headless activemq libxstream-java libjettison-java)
EXTRA_JARS=(xstream jettison xpp3)

say() { printf 'activemq: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
}

[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || { say "ACTIVEMQ_PORT=$PORT is not a port number"; exit 2; }
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || { say "ACTIVEMQ_START_TIMEOUT=$START_TIMEOUT is not a whole number of seconds"; exit 2; }

# --- packages ----------------------------------------------------------------

packages_ready() {
  command -v java >/dev/null 2>&1 && [[ -f "$AMQ_SHARE/bin/activemq.jar" ]] && [[ -f /usr/share/java/xstream.jar ]] \
    && [[ -f /usr/share/java/jettison.jar ]]
}

ensure_packages() {
  if packages_ready; then
    return
  fi
  local sudo=() t0=$SECONDS
  mkdir -p "$HOME_DIR"
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "Debian packages missing; run as root: apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "packages missing and no apt-get here (need: ${PACKAGES[*]})"
  say "installing ${PACKAGES[*]} (about a minute)"
  # The package installs a service; on these machines policy-rc.d keeps it stopped, and it is never used.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${PACKAGES[@]}" >"$HOME_DIR/apt.log" 2>&1 \
    || { tail -n 30 "$HOME_DIR/apt.log" >&2; die "apt-get install failed (log $HOME_DIR/apt.log)"; }
  packages_ready || die "packages installed but java or $AMQ_SHARE/bin/activemq.jar still missing"
  say "packages installed in $((SECONDS - t0)) s"
}

# --- configuration -----------------------------------------------------------

write_config() {
  mkdir -p "$CONF" "$DATA" "$HOME_DIR/lib"
  # The broker's own lib folder is on its class path (ACTIVEMQ_BASE/lib).
  local jar
  for jar in "${EXTRA_JARS[@]}"; do
    ln -sf "/usr/share/java/$jar.jar" "$HOME_DIR/lib/$jar.jar"
  done
  # One STOMP connector on loopback; nothing else listens (no OpenWire, no Jetty console, no JMX connector).
  cat >"$CONF/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="kordiam-bridge" useJmx="false"
          dataDirectory="$DATA" schedulerSupport="true" schedulerDirectory="$DATA/scheduler">
    <managementContext><managementContext createConnector="false"/></managementContext>
    <!-- A queue deeper than the broker's memory, cheaply: a browser is shown only what the broker has paged in. The
         tests name such queues paged-in-test.<name> (test_activemq_operator_commands.py). -->
    <destinationPolicy><policyMap><policyEntries>
      <policyEntry queue="paged-in-test.>" memoryLimit="1 mb"/>
    </policyEntries></policyMap></destinationPolicy>
    <persistenceAdapter><kahaDB directory="$DATA/kahadb"/></persistenceAdapter>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        <storeUsage><storeUsage limit="1 gb"/></storeUsage>
        <tempUsage><tempUsage limit="256 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <!-- Queue statistics on request (ActiveMQ.Statistics.Destination.<queue>): the bench reads a queue's depth. -->
    <plugins><statisticsBrokerPlugin/></plugins>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$PORT?transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
EOF
  # Debian's build logs through log4j 1.2: warnings and the broker's start/stop lines, to the log file.
  cat >"$CONF/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, console
log4j.logger.org.apache.activemq.broker.BrokerService=INFO
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %-5p %c{1} - %m%n
EOF
}

# --- process helpers ---------------------------------------------------------

running_pid() {
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'activemq'; then
    return 1
  fi
  echo "$pid"
}

# Succeeds when a STOMP CONNECT on the port is answered with CONNECTED; prints the server header.
stomp_ready() {
  python3 - "$PORT" <<'EOF'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as conn:
        conn.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
        answer = conn.recv(4096).decode(errors="replace")
        conn.sendall(b"DISCONNECT\n\n\x00")
except OSError:
    sys.exit(1)
if not answer.startswith("CONNECTED"):
    sys.exit(1)
print(next((line for line in answer.splitlines() if line.startswith("server:")), "server:?"))
EOF
}

port_in_use() {
  python3 -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$PORT"
}

take_lock() {
  mkdir -p "$HOME_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$HOME_DIR/.lock"
    flock -w 300 9 || die "could not lock $HOME_DIR/.lock within 300 s"
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
  local t0=$SECONDS pid deadline started=0
  if stomp_ready >/dev/null 2>&1; then
    say "already answering STOMP on 127.0.0.1:$PORT"
    return 0
  fi
  take_lock
  if stomp_ready >/dev/null 2>&1; then
    say "already answering STOMP on 127.0.0.1:$PORT"
    return 0
  fi
  ensure_packages
  if pid="$(running_pid)"; then
    say "process $pid already running, waiting for STOMP"
  else
    rm -f "$PIDFILE"
    if port_in_use; then
      die "port $PORT on 127.0.0.1 is in use by something that does not answer STOMP; free it or set ACTIVEMQ_PORT"
    fi
    write_config
    : >"$LOGFILE"
    # setsid: own process group, so stop can signal the JVM and anything it spawned at once.
    (cd "$HOME_DIR" && exec setsid java -Xms64M -Xmx256M -Djava.awt.headless=true \
      -Dactivemq.base="$HOME_DIR" -Dactivemq.home="$AMQ_SHARE" -Dactivemq.conf="$CONF" -Dactivemq.data="$DATA" \
      -Dlog4j.configuration="file:$CONF/log4j.properties" \
      -jar "$AMQ_SHARE/bin/activemq.jar" start "xbean:file:$CONF/activemq.xml" \
      >>"$LOGFILE" 2>&1 </dev/null 9>&-) &
    pid=$!
    started=1
    echo "$pid" >"$PIDFILE"
    say "started pid $pid (STOMP 127.0.0.1:$PORT, data $DATA, log $LOGFILE)"
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if stomp_ready >/dev/null 2>&1; then
      say "answering STOMP on 127.0.0.1:$PORT after $((SECONDS - t0)) s"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      die "process $pid exited before answering STOMP on 127.0.0.1:$PORT (its log above: $LOGFILE)"
    fi
    sleep 0.3
  done
  tail -n 40 "$LOGFILE" >&2 || true
  # A start that fails leaves nothing running: no broker half up on the port, holding the data dir.
  if ((started)); then
    terminate "$pid"
    die "no STOMP answer on 127.0.0.1:$PORT within ${START_TIMEOUT} s: stopped pid $pid again (its log above: $LOGFILE)"
  fi
  die "no STOMP answer on 127.0.0.1:$PORT within ${START_TIMEOUT} s from pid $pid, which an earlier start left; '$0 stop' ends it"
}

cmd_stop() {
  local pid
  take_lock
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  terminate "$pid"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if stomp_ready; then
    return 0
  fi
  if pid="$(running_pid)"; then
    say "process $pid running but not answering STOMP on 127.0.0.1:$PORT (log $LOGFILE)"
  else
    say "not running on 127.0.0.1:$PORT"
  fi
  return 1
}

cmd_env() {
  echo "export BRIDGE_TEST_ACTIVEMQ=stomp://127.0.0.1:$PORT"
}

[[ $# -eq 1 ]] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
