#!/usr/bin/env bash
# Run a real WordPress (Debian's package) on 127.0.0.1, without Docker, for the integration tests.
#
#   scripts/wordpress.sh start|stop|status|env
#
# start   installs the Debian packages if they are missing (needs root or password-less sudo), copies WordPress
#         into $WP_HOME/site, runs a private MariaDB on its own port and socket, installs the site without a
#         browser (scripts/wordpress/setup.php), and serves it with PHP's built-in server. Idempotent: a running,
#         working site returns at once. Writes $WP_HOME/credentials.json:
#           {"url", "username", "app_password", "author_email", "author_id", "admin_password", ...}
# stop    stops PHP and MariaDB (the site and database stay; the next start takes a few seconds).
# status  prints what runs; exit 0 when the REST API answers.
# env     prints `export BRIDGE_TEST_WORDPRESS=$WP_HOME/credentials.json`.
#
# Environment:
#   WP_HOME             state dir (site, database, logs, pids); default $REPO/.cache/wordpress
#   WP_PORT             HTTP port on 127.0.0.1; default 8089
#   WP_DB_PORT          MariaDB port on 127.0.0.1; default 33089
#   WP_WORKERS          PHP_CLI_SERVER_WORKERS; default 4 (1 is rejected by PHP)
#   WP_TIMEZONE         the site's time zone; default Europe/Berlin (not UTC, so local and GMT dates differ)
#   WP_START_TIMEOUT    seconds to wait for each service; default 60
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPERS="$REPO/scripts/wordpress"
HOME_DIR="${WP_HOME:-$REPO/.cache/wordpress}"
PORT="${WP_PORT:-8089}"
DB_PORT="${WP_DB_PORT:-33089}"
WORKERS="${WP_WORKERS:-4}"
TIMEZONE="${WP_TIMEZONE:-Europe/Berlin}"
START_TIMEOUT="${WP_START_TIMEOUT:-60}"
URL="http://127.0.0.1:$PORT"

SITE="$HOME_DIR/site"
DB_DIR="$HOME_DIR/db"
DB_DATA="$DB_DIR/data"
DB_CNF="$DB_DIR/my.cnf"
DB_PID="$DB_DIR/mariadbd.pid"
DB_LOG="$HOME_DIR/mariadb.log"
PHP_PID="$HOME_DIR/php.pid"
PHP_LOG="$HOME_DIR/php.log"
SECRETS="$HOME_DIR/secrets.env"
CREDENTIALS="$HOME_DIR/credentials.json"

# Measured: php-mysql (mysqli) and mariadb-server are needed; php-mbstring for proper UTF-8 handling; the theme
# (2 MB) so that a post's `link` shows a page instead of a blank one. php-curl/php-xml/php-gd are not needed for
# the REST API; apache2 comes in through the package's dependencies but is never started.
PACKAGES=(wordpress wordpress-theme-twentytwentythree php-cli php-mysql php-mbstring mariadb-server)

say() { printf 'wordpress: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
}

