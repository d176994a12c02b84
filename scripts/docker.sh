#!/usr/bin/env bash
# The container image on a machine that may have no Docker engine and reach no container registry.
#
#   scripts/docker.sh build          build kordiam-bridge:local and kordiam-bridge-demo:local (needs an engine)
#   scripts/docker.sh base           print the base image to build on; make it first if needed
#   scripts/docker.sh engine-start   start a Docker engine (as root; installs Debian's docker.io first if
#                                    needed) unless one answers already
#   scripts/docker.sh engine-stop    stop the engine engine-start started, nothing else
#   scripts/docker.sh prepare        what `test` does before the tests: engine, base, both images (BuildKit,
#                                    legacy builder, and buildah as a third builder)
#   scripts/docker.sh prepare-background   the same in the background, its output in .cache/image-prepare.log:
#                                    `make test` runs it during its main pass, and its `test` finds the images
#   scripts/docker.sh test           `make image-test`: `prepare` unless a finished one matches the sources,
#                                    then tests/image (the image run for real, and the compose stack); stops
#                                    the engine if it or that `prepare` started it
#   scripts/docker.sh discard        stop a background `prepare` still running (its builds, and the engine it
#                                    started), or the engine a finished one left (what `make test` does when a
#                                    pass fails or it is interrupted)
#   scripts/docker.sh lock           remake infra/docker/requirements.lock (needs the package index, no engine)
#
# Client: Debian's /usr/bin/docker (20.10, from docker.io) where it exists. It drives the engine's built-in
# BuildKit (DOCKER_BUILDKIT=1); a newer CLI without the buildx plugin (the 28.x in /usr/local/bin on these
# machines) can only use the legacy builder. Both builders are exercised: the demo image is built with the
# legacy one. Override with DOCKER=/path/to/docker.
#
# Base image: debian:bookworm-slim, pulled when a registry answers. Otherwise a stand-in built here from Debian's
# packages the way the official one is made (debootstrap --variant=minbase bookworm, documentation and locales
# left out, the same apt sources including bookworm-security), imported as kordiam-bridge-base:bookworm-<recipe>
# and kept with `docker save` in the cache below, so the next run on this machine loads it in seconds.
# BASE_IMAGE=... skips both and uses that image.
#
# Cache: KORDIAM_BRIDGE_CACHE, default ~/.cache/kordiam-bridge (outside the clone: CI clones afresh each run).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${KORDIAM_BRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kordiam-bridge}"
ENGINE_DIR="$CACHE/engine"
OFFICIAL_BASE=debian:bookworm-slim
IMAGE="${IMAGE:-kordiam-bridge:local}"
DEMO_IMAGE="${DEMO_IMAGE:-kordiam-bridge-demo:local}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

