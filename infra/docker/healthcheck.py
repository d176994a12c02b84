#!/usr/bin/env python3
"""Container health check: exit 0 when the worker's ``/healthz`` answers 200, 1 otherwise.

Used by the image's HEALTHCHECK, by docker compose and by the ECS task definition. Standard library only, so
the slim image needs no curl. The port comes from ``BRIDGE_OPS__PORT`` (default 9090); the worker binds
``BRIDGE_OPS__HOST`` (0.0.0.0 in the image), so the loopback address always reaches it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("BRIDGE_OPS__PORT", "9090")
    url = os.environ.get("BRIDGE_HEALTHCHECK_URL", f"http://127.0.0.1:{port}/healthz")
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