# A Unix socket path must fit in sun_path (108 bytes); a deep WP_HOME falls back to /tmp.
db_socket() {
  local sock="$DB_DIR/mariadbd.sock"
  if ((${#sock} > 100)); then
    sock="/tmp/kordiam-wp-$(printf '%s' "$HOME_DIR" | sha256sum | cut -c1-12).sock"
  fi
  echo "$sock"
}

# --- packages ----------------------------------------------------------------

packages_ready() {
  command -v php >/dev/null 2>&1 || return 1
  command -v mariadbd >/dev/null 2>&1 || return 1
  command -v mariadb-install-db >/dev/null 2>&1 || return 1
  command -v mariadb >/dev/null 2>&1 || return 1
  [[ -f /usr/share/wordpress/wp-settings.php ]] || return 1
  [[ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ]] || return 1
  # Not `php -m | grep -q`: with pipefail, grep exiting early can fail the pipeline through SIGPIPE.
  local modules
  modules="$(php -m 2>/dev/null)" || return 1
  [[ $'\n'"$modules"$'\n' == *$'\n'mysqli$'\n'* && $'\n'"$modules"$'\n' == *$'\n'mbstring$'\n'* ]] || return 1
}

ensure_packages() {
  if packages_ready; then
    return
  fi
  local sudo=() t0=$SECONDS
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "Debian packages missing; run as root: apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "packages missing and no apt-get here (need: ${PACKAGES[*]})"
  say "installing ${PACKAGES[*]} (about half a minute)"
  # The package pulls apache2 and mariadb-server's service; on these machines policy-rc.d keeps them stopped.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${PACKAGES[@]}" >"$HOME_DIR/apt.log" 2>&1 \
    || { tail -n 30 "$HOME_DIR/apt.log" >&2; die "apt-get install failed (log $HOME_DIR/apt.log)"; }
  packages_ready || die "packages installed but php/mysqli/mbstring/mariadbd/wordpress still missing"
  say "packages installed in $((SECONDS - t0)) s"
}

# --- configuration -----------------------------------------------------------

random_token() {
  # $1 characters of [A-Za-z0-9]
  local out=""
  while ((${#out} < $1)); do
    out+="$(head -c 256 /dev/urandom | tr -dc 'A-Za-z0-9')"
  done
  printf '%s' "${out:0:$1}"
}

# Generated once, kept across starts: the database password, the admin password and WordPress's salts.
ensure_secrets() {
  if [[ ! -f "$SECRETS" ]]; then
    local tmp="$SECRETS.tmp" name
    umask 077
    {
      echo "DB_PASSWORD=$(random_token 24)"
      echo "ADMIN_PASSWORD=$(random_token 20)"
      for name in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
        echo "$name=$(random_token 64)"
      done
    } >"$tmp"
    mv "$tmp" "$SECRETS"
  fi
  # shellcheck disable=SC1090
  source "$SECRETS"
}

write_db_config() {
  mkdir -p "$DB_DIR"
  cat >"$DB_CNF" <<EOF
[mysqld]
datadir=$DB_DATA
socket=$(db_socket)
pid-file=$DB_PID
port=$DB_PORT
bind-address=127.0.0.1
log-error=$DB_LOG
skip-log-bin
skip-name-resolve
performance_schema=OFF
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
innodb_use_native_aio=0
max_connections=64

[client]
socket=$(db_socket)
user=root
EOF
}

write_wp_config() {
  local key
  {
    echo "<?php"
    echo "// Written by scripts/wordpress.sh on every start; edit the script, not this file."
    echo "define('DB_NAME', 'wordpress');"
    echo "define('DB_USER', 'wordpress');"
    echo "define('DB_PASSWORD', '$DB_PASSWORD');"
    echo "define('DB_HOST', '127.0.0.1:$DB_PORT');"
    echo "define('DB_CHARSET', 'utf8mb4');"
    echo "define('DB_COLLATE', '');"
    for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
      echo "define('$key', '${!key}');"
    done
    cat <<EOF
\$table_prefix = 'wp_';
// Application Passwords need HTTPS unless the environment is local.
define('WP_ENVIRONMENT_TYPE', 'local');
define('WP_HOME', '$URL');
define('WP_SITEURL', '$URL');
define('WP_DEBUG', false);
define('WP_DEBUG_DISPLAY', false);
// Offline machine: no update checks, no calls to wordpress.org, no file changes from the admin.
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('DISALLOW_FILE_MODS', true);
define('FS_METHOD', 'direct');
if (!defined('ABSPATH')) {
    define('ABSPATH', __DIR__ . '/');
}
require_once ABSPATH . 'wp-settings.php';
EOF
  } >"$SITE/wp-config.php.tmp"
  mv "$SITE/wp-config.php.tmp" "$SITE/wp-config.php"
}

ensure_site() {
  if [[ ! -f "$SITE/wp-settings.php" ]]; then
    say "copying /usr/share/wordpress to $SITE"
    rm -rf "$SITE.tmp"
    # The package's tree holds relative symlinks into /usr/share/javascript and /usr/share/php: -L resolves them.
    cp -rL /usr/share/wordpress "$SITE.tmp"
    rm -f "$SITE.tmp/wp-config.php"
    mkdir -p "$SITE.tmp/wp-content/uploads"
    mv "$SITE.tmp" "$SITE"
  fi
  local theme
  for theme in /usr/share/wordpress/wp-content/themes/*/; do
    theme="$(basename "$theme")"
    [[ -d "$SITE/wp-content/themes/$theme" ]] || cp -rL "/usr/share/wordpress/wp-content/themes/$theme" "$SITE/wp-content/themes/"
  done
  write_wp_config
}

# --- processes ---------------------------------------------------------------

# Print the pid in file $1 if it is alive and its command line contains $2.
live_pid() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *"$2"* ]] || return 1
  fi
  echo "$pid"
}

db_ping() {
  mariadb-admin --defaults-file="$DB_CNF" --connect-timeout=2 ping >/dev/null 2>&1
}

# Run as root, mariadbd wants --user=root; otherwise it runs as the calling user.
db_user_flag() {
  if ((EUID == 0)); then echo "--user=root"; fi
}

ensure_db() {
  local t0=$SECONDS pid deadline started=0
  write_db_config
  if [[ ! -d "$DB_DATA/mysql" ]]; then
    say "initialising MariaDB data directory $DB_DATA"
    rm -rf "$DB_DATA"
    mkdir -p "$DB_DATA"
    # shellcheck disable=SC2046
    mariadb-install-db --defaults-file="$DB_CNF" $(db_user_flag) --auth-root-authentication-method=normal \
      --skip-test-db >"$HOME_DIR/mariadb-install.log" 2>&1 \
      || { tail -n 30 "$HOME_DIR/mariadb-install.log" >&2; die "mariadb-install-db failed (log $HOME_DIR/mariadb-install.log)"; }
  fi
  if db_ping; then
    :
  else
    if pid="$(live_pid "$DB_PID" mariadbd)"; then
      say "mariadbd $pid is running but does not answer yet"
    else
      rm -f "$DB_PID"
      # shellcheck disable=SC2046
      setsid mariadbd --defaults-file="$DB_CNF" $(db_user_flag) >>"$DB_LOG" 2>&1 </dev/null 9>&- &
      pid=$!
      started=1
    fi
    deadline=$((SECONDS + START_TIMEOUT))
    until db_ping; do
      if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 30 "$DB_LOG" >&2 || true
        die "mariadbd exited before answering (log $DB_LOG)"
      fi
      if ((SECONDS >= deadline)); then
        tail -n 30 "$DB_LOG" >&2 || true
        if ((started)); then
          kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true  # leave no database half up
          die "MariaDB did not answer within ${START_TIMEOUT} s: stopped mariadbd $pid again (log $DB_LOG)"
        fi
        die "MariaDB did not answer within ${START_TIMEOUT} s (mariadbd $pid, which an earlier start left; '$0 stop' ends it)"
      fi
      sleep 0.2
    done
    say "MariaDB up on 127.0.0.1:$DB_PORT after $((SECONDS - t0)) s"
  fi
  mariadb --defaults-file="$DB_CNF" <<EOF || die "cannot create the database and its user"
CREATE DATABASE IF NOT EXISTS wordpress CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'wordpress'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'wordpress'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON wordpress.* TO 'wordpress'@'127.0.0.1';
EOF
}

run_setup() {
  WPS_URL="$URL" \
    WPS_ADMIN_USER=admin \
    WPS_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    WPS_ADMIN_EMAIL=admin@example.test \
    WPS_AUTHOR_USER=author \
    WPS_AUTHOR_EMAIL=author@example.test \
    WPS_TIMEZONE="$TIMEZONE" \
    php -d display_errors=stderr -d memory_limit=256M "$HELPERS/setup.php" "$SITE" "$CREDENTIALS" \
    || die "WordPress set-up failed (scripts/wordpress/setup.php)"
}

# HTTP status of GET $1 (000 when nothing answers); $2 optional "user:password".
http_code() {
  php -r '
    $opts = ["http" => ["timeout" => 5, "ignore_errors" => true, "follow_location" => 0]];
    if ($argv[2] !== "") { $opts["http"]["header"] = "Authorization: Basic " . base64_encode($argv[2]); }
    $body = @file_get_contents($argv[1], false, stream_context_create($opts));
    if ($body === false || !isset($http_response_header[0])) { echo "000"; exit; }
    echo explode(" ", $http_response_header[0])[1];
  ' "$1" "${2:-}" 2>/dev/null || echo 000
}

# True when WordPress answers on $URL and credentials.json authenticates against it.
site_works() {
  [[ -f "$CREDENTIALS" ]] && command -v php >/dev/null 2>&1 || return 1
  local user password
  user="$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["username"] ?? "";' "$CREDENTIALS" 2>/dev/null)" || return 1
  password="$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["app_password"] ?? "";' "$CREDENTIALS" 2>/dev/null)" || return 1
  grep -q "\"url\": \"$URL\"" "$CREDENTIALS" || return 1
  [[ "$(http_code "$URL/?rest_route=/wp/v2/users/me" "$user:$password")" == 200 ]]
}

ensure_php() {
  local t0=$SECONDS pid deadline code
  if pid="$(live_pid "$PHP_PID" "php")"; then
    return
  fi
  code="$(http_code "$URL/")"
  [[ "$code" == 000 ]] || die "port $PORT already answers HTTP ($code) but not with our WordPress; stop it or set WP_PORT"
  rm -f "$PHP_PID"
  : >"$PHP_LOG"
  # OPcache is off in the CLI by default; on, a request costs a fraction of the time.
  PHP_CLI_SERVER_WORKERS="$WORKERS" setsid php \
    -d opcache.enable_cli=1 -d opcache.memory_consumption=128 -d opcache.validate_timestamps=0 \
    -d display_errors=0 -d log_errors=1 -d memory_limit=256M \
    -S "127.0.0.1:$PORT" -t "$SITE" "$HELPERS/router.php" >>"$PHP_LOG" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PHP_PID"
  deadline=$((SECONDS + START_TIMEOUT))
  until [[ "$(http_code "$URL/?rest_route=/")" == 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$PHP_LOG" >&2 || true
      rm -f "$PHP_PID"
      die "php -S exited before answering (log $PHP_LOG)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$PHP_LOG" >&2 || true
      stop_pid "$PHP_PID" php >/dev/null 2>&1 || true  # a failed start leaves no server on the port
      die "WordPress did not answer on $URL within ${START_TIMEOUT} s: stopped php $pid again (log $PHP_LOG)"
    fi
    sleep 0.2
  done
  say "PHP serving $URL (pid $pid, $WORKERS workers) after $((SECONDS - t0)) s"
}

take_lock() {
  mkdir -p "$HOME_DIR"
  exec 9>"$HOME_DIR/.lock"
  flock -w 600 9 || die "could not lock $HOME_DIR/.lock within 600 s"
}

# Stop the process in pid file $1 (its process group, started with setsid), waiting up to 30 s.
stop_pid() {
  local pid i
  pid="$(live_pid "$1" "$2")" || { rm -f "$1"; return 1; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$2 ($pid) still alive after 30 s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
  say "stopped $2 (pid $pid)"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
  local t0=$SECONDS
  if site_works; then
    say "already running on $URL"
    return 0
  fi
  take_lock
  if site_works; then
    say "already running on $URL"
    return 0
  fi
  ensure_packages
  ensure_secrets
  ensure_site
  ensure_db
  run_setup
  ensure_php
  site_works || die "WordPress runs on $URL but the Application Password in $CREDENTIALS is refused"
  say "ready on $URL after $((SECONDS - t0)) s (credentials $CREDENTIALS)"
}

cmd_stop() {
  take_lock
  local pid i
  stop_pid "$PHP_PID" php || say "php not running"
  if pid="$(live_pid "$DB_PID" mariadbd)"; then
    # A clean shutdown first (it flushes InnoDB); SIGTERM (same effect) if the client cannot connect.
    mariadb-admin --defaults-file="$DB_CNF" --connect-timeout=2 shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "mariadbd ($pid) still alive after 30 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DB_PID"
    say "stopped mariadbd (pid $pid)"
  else
    say "mariadbd not running"
  fi
}

cmd_status() {
  local pid rc=0
  if pid="$(live_pid "$PHP_PID" php)"; then say "php pid $pid serving $URL"; else say "php not running"; fi
  if pid="$(live_pid "$DB_PID" mariadbd)"; then say "mariadbd pid $pid on 127.0.0.1:$DB_PORT"; else say "mariadbd not running"; fi
  if site_works; then
    say "REST API answers and $CREDENTIALS authenticates"
  else
    say "not working on $URL"
    rc=1
  fi
  return "$rc"
}

cmd_env() {
  echo "export BRIDGE_TEST_WORDPRESS=$CREDENTIALS"
}

[[ $# -eq 1 ]] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
