"""``/healthz``, ``/readyz`` and ``/metrics`` on the ``[ops]`` port."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.errors import ConfigError


class OpsServer:
    """The worker's probes and metrics: ``/healthz`` (200, or 503 ``poll loop stalled`` when ``healthy`` says no),
    ``/readyz`` (200 ``ready``, or 503 ``not ready`` with the reason and since when), ``/metrics``. Each answer only
    reads what the worker already knows: a probe never waits on the queue, Kordiam or the state store."""

    # aiohttp closes a connection that has not sent a whole request head this long after it opened or after its last
    # answer (its own default is an hour): the ops port shares the process's file descriptors with the worker's own
    # connections, so a head sent byte by byte, or an idle connection, must not hold one for long. Longer than a
    # Prometheus scrape interval, so that a scraper keeps its connection.
    keepalive_timeout: ClassVar[float] = 75.0

    def __init__(
        self,
        host: str,
        port: int,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        not_ready_reason: Callable[[], str | None] = lambda: None,
        not_ready_since: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``not_ready_reason`` says why the worker takes no messages now (None when it does, or no reason), and
        ``not_ready_since`` since when (a ``time.time``; None when not known)."""
        self._host = host
        self._port = port
        self._healthy = healthy
        self._ready = ready
        self._not_ready_reason = not_ready_reason
        self._not_ready_since = not_ready_since
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._readiness)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.keepalive_timeout)
        try:
            await self._runner.setup()
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as error:
            await self._cleanup()
            raise ConfigError.cannot_listen(
                error, self._host, self._port, port_key="ops.port", host_key="ops.host"
            ) from None
        except BaseException:
            # A stop during start-up cancels the start (bridge.worker.StopEndsStart), perhaps after the bind: the
            # caller has no server to stop yet, so the port is let go here.
            await self._cleanup()
            raise
        addresses = self._runner.addresses  # the bound port, when port 0 asked for any free one
        if addresses:
            self.port = int(addresses[0][1])

    async def stop(self) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"status": "ok" if ok else "poll loop stalled"}, status=200 if ok else 503)

    async def _readiness(self, _: web.Request) -> web.Response:
        reason = self._not_ready_reason()
        if reason is None and self._ready():
            return web.json_response({"status": "ready"})
        answer = {"status": "not ready", "reason": reason or "not started"}
        if reason is not None and (since := self._not_ready_since()) is not None:
            answer["since"] = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        return web.json_response(answer, status=503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
