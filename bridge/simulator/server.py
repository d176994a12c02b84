"""Serving the simulator over real HTTP: blocking (``run_simulator``) or in a background thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Final, Self

import structlog
import uvicorn

from bridge.errors import ConfigError
from bridge.simulator.app import Simulator, create_app
from bridge.simulator.settings import SimulatorSettings
from bridge.simulator.store import Clock

log = structlog.get_logger("bridge.simulator")

_POLL_INTERVAL_SECONDS: Final = 0.01
# Bounded so a client holding a connection open cannot block a test's teardown forever.
_GRACEFUL_SHUTDOWN_SECONDS: Final = 5


def run_simulator(settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 8089) -> None:
    """Serve the simulator until interrupted (Ctrl-C / SIGTERM); blocks the calling thread.

    An address that cannot be bound is a ``ConfigError`` naming ``--port`` (in use) or ``--host``. uvicorn's own
    records go through the process's logging configuration (``bridge.ops.logging``: JSON or console like every
    other line), at info level so that its start-up and access lines still show.
    """
    try:
        sock = _bind(host, port)
    except OSError as error:
        raise ConfigError.cannot_listen(error, host, port, port_key="--port", host_key="--host") from None
    # uvicorn names no address for a socket it is given: this line is the one place `--port 0` says which port.
    log.info("simulator_listening", url=_base_url(sock))
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        log_config=None,
        date_header=False,  # the app dates its answers by the simulator's clock
    )
    logging.getLogger("uvicorn").setLevel(logging.INFO)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so port 0 resolves to a known port before serving."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class RunningSimulator:
    """The simulator on a uvicorn server in a background thread with its own event loop.

    Usable from synchronous code and from inside a running asyncio loop (e.g. a pytest-asyncio
    test), because the server never touches the caller's loop::

        with RunningSimulator(SimulatorSettings()) as sim:
            httpx.get(sim.base_url + "/api/v2/platforms", ...)

    ``simulator`` exposes the in-process state for inspection; it is mutated on the server thread,
    so prefer the ``/_admin`` HTTP API to change it.
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.app = create_app(settings, clock=clock)
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("The simulator is not running; use it as a context manager or call start().")
        return self._base_url

    @property
    def simulator(self) -> Simulator:
        simulator: Simulator = self.app.state.simulator
        return simulator

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("The simulator is already running.")
        sock = _bind(self._host, self._port)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_config=None,  # leave the host application's logging configuration alone
            access_log=False,
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
            date_header=False,  # the app dates its answers by the simulator's clock
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock), name=f"kordiam-simulator-{port}", daemon=True
        )
        self._thread.start()
        try:
            self._wait_until_accepting(host, port)
        except BaseException:
            self.stop()
            sock.close()
            raise
        self._base_url = _base_url(sock)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_GRACEFUL_SHUTDOWN_SECONDS + 1)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(_GRACEFUL_SHUTDOWN_SECONDS)
        self._server = self._thread = None
        self._base_url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # includes SystemExit, which uvicorn raises on startup failure
            self._error = exc
        finally:
            sock.close()

    def _wait_until_accepting(self, host: str, port: int) -> None:
        """Block until uvicorn has started and a TCP connect succeeds, or fail loudly."""
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("The simulator server exited during startup.") from self._error
            if self._server.started and _accepts_connections(host, port):
                return
            time.sleep(_POLL_INTERVAL_SECONDS)
        raise TimeoutError(f"The simulator did not start within {self._startup_timeout} s.")


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
