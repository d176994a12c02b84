"""Fixtures the pipeline's unit tests share: Kordiam and the state store, in process."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeKordiam, MemoryStateStore


@pytest.fixture
def kordiam() -> FakeKordiam:
    return FakeKordiam()


@pytest.fixture
def state() -> MemoryStateStore:
    return MemoryStateStore()