if [[ -z "${DOCKER:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER

# Interrupted (Ctrl-C, SIGTERM), the script still runs its EXIT traps: the engine a `prepare` or `test` started stops.
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "docker.sh: $*" >&2; }
fail() { say "$*"; exit 2; }

engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

apt_install() {
  say "installing Debian packages: $*"
  # apt-get update only when the package lists are older than a day (or missing).
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n1)" ]]; then
    apt-get update -q >/dev/null
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

engine_start() {
  if engine_answers; then
    say "a Docker engine answers already: using it (and leaving it running)"
    return 0
  fi
  [[ "$(id -u)" == 0 ]] || fail "no Docker engine answers and starting one needs root: start dockerd yourself"
  # iptables: the default bridge network's NAT rules (Debian's iptables uses the nftables backend).
  if ! command -v dockerd >/dev/null || ! command -v iptables >/dev/null; then
    apt_install docker.io iptables
    DOCKER=/usr/bin/docker
  fi
  mkdir -p "$ENGINE_DIR"
  say "starting dockerd (log: $ENGINE_DIR/dockerd.log)"
  # 9>&-: a `prepare` holds its lock on fd 9, which the engine must not keep after the prepare ends.
  setsid dockerd --storage-driver=overlay2 >"$ENGINE_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
  echo $! >"$ENGINE_DIR/dockerd.pid"
  STARTED_ENGINE=1
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if ! kill -0 "$(cat "$ENGINE_DIR/dockerd.pid")" 2>/dev/null; then
      tail -n 20 "$ENGINE_DIR/dockerd.log" >&2
      rm -f "$ENGINE_DIR/dockerd.pid"
      fail "dockerd exited during start-up (log above)"
    fi
    ((SECONDS < deadline)) || { engine_stop; fail "dockerd did not answer within 60 s"; }
    sleep 0.5
  done
  say "Docker engine $("$DOCKER" version --format '{{.Server.Version}}') started"
}

engine_stop() {
  local pidfile="$ENGINE_DIR/dockerd.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  # A pid file that outlived its dockerd (a reboot, a crash) may name any process by now: signal only a dockerd.
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]]; then
    say "$pidfile names pid $pid, which is not dockerd: removing the stale pid file, signalling nothing"
  elif [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    # dockerd stops its containers and its own containerd before it exits.
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd $pid did not stop within 60 s: killing it"
      kill -KILL "$pid"
    fi
    say "stopped the Docker engine this script started (pid $pid)"
  fi
  rm -f "$pidfile"
}

