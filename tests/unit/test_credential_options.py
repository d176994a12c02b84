"""The credential model set of Kordiam's CMS protocols (``bridge.config``): one set, read in two directions, the
channels presenting credentials (``bridge.channels.auth.WebhookAuth``) and the ingress checking them
(``bridge.config.IngressAuth``). Each direction keeps its own keys, defaults and messages."""

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from bridge.channels.auth import WebhookAuth
from bridge.config import IngressAuth

SENDING: TypeAdapter[Any] = TypeAdapter(WebhookAuth)
CHECKING: TypeAdapter[Any] = TypeAdapter(IngressAuth)


def problem(adapter: TypeAdapter[Any], auth: dict[str, Any]) -> tuple[str, str]:
    """The one error: where (without the union's tag) and what."""
    with pytest.raises(ValidationError) as raised:
        adapter.validate_python(auth)
    (error,) = raised.value.errors()
    return ".".join(str(part) for part in error["loc"][1:]), error["msg"]


@pytest.mark.parametrize("adapter", [SENDING, CHECKING], ids=["channel", "ingress"])
@pytest.mark.parametrize(
    ("auth", "where", "message"),
    [
        ({"type": "bearer", "token": " "}, "token", "must not be empty"),
        ({"type": "jwt", "secret": ""}, "secret", "must not be empty"),
        ({"type": "jwt", "secret": "jwt-secret", "audience": ""}, "audience", "must not be empty or blank"),
        ({"type": "api_key", "api_key": " ", "api_secret": "api-secret"}, "api_key", "must not be empty or blank"),
        ({"type": "api_key", "api_key": "k", "api_secret": " "}, "api_secret", "must not be empty"),
        ({"type": "headers", "headers": {}}, "headers", "at least 1 item"),
        ({"type": "headers", "headers": {"Bad Name": "x"}}, "headers", "'Bad Name' is not a valid header name"),
        (
            {"type": "bearer", "token": "t0ken-value", "secret": "jwt-secret"},
            "secret",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_the_common_keys_have_one_rule_in_both_directions(
    adapter: TypeAdapter[Any], auth: dict[str, Any], where: str, message: str
) -> None:
    found_where, found = problem(adapter, auth)
    assert found_where == where and message in found


def test_each_direction_keeps_its_own_keys_and_defaults() -> None:
    minted = SENDING.validate_python({"type": "jwt", "secret": "jwt-secret", "subject": "cms", "ttl_seconds": 30})
    assert (minted.issuer, minted.subject, minted.ttl_seconds) == ("kordiam-bridge", "cms", 30)
    checked = CHECKING.validate_python({"type": "jwt", "secret": "jwt-secret", "require_expiry": True})
    assert (checked.issuer, checked.require_expiry) == (None, True)
    exchange = CHECKING.validate_python({"type": "api_key", "api_key": "k", "api_secret": "api-secret"})
    assert (exchange.token_path, exchange.token_ttl_seconds) == ("/oauth2/token", 3600)
    # A key of the other direction is refused, not ignored.
    assert problem(SENDING, {"type": "jwt", "secret": "jwt-secret", "require_expiry": True})[0] == "require_expiry"
    assert problem(CHECKING, {"type": "jwt", "secret": "jwt-secret", "ttl_seconds": 30})[0] == "ttl_seconds"
    assert problem(CHECKING, {"type": "api_key", "api_key": "k", "api_secret": "api-secret", "token_url": "http://x"})[
        0
    ] == ("token_url")
    assert problem(SENDING, {"type": "api_key", "api_key": "k", "api_secret": "api-secret", "token_path": "/t"})[0] == (
        "token_path"
    )


def test_a_header_value_is_checked_by_the_rule_of_its_direction() -> None:
    # The channel sends the value as one line and never overrides the headers it sets itself.
    assert problem(SENDING, {"type": "headers", "headers": {"X-Key": "a\nb"}})[1].endswith(
        "header 'X-Key': the value must be one line"
    )
    assert problem(SENDING, {"type": "headers", "headers": {"Host": "x"}})[1].endswith(
        "'Host' is set by the bridge itself"
    )
    # The ingress only compares what Kordiam sends: any value long enough to be a secret.
    assert problem(CHECKING, {"type": "headers", "headers": {"X-Key": " "}})[1].endswith(
        "header 'X-Key': the value must not be empty"
    )
    assert problem(SENDING, {"type": "headers", "headers": {"X-Key": "short"}})[1].endswith(
        "header 'X-Key': the value is too short for a secret: at least 8 characters"
    )
    host = CHECKING.validate_python({"type": "headers", "headers": {"Host": "bridge.example"}}).headers["Host"]
    assert host.get_secret_value() == "bridge.example"


@pytest.mark.parametrize("adapter", [SENDING, CHECKING], ids=["channel", "ingress"])
def test_a_whole_header_line_written_as_the_name_is_refused_without_its_value(adapter: TypeAdapter[Any]) -> None:
    # `headers = { "X-Api-Key: s3cr3t-value" = "…" }`: the name holds the secret, and the error must not print it.
    where, message = problem(adapter, {"type": "headers", "headers": {"X-Api-Key: s3cr3t-value": "whatever-1"}})
    assert where == "headers" and "s3cr3t" not in message
    assert message == "Value error, 'X-Api-Key' is written with its value: write {NAME = VALUE}, not 'NAME: VALUE'"
