"""The long-lived commands' event loop: uvloop by default, asyncio's own on request, a wrong value one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from bridge import eventloop
from bridge.cli import main
from bridge.errors import ConfigError
from tests.support import write_config


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_the_default_is_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert isinstance(eventloop.run(running_loop()), uvloop.Loop)


def test_asyncio_is_the_way_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    loop = eventloop.run(running_loop())
    assert not isinstance(loop, uvloop.Loop)
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_a_wrong_value_is_a_config_error_and_the_coroutine_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    coroutine = running_loop()
    with pytest.raises(ConfigError, match="KORDIAM_BRIDGE_EVENT_LOOP: 'trio' is not one of uvloop, asyncio"):
        eventloop.run(coroutine)
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning


def test_the_worker_with_a_wrong_value_says_so_in_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "secret")
    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-west-1.amazonaws.com/123456789012/kordiam",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "KORDIAM_BRIDGE_EVENT_LOOP: 'trio' is not one of uvloop, asyncio" in err