# The Debian mirror the host's apt uses (a stand-in must come from the same place as everything else here).
debian_mirror() {
  local uri
  uri="$(grep -hoE '^(URIs:|deb)\s+\S+/debian/?(\s|$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
    2>/dev/null | awk '{print $2}' | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# What debian:bookworm-slim is: a minbase debootstrap of bookworm, without documentation, manuals and locales
# (also for packages installed later), with the release, updates and security suites. The host's own extra CA
# certificates go in too, so pip and apt inside a build reach the registries the way the host does.
build_standin() {
  local rootfs="$1" mirror="$2"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; fail "debootstrap failed (log above)"; }
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/*
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*
}

# Prints the base image to build on, after making it available in the engine.
base_image() {
  if [[ -n "${BASE_IMAGE:-}" ]]; then
    say "base image: $BASE_IMAGE (given)"
    echo "$BASE_IMAGE"
    return
  fi
  if timeout 120 "$DOCKER" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    say "base image: $OFFICIAL_BASE (pulled from its registry)"
    echo "$OFFICIAL_BASE"
    return
  fi
  local recipe tag archive
  recipe="$(declare -f build_standin | sha256sum | cut -c1-12)"
  tag="kordiam-bridge-base:bookworm-$recipe"
  archive="$CACHE/base-bookworm-$recipe.tar"
  if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    say "base image: $tag (no registry answers; stand-in built from Debian packages, already in the engine)"
  elif [[ -f "$archive" ]]; then
    "$DOCKER" load -q -i "$archive" >/dev/null
    say "base image: $tag (no registry answers; stand-in built from Debian packages, loaded from $archive)"
  else
    [[ "$(id -u)" == 0 ]] || fail "no registry answers and building the stand-in base needs root (debootstrap)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    local work started=$SECONDS
    mkdir -p "$CACHE"
    rm -rf "$CACHE"/rootfs.* "$CACHE"/base-bookworm-*.tar.part  # what an interrupted run left
    work="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    say "no registry answers: building $tag with debootstrap from $(debian_mirror)"
    build_standin "$work/rootfs" "$(debian_mirror)"
    tar -C "$work/rootfs" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "$tag" >/dev/null
    "$DOCKER" save -o "$archive.part" "$tag" && mv "$archive.part" "$archive"
    rm -rf "$work"
    say "base image: $tag (no registry answers; stand-in built from Debian packages in $((SECONDS - started)) s," \
      "saved to $archive)"
  fi
  echo "$tag"
}

# build IMAGE BASE [docker build args...]: prints the seconds it took.
build_image() {
  local image="$1" base="$2" started=$SECONDS
  shift 2
  "$DOCKER" build -q -f "$REPO/infra/docker/Dockerfile" --build-arg "BASE_IMAGE=$base" -t "$image" "$@" "$REPO" \
    >/dev/null
  echo $((SECONDS - started))
}

# The production image with BuildKit, the demo image (moto, for `demo` and compose's moto profile) with the
# legacy builder: every run proves the Dockerfile builds with both.
build_images() {
  local base="$1" seconds old_image old_demo
  old_image="$(image_id "$IMAGE")"
  old_demo="$(image_id "$DEMO_IMAGE")"
  seconds="$(DOCKER_BUILDKIT=1 build_image "$IMAGE" "$base")"
  say "built $IMAGE with BuildKit in $seconds s: $(image_size "$IMAGE")"
  seconds="$(DOCKER_BUILDKIT=0 build_image "$DEMO_IMAGE" "$base" --build-arg EXTRAS=demo)"
  say "built $DEMO_IMAGE with the legacy builder in $seconds s: $(image_size "$DEMO_IMAGE")"
  remove_superseded "$old_image" "$old_demo"
}

image_id() { "$DOCKER" image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# What a rebuild leaves untagged, about 1 GB each time the sources change: the images the tags named before, and
# the legacy builder's builder stages (untagged images with the Dockerfile's org.kordiam-bridge.builder label; the
# newest of each EXTRAS stays, as that builder's layer cache). Never forced: an image a container still uses, or
# that another tag names, stays; untagged images this script did not make are not touched.
remove_superseded() {
  local old stage extras kept=" " removed=0
  for old in "$@"; do
    [[ -n "$old" && "$old" != "$(image_id "$IMAGE")" && "$old" != "$(image_id "$DEMO_IMAGE")" ]] || continue
    "$DOCKER" image rm "$old" >/dev/null 2>&1 && removed=$((removed + 1))
  done
  # `docker images` lists the newest first.
  for stage in $("$DOCKER" images -q --filter dangling=true --filter label=org.kordiam-bridge.builder); do
    extras="$("$DOCKER" image inspect -f '{{index .Config.Labels "org.kordiam-bridge.builder"}}' "$stage" 2>/dev/null)" \
      || continue
    if [[ "$kept" == *" [$extras] "* ]]; then
      "$DOCKER" image rm "$stage" >/dev/null 2>&1 && removed=$((removed + 1))
    else
      kept+="[$extras] "
    fi
  done
  ((removed == 0)) || say "removed $removed image(s) this rebuild superseded"
}

# buildah (Debian's 1.28) builds the same Dockerfile in its own image store; --format docker keeps the
# HEALTHCHECK, which the OCI format has no field for. chroot isolation and the host network: no CNI set-up.
buildah_check() {
  local base="$1" started=$SECONDS id healthcheck
  command -v buildah >/dev/null || apt_install buildah
  id="$(buildah pull -q "docker-daemon:$base")"
  buildah bud -q --layers --isolation chroot --network host --format docker -f "$REPO/infra/docker/Dockerfile" \
    --build-arg "BASE_IMAGE=$id" -t localhost/kordiam-bridge-buildah:local "$REPO" >/dev/null
  healthcheck="$(buildah inspect --format '{{.Docker.Config.Healthcheck.Test}}' localhost/kordiam-bridge-buildah:local)"
  [[ "$healthcheck" == *kordiam-bridge-healthcheck* ]] || fail "buildah's image has no HEALTHCHECK: $healthcheck"
  say "built the image with buildah $(buildah --version | awk '{print $3}') in $((SECONDS - started)) s," \
    "HEALTHCHECK kept"
}

# infra/docker/requirements.lock: what pip resolves for both images' requirements (pyproject's dependencies, the
# demo and otel groups) as the build installs them (CPython 3.11, Linux x86_64, wheels only), held to the versions
# the dev virtualenv has, so the image runs what the tests ran. Nothing is installed: pip's --dry-run report.
lock() {
  local work lockfile="$REPO/infra/docker/requirements.lock" platforms=() minor
  # Every manylinux tag bookworm's glibc 2.36 takes (pip does not widen one --platform to the older ones).
  for minor in {5..36}; do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  platforms+=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
  work="$(mktemp -d)"
  "$PYTHON" "$REPO/infra/docker/requirements.py" "$REPO/pyproject.toml" --extra demo --extra otel \
    >"$work/requirements.txt"
  "$PYTHON" -m pip freeze --exclude-editable >"$work/tested.txt"
  "$PYTHON" -m pip install -q --dry-run --ignore-installed --only-binary=:all: --target "$work/none" \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "${platforms[@]}" --platform any \
    -c "$work/tested.txt" -r "$work/requirements.txt" --report "$work/report.json" \
    || { rm -rf "$work"; fail "pip could not resolve the images' requirements (output above)"; }
  {
    sed -n '/^#/p;/^[^#]/q' "$lockfile"
    "$PYTHON" -c 'import json, sys
for name, version in sorted(((i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"]), key=lambda p: p[0].lower()):
    print(f"{name}=={version}")' "$work/report.json"
  } >"$work/requirements.lock"
  mv "$work/requirements.lock" "$lockfile"
  rm -rf "$work"
  say "wrote $lockfile ($(grep -c '^[^#]' "$lockfile") packages)"
}

image_size() { "$DOCKER" image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# A `prepare` leaves what it made in $PREPARED for the `test` that follows, and holds $PREPARE_LOCK while it works,
# so a `test` (or `discard`) started meanwhile waits for it. What it left counts only for the same sources: the
# contents of the files .dockerignore lets into the build context, hashed.
PREPARED="$REPO/.cache/image-prepared"
PREPARE_LOCK="$REPO/.cache/image-prepare.lock"
PREPARE_LOG="$REPO/.cache/image-prepare.log"
PREPARE_PID="$REPO/.cache/image-prepare.pid"

sources_digest() {
  # Outside a git checkout nothing tells the sources apart: a digest that never matches.
  git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || { echo "no-git-$$-$RANDOM"; return; }
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md LICENSE bridge \
    infra/docker | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

take_prepare_lock() {
  mkdir -p "$(dirname "$PREPARE_LOCK")"
  exec 9>"$PREPARE_LOCK"
  flock 9
}

# The engine, docker-compose, the base and all three builds. Sets BASE.
prepare_images() {
  engine_start
  # docker-compose: Debian's 1.29 (Compose v2 is in no registry these machines reach; docker-compose.yml is
  # written for both).
  command -v docker-compose >/dev/null || apt_install docker-compose
  BASE="$(base_image)"
  build_images "$BASE"
  buildah_check "$BASE"
}

# The lock is taken before it returns (so a `test` right after waits), and the prepare runs on in the background,
# holding it. set -m gives it a process group of its own, named in $PREPARE_PID: `discard` stops the group (the
# builds, debootstrap) rather than wait minutes for it, and a Ctrl-C at the terminal does not reach it (an
# interrupted `make test` discards it).
run_prepare_background() {
  take_prepare_lock
  set -m
  (prepare_locked) >"$PREPARE_LOG" 2>&1 </dev/null &
  set +m
  echo $! >"$PREPARE_PID"
  say "preparing the images in the background (log $PREPARE_LOG)"
}

run_prepare() {
  take_prepare_lock
  prepare_locked
}

prepare_locked() {
  local started=$SECONDS sources
  # An engine an earlier prepare started and no `test` stopped yet is still this script's to stop.
  STARTED_ENGINE="$(prepared_engine)"
  rm -f "$PREPARED"
  # A prepare that fails or is stopped (`discard`) stops the engine it started: no `test` will.
  trap '((STARTED_ENGINE)) && engine_stop' EXIT
  trap 'exit 143' TERM
  # Before the builds: a file edited while they run must not count as built.
  sources="$(sources_digest)"
  prepare_images
  # Written whole or not at all: the record stands only for a prepare that finished.
  printf 'sources=%s\nbase=%s\nstarted_engine=%s\n' "$sources" "$BASE" "$STARTED_ENGINE" >"$PREPARED.part"
  mv "$PREPARED.part" "$PREPARED"
  trap - EXIT
  say "images prepared in $((SECONDS - started)) s"
}

prepared_value() { sed -n "s/^$1=//p" "$PREPARED"; }

# 1 if a prepare left an engine it started running (engine_stop stops only the dockerd its pid file names), else 0.
prepared_engine() {
  if [[ -f "$PREPARED" && "$(prepared_value started_engine)" == 1 ]]; then echo 1; else echo 0; fi
}

run_test() {
  local started=$SECONDS
  take_prepare_lock
  # Before the images are built (again): the engine a prepare started is this test's to stop, used or not.
  STARTED_ENGINE="$(prepared_engine)"
  trap '((STARTED_ENGINE)) && engine_stop' EXIT
  if [[ -f "$PREPARED" && "$(prepared_value sources)" == "$(sources_digest)" ]] && engine_answers; then
    BASE="$(prepared_value base)"
    [[ ! -f "$PREPARE_LOG" ]] || cat "$PREPARE_LOG" >&2
    say "using the images the background prepare built (base $BASE)"
  else
    if [[ -f "$PREPARED" ]] && ! engine_answers; then
      say "the engine the images were prepared on no longer answers: preparing again"
    elif [[ -f "$PREPARED" ]]; then
      say "the sources changed since the images were prepared: building them again"
    elif [[ -f "$PREPARE_LOG" ]]; then
      tail -n 20 "$PREPARE_LOG" >&2
      say "the background prepare did not finish (its log's end above): preparing again"
    fi
    prepare_images
  fi
  rm -f "$PREPARED" "$PREPARE_LOG" "$PREPARE_PID"
  local status=0
  BRIDGE_TEST_IMAGE="$IMAGE" BRIDGE_TEST_DEMO_IMAGE="$DEMO_IMAGE" BRIDGE_TEST_BASE_IMAGE="$BASE" \
    "$PYTHON" -m pytest ${PYTEST_FLAGS:--q} -s -p no:cacheprovider "$REPO/tests/image" || status=$?
  say "image test took $((SECONDS - started)) s in all"
  return "$status"
}

run_discard() {
  stop_background_prepare
  take_prepare_lock
  if (($(prepared_engine))); then
    engine_stop
  fi
  rm -f "$PREPARED" "$PREPARE_PID"
}

# SIGTERM to the process group of a background prepare that still runs: its EXIT trap stops the engine it started,
# and its lock is free once the group has ended. A pid file that outlived its prepare may name any process by now:
# only a group led by this script is signalled.
stop_background_prepare() {
  local pid
  pid="$(cat "$PREPARE_PID" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'docker\.sh prepare-background'; then
    say "stopping the background prepare (process group $pid, log $PREPARE_LOG)"
    kill -TERM -- "-$pid" 2>/dev/null || true
  fi
}

case "${1:-}" in
  build)
    engine_answers || fail "no Docker engine answers: start one (as root: scripts/docker.sh engine-start)"
    build_images "$(base_image)"
    ;;
  base)
    engine_answers || fail "no Docker engine answers: start one (as root: scripts/docker.sh engine-start)"
    base_image
    ;;
  engine-start) engine_start ;;
  engine-stop) engine_stop ;;
  prepare) run_prepare ;;
  prepare-background) run_prepare_background ;;
  test) run_test ;;
  discard) run_discard ;;
  lock) lock ;;
  *) fail "usage: scripts/docker.sh build|base|engine-start|engine-stop|prepare|prepare-background|test|discard|lock" ;;
esac
