"""In-memory simulator of the Kordiam REST API v2 subset the bridge uses, with SQS change notifications.

Use ``create_app`` for an ASGI app (tests with ``httpx.ASGITransport``), ``RunningSimulator`` for a
real HTTP server in a background thread, or ``run_simulator`` / ``kordiam-bridge simulator`` to
serve it in the foreground.
"""

from bridge.simulator.app import create_app
from bridge.simulator.server import RunningSimulator, run_simulator
from bridge.simulator.settings import SimulatorSettings

__all__ = ["RunningSimulator", "SimulatorSettings", "create_app", "run_simulator"]
