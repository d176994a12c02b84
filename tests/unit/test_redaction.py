"""The process's secrets and their removal from quoted text (``bridge.redaction``)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr

from bridge import redaction
from bridge.redaction import RECENT_TOKENS, Redaction, unvalidated_secrets


class Auth(BaseModel):
    type: str = "headers"
    headers: dict[str, SecretStr]


class Channel(BaseModel):
    name: str
    password: SecretStr
    auth: Auth | None = None


class Configured(BaseModel):
    client_secret: SecretStr
    channels: list[Channel]
    queue_password: SecretStr | None = None


def test_every_secret_str_of_a_model_is_redacted_wherever_it_is_nested() -> None:
    secrets = Redaction()
    secrets.remember_secrets(
        Configured(
            client_secret=SecretStr("kordiam-CLIENT-secret"),
            channels=[
                Channel(name="website", password=SecretStr("wp-PASSWORD-1")),
                Channel(
                    name="cms",
                    password=SecretStr("cms-PASSWORD-2"),
                    auth=Auth(headers={"X-Api-Key": SecretStr("hdr-KEY-12345")}),
                ),
            ],
        )
    )
    said = "echo: kordiam-CLIENT-secret, wp-PASSWORD-1, cms-PASSWORD-2, X-Api-Key: hdr-KEY-12345; cms and website"
    assert secrets.redact(said) == "echo: ***, ***, ***, X-Api-Key: ***; cms and website"


def test_a_wordpress_application_password_is_redacted_with_and_without_its_spaces() -> None:
    spaced, spaceless = "abcd EFGH ijkl MNOP qrst UVWX", "abcdEFGHijklMNOPqrstUVWX"
    configured_spaced, configured_spaceless = Redaction(), Redaction()
    configured_spaced.remember_secrets(spaced)
    configured_spaceless.remember_secrets(spaceless)
    for secrets in (configured_spaced, configured_spaceless):
        assert secrets.redact(f"bad password {spaced}.") == "bad password ***."
        assert secrets.redact(f"bad password {spaceless}.") == "bad password ***."
        assert secrets.redact("password=abcd+EFGH+ijkl+MNOP+qrst+UVWX") == "password=***"


def test_a_secret_is_redacted_as_a_form_or_json_would_quote_it() -> None:
    secrets = Redaction()
    secrets.remember_secrets('se/cret "quoted" value')
    assert secrets.redact("client_secret=se%2Fcret+%22quoted%22+value") == "client_secret=***"
    assert secrets.redact('{"secret": "se/cret \\"quoted\\" value"}') == '{"secret": "***"}'


def test_a_secret_inside_another_is_replaced_as_part_of_it() -> None:
    secrets = Redaction()
    secrets.remember_secrets("token-1234", "Bearer token-1234-and-more")
    assert secrets.redact("saw Bearer token-1234-and-more") == "saw ***"


def test_tokens_obtained_at_run_time_are_redacted_the_most_recent_kept() -> None:
    secrets = Redaction()
    secrets.remember_token("first-token-0")
    assert secrets.redact("401: token first-token-0 expired") == "401: token *** expired"
    for number in range(RECENT_TOKENS):
        secrets.remember_token(f"later-token-{number}")
    assert secrets.redact("first-token-0") == "first-token-0"
    assert secrets.redact(f"later-token-{RECENT_TOKENS - 1}") == "***"


def test_a_value_too_short_to_be_told_from_words_is_not_looked_for() -> None:
    secrets = Redaction()
    secrets.remember_secrets("admin")  # an ActiveMQ password keeps the broker's rules
    secrets.remember_token("t")
    assert secrets.redact("the admin said t") == "the admin said t"


def test_a_token_remembered_while_another_thread_rebuilds_the_forms_breaks_nothing_and_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A library's warning logged from another thread (the SQLite store's, a folder write's) redacts while the event
    # loop remembers a new token: that interleaving, made deterministic by remembering it inside the rebuild.
    secrets = Redaction()
    secrets.remember_token("first-TOKEN-1")
    echoed_forms = redaction._echoed_forms
    remembered: list[str] = []

    def meanwhile(secret: str) -> set[str]:
        if not remembered:
            remembered.append("later-TOKEN-2")
            secrets.remember_token("later-TOKEN-2")
        return echoed_forms(secret)

    monkeypatch.setattr(redaction, "_echoed_forms", meanwhile)
    assert secrets.redact("saw first-TOKEN-1") == "saw ***"
    assert remembered and secrets.redact("saw later-TOKEN-2") == "saw ***"


def test_the_secrets_of_an_unvalidated_table_are_read_by_its_model_and_odd_values_passed_over() -> None:
    raw = {
        "client_secret": "client-SECRET-1",
        "channels": [
            {"name": "a", "password": "password-A-1", "auth": {"headers": {"X-Key": "header-KEY-1", "X-N": 5}}},
            {"name": "b-password-not-a-secret", "password": ["odd"], "auth": "odd"},
            "odd",
        ],
        "queue_password": 12345678,
    }
    assert sorted(unvalidated_secrets(Configured, raw)) == ["client-SECRET-1", "header-KEY-1", "password-A-1"]
    assert list(unvalidated_secrets(Configured, "odd")) == []
