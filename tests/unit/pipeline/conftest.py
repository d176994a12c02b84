"""Fixtures the pipeline's unit tests share: Kordiam and the state store, in process, and a clock moved by hand."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeKordiam, ManualClock, MemoryStateStore


@pytest.fixture
def kordiam() -> FakeKordiam:
    return FakeKordiam()


@pytest.fixture
def state() -> MemoryStateStore:
    return MemoryStateStore()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
