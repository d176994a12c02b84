#!/usr/bin/env python3
"""Container health check: exit 0 when the worker's ``/healthz`` answers 200, 1 otherwise.

Used by the image's HEALTHCHECK, by docker compose and by the ECS task definition. Standard library only, so
the slim image needs no curl. The port is the one the worker listens on: ``BRIDGE_OPS__PORT`` when set (it
overrides the file), else ``ops.port`` of the worker's config file (``--config`` on the command line of the
container's PID 1, tini, or ``BRIDGE_CONFIG``), else 9090; for ``kordiam-bridge ingress`` the same with
``BRIDGE_INGRESS__PORT``, ``ingress.port`` and 8780. The worker binds ``BRIDGE_OPS__HOST`` (0.0.0.0 in the
image), so the loopback address always reaches it. ``BRIDGE_HEALTHCHECK_URL`` replaces all of this (compose
points it at the simulator's and the ingress's own ``/healthz``).
"""

from __future__ import annotations

import math
import os
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping

# The command -> (its config section, its environment override, the default port) of the /healthz it serves: the
# worker's ops server, or the ingress's own port (`kordiam-bridge ingress` runs no ops server).
SERVERS = {"ingress": ("ingress", "BRIDGE_INGRESS__PORT", 8780)}
WORKER = ("ops", "BRIDGE_OPS__PORT", 9090)


def config_file(environ: Mapping[str, str], argv: list[str]) -> str | None:
    """The config file the worker was started with: ``--config PATH`` / ``--config=PATH``, else BRIDGE_CONFIG."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return environ.get("BRIDGE_CONFIG") or None


def command(argv: list[str]) -> str | None:
    """The kordiam-bridge command in ``argv`` (``run``, ``ingress``, ...), if any."""
    for index, arg in enumerate(argv[:-1]):
        if os.path.basename(arg) == "kordiam-bridge":
            return argv[index + 1]
    return None


def healthz_url(environ: Mapping[str, str], argv: list[str]) -> str:
    """Where the process started by ``argv`` (PID 1's command line) in this environment answers ``/healthz``."""
    if environ.get("BRIDGE_HEALTHCHECK_URL"):
        return environ["BRIDGE_HEALTHCHECK_URL"]
    section, variable, default = SERVERS.get(command(argv) or "", WORKER)
    # The bridge reads its variables' names in any case.
    port: object = next((value for name, value in environ.items() if name.upper() == variable), None)
    path = config_file(environ, argv)
    if not port and path:
        try:
            with open(path, "rb") as handle:
                port = tomllib.load(handle).get(section, {}).get("port")
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            port = None  # the process would not have started on such a file; the check below fails anyway
    return f"http://127.0.0.1:{port_number(port) or default}/healthz"


def port_number(value: object) -> int | None:
    """The port as the bridge reads ``ops.port``: a number, or its text with spaces around ("9090 ", a file's
    last newline) or in quotes; None for what the bridge would not have started on."""
    try:
        number = float(value.strip()) if isinstance(value, str) else value
    except ValueError:
        return None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        return None
    return int(number) if number == int(number) else None


def init_argv() -> list[str]:
    """PID 1's command line when it runs kordiam-bridge (the image's tini does), else nothing."""
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return []
    return argv if any(os.path.basename(arg) == "kordiam-bridge" for arg in argv) else []


def main() -> int:
    url = healthz_url(os.environ, init_argv())
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("BRIDGE_HEALTHCHECK_TIMEOUT", "4"))) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"healthcheck: {url} answered {error.code}", file=sys.stderr)
    except (OSError, ValueError) as error:
        print(f"healthcheck: {url} unreachable: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
