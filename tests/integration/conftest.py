from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.simulator import RunningSimulator, SimulatorSettings
from tests.support import REGION, ChannelLog, SimulatorAdmin, SqsEndpoint, recording_channels


@pytest.fixture
def simulator(sqs_endpoint: SqsEndpoint, queues: tuple[str, str]) -> Iterator[RunningSimulator]:
    """The Kordiam simulator over HTTP, sending its change notifications to this test's queue."""
    settings = SimulatorSettings(queue_url=queues[0], sqs_endpoint_url=sqs_endpoint.url, region=REGION)
    with RunningSimulator(settings) as running:
        yield running


@pytest.fixture
async def admin(simulator: RunningSimulator) -> AsyncIterator[SimulatorAdmin]:
    client = SimulatorAdmin(simulator.base_url)
    yield client
    await client.aclose()


@pytest.fixture
def channel_log() -> Iterator[ChannelLog]:
    with recording_channels() as log:
        yield log
