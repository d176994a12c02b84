"""Shared fixtures: a real SQS endpoint (moto server by default, LocalStack with ``BRIDGE_TEST_SQS=localstack``),
a real ActiveMQ broker (``BRIDGE_TEST_ACTIVEMQ``, started by ``make test``), the Kordiam simulator over HTTP, and
per-test queues."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog._config import BoundLoggerLazyProxy

# Credentials for the emulators; never real ones. Set before any AWS client is created.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")
os.environ.pop("AWS_PROFILE", None)

from bridge import redaction
from bridge.ops import metrics
from bridge.simulator import RunningSimulator, SimulatorSettings
from tests.support import (
    ChannelLog,
    SimulatorAdmin,
    SqsEndpoint,
    free_port,
    make_queues,
    recording_channels,
    start_moto,
    write_config,
)

REGION = "eu-central-1"


@pytest.fixture(autouse=True)
def _module_loggers_not_cached() -> Iterator[None]:
    """Undo structlog's per-logger cache after each test.

    ``configure_logging`` turns on ``cache_logger_on_first_use``: a module logger first used after one call keeps
    that call's processor list, a later call makes a new list, and ``capture_logs`` edits only the current one, so
    the cached logger's lines would escape a later test's capture. Tests share a process (an in-process ``main()``
    configures logging), so each test starts with every ``bridge`` module logger uncached."""
    yield
    for name, module in list(sys.modules.items()):
        if name.startswith("bridge") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, BoundLoggerLazyProxy):
                    value.__dict__.pop("bind", None)


@pytest.fixture(autouse=True)
def _no_failing_channels_left() -> Iterator[None]:
    """A channel a test left refused or with its breaker open must not read as failing on a later test's ops
    endpoint, which serves the process's one metrics registry (``status`` and ``element`` read failing channels
    from it)."""
    yield
    metrics.CHANNEL_CREDENTIALS_REFUSED.clear()
    metrics.BREAKER_STATE.clear()


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test remembers only the secrets it configures: a secret another test configured would be redacted
    from what this one quotes."""
    monkeypatch.setattr(redaction, "SECRETS", redaction.Redaction())


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[SqsEndpoint]:
    """One SQS endpoint for the session. LocalStack must already run (``make localstack``)."""
    if os.environ.get("BRIDGE_TEST_SQS") == "localstack":
        url = os.environ.get("LOCALSTACK_ENDPOINT", "http://127.0.0.1:4566")
        yield SqsEndpoint(url, "localstack")
        return
    server, url = start_moto()
    try:
        yield SqsEndpoint(url, "moto")
    finally:
        server.stop()


@pytest.fixture
def queues(sqs_endpoint: SqsEndpoint) -> tuple[str, str]:
    """A fresh queue and its dead-letter queue (redrive after 3 receives) for each test."""
    return make_queues(sqs_endpoint.url, f"t-{uuid.uuid4().hex[:12]}", max_receive_count=3)


@pytest.fixture
def simulator(sqs_endpoint: SqsEndpoint, queues: tuple[str, str]) -> Iterator[RunningSimulator]:
    """The Kordiam simulator over HTTP, sending its change notifications to this test's queue."""
    settings = SimulatorSettings(queue_url=queues[0], sqs_endpoint_url=sqs_endpoint.url, region=REGION)
    with RunningSimulator(settings) as running:
        yield running


@pytest.fixture
def quiet_simulator() -> Iterator[RunningSimulator]:
    """Kordiam without a queue of its own: it reaches the bridge through webhooks (the ingress) only."""
    with RunningSimulator(SimulatorSettings(region=REGION)) as running:
        yield running


@pytest.fixture
async def kordiam(quiet_simulator: RunningSimulator) -> AsyncIterator[SimulatorAdmin]:
    """The quiet simulator's admin API."""
    admin = SimulatorAdmin(quiet_simulator.base_url)
    yield admin
    await admin.aclose()


@pytest.fixture
async def admin(simulator: RunningSimulator) -> AsyncIterator[SimulatorAdmin]:
    client = SimulatorAdmin(simulator.base_url)
    yield client
    await client.aclose()


@pytest.fixture
def channel_log() -> Iterator[ChannelLog]:
    """What every `recording` channel (a folder channel that counts what it was asked to do) did in this test."""
    with recording_channels() as log:
        yield log


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server for the DynamoDB state store tests (its own, apart from the SQS endpoint)."""
    server, url = start_moto()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def activemq() -> str:
    """``stomp://HOST:PORT`` of a running ActiveMQ (``scripts/activemq.sh start``; ``make test`` starts one)."""
    url = os.environ.get("BRIDGE_TEST_ACTIVEMQ")
    if not url:
        pytest.skip(
            "BRIDGE_TEST_ACTIVEMQ is unset: start a broker with `scripts/activemq.sh start` and set it to "
            "stomp://127.0.0.1:61613 (make test does both)"
        )
    return url.rstrip("/")


@pytest.fixture
def stomp_queues(activemq: str) -> tuple[str, str]:
    """A fresh ActiveMQ queue and its dead-letter queue for each test (the broker creates them on first use)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    return f"{activemq}/queue/{name}", f"{activemq}/queue/{name}-dlq"


@pytest.fixture
def stomp_simulator(stomp_queues: tuple[str, str]) -> Iterator[RunningSimulator]:
    """The Kordiam simulator, publishing its change notifications to this test's ActiveMQ queue."""
    with RunningSimulator(SimulatorSettings(stomp_url=stomp_queues[0])) as running:
        yield running


@pytest.fixture
async def stomp_admin(stomp_simulator: RunningSimulator) -> AsyncIterator[SimulatorAdmin]:
    client = SimulatorAdmin(stomp_simulator.base_url)
    yield client
    await client.aclose()


@pytest.fixture
def stomp_config(stomp_queues: tuple[str, str], stomp_simulator: RunningSimulator, tmp_path: Path) -> tuple[Path, int]:
    """A worker config on this test's ActiveMQ queue (two folder channels) and its ops port."""
    port = free_port()
    path = write_config(
        tmp_path / "bridge.toml",
        queue=stomp_queues[0],
        endpoint=stomp_queues[1],
        kordiam=stomp_simulator.base_url,
        workdir=tmp_path,
        ops_port=port,
        # A killed worker's leases come free after this, not after the default.
        state_extra="lease_seconds = 3",
    )
    return path, port
