"""The process's one HTTP client.

httpx's API on aiohttp's transport: httpx's own transport costs 2–6x more CPU per request and collapses under
concurrency on these machines, while ``httpx-aiohttp`` keeps 0.84–0.96x of raw aiohttp's throughput (see
README, "Performance"). Every outbound call (Kordiam, channels) shares this client and its connection pool.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx
from httpx_aiohttp import AiohttpTransport

from bridge import __version__

USER_AGENT = f"kordiam-bridge/{__version__}"


def create_http_client(*, max_connections: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits),
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds from now: the header holds either seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
