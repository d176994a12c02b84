"""Where the bridge remembers its secrets (configuration, channels, run-time tokens) and where it takes them out of
what it quotes from outside (HTTP answers, dead-letter reasons, warning and error log lines)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from pathlib import Path

import httpx
import pytest
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from bridge import redaction
from bridge.channels import ChannelContext, build_channel
from bridge.channels.auth import TokenSource
from bridge.channels.http_errors import server_message
from bridge.config import ChannelSettings, load_settings
from bridge.errors import KordiamUnavailable
from bridge.http import HttpRequest, HttpResponse
from bridge.kordiam.client import KordiamClient
from bridge.ops.logging import configure_logging
from bridge.queue.dead_letter import DeadLetterContext, FailureContext, failure_attributes
from bridge.queue.gate import ReceiveGate
from bridge.queue.transport import QueueMessage
from bridge.retry import RetryPolicy
from tests.support import http_answering
from tests.unit.test_config import VALID, write

WP_PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"


def _answer(text: str) -> HttpResponse:
    request = HttpRequest("GET", URL("https://proxy.example.org/"), CIMultiDict(), None, 5.0)
    return HttpResponse(502, CIMultiDictProxy(CIMultiDict({"content-type": "text/html"})), text.encode(), request)


def test_the_configured_secrets_are_remembered_when_the_configuration_is_read(tmp_path: Path) -> None:
    load_settings(write(tmp_path, VALID))
    assert redaction.SECRETS.redact("client_secret=s3cret-value") == "client_secret=***"


def test_a_channels_secrets_are_remembered_when_it_is_built() -> None:
    website = ChannelSettings.model_validate(
        {
            "name": "website",
            "type": "wordpress",
            "platforms": [1],
            "url": "https://wp.example.org",
            "username": "bridge",
            "app_password": WP_PASSWORD,
        }
    )
    build_channel(website, ChannelContext(http=http_answering(lambda request: httpx.Response(500))))
    assert redaction.SECRETS.redact("bad password abcdEFGHijklMNOPqrstUVWX") == "bad password ***"


async def test_a_kordiam_access_token_is_remembered_when_it_is_obtained() -> None:
    def kordiam(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/token"):
            return httpx.Response(200, json={"access_token": "kordiam-ACCESS-token", "expires_in": 3600})
        return httpx.Response(200, json={"content": []})

    client = KordiamClient(
        http_answering(kordiam), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("s3cret-value")
    )
    await client.list_reference("/platforms")
    assert redaction.SECRETS.redact("token kordiam-ACCESS-token") == "token ***"


async def test_a_protocol_channels_token_is_remembered_when_it_is_obtained() -> None:
    answer = httpx.Response(200, json={"access_token": "platform-ACCESS-token", "expires_in": 3600})
    tokens = TokenSource(
        http_answering(lambda request: answer),
        "https://cms.example.org/oauth2/token",
        "key",
        SecretStr("api-SECRET-value"),
        "cms",
        "check auth",
    )
    await tokens.credentials()
    assert redaction.SECRETS.redact("Bearer platform-ACCESS-token") == "Bearer ***"


def test_a_quoted_answer_leaves_out_another_services_secret() -> None:
    # A proxy's error page echoing what another request carried: not this request's credentials.
    redaction.SECRETS.remember_secrets("other-channel-API-key")
    assert (
        server_message(_answer("upstream said: key other-channel-API-key refused")) == "upstream said: key *** refused"
    )


def test_a_dead_letters_reason_leaves_out_every_configured_secret() -> None:
    # Not an HTTP answer: an exception's text, as the consumer quotes it.
    redaction.SECRETS.remember_secrets("s3cret-value")
    message = QueueMessage("m-1", "r-1", "{}", {}, 3, sent_at=None, group_id=None)
    written = failure_attributes(message, DeadLetterContext("sync", "OSError: s3cret-value rejected", "OSError"))
    assert written["failure.reason"] == "OSError: *** rejected"


def test_a_stored_reason_is_read_back_without_the_configured_secrets() -> None:
    # A dead letter written before its secret was redacted, as `dlq list` and `dlq show` read it.
    redaction.SECRETS.remember_secrets("s3cret-value")
    failure = FailureContext.parse({"failure.reason": "refused s3cret-value"})
    assert failure is not None and failure.reason == "refused ***"


def _logged(level: str, **fields: object) -> dict[str, object]:
    stream = io.StringIO()
    stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info")
        getattr(structlog.get_logger("bridge.test"), level)("something", **fields)
    finally:
        sys.stderr = stderr
        configure_logging("info")
    line: dict[str, object] = json.loads(stream.getvalue())
    return line


def test_warning_and_error_lines_leave_out_the_configured_secrets() -> None:
    redaction.SECRETS.remember_secrets("s3cret-value")
    assert _logged("warning", error="refused s3cret-value")["error"] == "refused ***"
    assert _logged("error", reason="refused s3cret-value", count=2)["reason"] == "refused ***"


def test_an_exceptions_traceback_leaves_out_the_configured_secrets() -> None:
    redaction.SECRETS.remember_secrets("s3cret-value")
    try:
        raise ValueError("refused s3cret-value")
    except ValueError:
        line = _logged("exception")
    assert "s3cret-value" not in str(line["exception"]) and "refused ***" in str(line["exception"])


def test_a_librarys_warning_leaves_out_the_configured_secrets() -> None:
    redaction.SECRETS.remember_secrets("s3cret-value")
    stream = io.StringIO()
    stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info")
        logging.getLogger("botocore.test").warning("login failed for %s", "s3cret-value")
    finally:
        sys.stderr = stderr
    assert json.loads(stream.getvalue())["event"] == "login failed for ***"


async def test_kordiams_retry_line_and_outage_quote_a_transport_error_without_the_configured_secrets() -> None:
    # An info line is not searched: the retry's reason, also the outage's text (the pause's /readyz reason), is
    # redacted where it is made.
    redaction.SECRETS.remember_secrets("proxy-PASSWORD-1")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("proxy refused login proxy-PASSWORD-1", request=request)

    client = KordiamClient(
        http_answering(unreachable),
        base_url="https://kordiam.test",
        client_id="c",
        client_secret=SecretStr("s3cret-value"),
        retry=RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001, total_seconds=5),
    )
    with capture_logs() as lines, pytest.raises(KordiamUnavailable) as raised:
        await client.list_reference("/platforms")
    retries = [line["reason"] for line in lines if line["event"] == "kordiam_retry"]
    assert retries and all("proxy refused login ***" in reason for reason in retries)
    assert "proxy refused login ***" in str(raised.value) and "proxy-PASSWORD-1" not in str(raised.value)


def test_a_warnings_positional_arguments_leave_out_the_configured_secrets() -> None:
    # structlog formats `event % args` after the wrapper saw the event: the arguments must be redacted too.
    redaction.SECRETS.remember_secrets("s3cret-value")
    stream = io.StringIO()
    stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("info")
        structlog.get_logger("bridge.test").warning("refused %s after %d tries", "s3cret-value", 3)
    finally:
        sys.stderr = stderr
        configure_logging("info")
    assert json.loads(stream.getvalue())["event"] == "refused *** after 3 tries"


def test_a_pause_reason_which_readyz_status_and_element_show_leaves_out_the_configured_secrets() -> None:
    # An outage's reason quotes the exception the probe met (the state store's: any text).
    redaction.SECRETS.remember_secrets("s3cret-value")
    gate = ReceiveGate()
    gate.close("state", "the state store cannot serve the worker: OSError: s3cret-value refused")
    assert gate.reason == "the state store cannot serve the worker: OSError: *** refused"


# --------------------------------------------------------------- the operator commands: every secret of the file
# A command validates only the sections it uses, yet what it shows (a dead letter's or a parked element's reason,
# stored by an older bridge or before a secret was configured) may quote a secret of any section.

OTHER_SECRETS = ("s3cret-value", WP_PASSWORD, "cms-BEARER-token", "ingress-JWT-secret")
WEBSITE = f"""
[[channels]]
name = "website"
type = "wordpress"
platforms = [1]
url = "https://wp.example.org"
username = "bridge"
app_password = "{WP_PASSWORD}"
"""
INGRESS = """
[ingress.global_export]
auth = {type = "jwt", secret = "ingress-JWT-secret"}
"""
# A channel table its adapter refuses (no url): a command that does not validate channels still works with it.
CMS_WITHOUT_URL = """
[[channels]]
name = "cms"
type = "kordiam-webhook"
platforms = [2]
auth = {type = "bearer", token = "cms-BEARER-token"}
"""
QUOTING = "refused " + " / ".join(OTHER_SECRETS)


def test_dlq_show_leaves_out_the_secrets_of_the_sections_it_does_not_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.admin import dlq
    from bridge.admin.dlq import to_dlq_message
    from bridge.cli import main
    from bridge.queue.transport import PeekedMessage

    async def stored(*args: object, **kwargs: object) -> object:
        letter = QueueMessage("m-1", "r", '{"id": 7}', {"failure.reason": QUOTING}, 3, 1.0, None)
        return to_dlq_message(PeekedMessage(letter, {"SentTimestamp": "1"}, "SQS attributes"))

    monkeypatch.setattr(dlq, "dlq_show", stored)
    config = write(tmp_path, VALID + WEBSITE + CMS_WITHOUT_URL + INGRESS)
    assert main(["dlq", "show", "m-1", "--config", str(config), "--json"]) == 0
    shown = capsys.readouterr().out
    assert "refused *** / *** / *** / ***" in shown
    assert not [secret for secret in OTHER_SECRETS if secret in shown]


def test_parked_list_and_element_leave_out_the_secrets_of_a_parked_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from bridge.admin import parked
    from bridge.admin.element import parked_for
    from bridge.cli import main
    from bridge.config import StatusSettings
    from bridge.state.base import Parked
    from tests.unit.fakes import MemoryStateStore

    store = MemoryStateStore()
    store.parks[("website", 7)] = Parked(7, "website", QUOTING, datetime.now(UTC))

    async def opened(*args: object, **kwargs: object) -> MemoryStateStore:
        return store

    monkeypatch.setattr(parked, "open_store", opened)
    cms = CMS_WITHOUT_URL + 'url = "https://cms.example.org/kordiam"\n'
    config = write(tmp_path, VALID + WEBSITE + cms + INGRESS)
    assert main(["parked", "list", "--config", str(config), "--json"]) == 0
    shown = capsys.readouterr().out
    assert "refused *** / *** / *** / ***" in shown
    assert not [secret for secret in OTHER_SECRETS if secret in shown]
    # `element` reads the parked reasons so too.
    settings = load_settings(config, model=StatusSettings)
    assert [item.reason for item in asyncio.run(parked_for(store, settings, 7))] == ["refused *** / *** / *** / ***"]


def test_a_command_remembers_the_secrets_the_environment_gives_sections_it_does_not_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.channels import channel_options_model
    from bridge.config import QueueCommandSettings

    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "kordiam-FROM-env")
    monkeypatch.setenv("BRIDGE_INGRESS", '{"platform": {"api_user": "k", "api_secret": "platform-FROM-env"}}')
    monkeypatch.setenv("BRIDGE_CHANNELS__WEBSITE__APP_PASSWORD", "website-FROM-env")
    load_settings(
        write(tmp_path, VALID + WEBSITE), model=QueueCommandSettings, channel_options_model=channel_options_model
    )
    quoted = "refused kordiam-FROM-env, platform-FROM-env, website-FROM-env"
    assert redaction.SECRETS.redact(quoted) == "refused ***, ***, ***"


def test_sections_a_command_does_not_validate_may_hold_anything(tmp_path: Path) -> None:
    # Not validated, so never a reason to refuse the command: what has no secret's shape is passed over.
    from bridge.channels import channel_options_model
    from bridge.config import QueueCommandSettings

    odd = VALID.replace('client_secret = "s3cret-value"', "client_secret = 12345678") + (
        '[[channels]]\nname = "x"\ntype = "fax"\nplatforms = "all"\npassword = "fax-PASSWORD"\n'
        '[[channels]]\nname = "y"\ntype = "wordpress"\napp_password = ["not", "a", "string"]\n'
        '[ingress]\nglobal_export = "nothing"\n'
    )
    settings = load_settings(
        write(tmp_path, odd), model=QueueCommandSettings, channel_options_model=channel_options_model
    )
    assert settings.queue.url.endswith("/kordiam")
    assert redaction.SECRETS.redact("12345678 fax-PASSWORD") == "12345678 fax-PASSWORD"
