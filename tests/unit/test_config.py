"""Configuration: TOML plus environment overrides, and one clear error naming the key."""

import json
import os
import select
import threading
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from bridge import config as config_module
from bridge.channels import channel_options, channel_problems
from bridge.channels.auth import WebhookAuth
from bridge.channels.folder import FolderOptions
from bridge.cli import main
from bridge.config import (
    SHORTEST_SECRET,
    BearerAuth,
    FileSettings,
    IngressCommandSettings,
    IngressSettings,
    JwtCheck,
    QueueCommandSettings,
    StatusSettings,
    load_settings,
)
from bridge.errors import ConfigError
from bridge.http import SHORTEST_REDACTED
from bridge.ingress.connections import PROCESS_DESCRIPTORS
from bridge.ops.logging import configure_logging
from bridge.pipeline.covering import DEFAULT_CLOCK_SKEW_SECONDS
from bridge.queue import pooled_connections
from bridge.state.dynamodb import POOL_CONNECTIONS

VALID = """
[queue]
url = "http://127.0.0.1:4566/000000000000/kordiam"
endpoint_url = "http://127.0.0.1:4566"

[kordiam]
base_url = "https://api.kordiam.app"
client_id = "bridge"
client_secret = "s3cret-value"

[state]
url = "sqlite:///tmp/state.db"

[[channels]]
name = "web"
type = "folder"
platforms = [99003]
path = "/tmp/web"

[[channels]]
name = "print"
type = "folder"
platforms = [99004]
statuses = [5, "Ready for print"]
main = true
path = "/tmp/print"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.queue.concurrency == 32 and settings.queue.wait_time_seconds == 20
    assert settings.queue.read_ahead == 512 and settings.queue.handlers == 544
    assert settings.kordiam.client_secret.get_secret_value() == "s3cret-value"
    assert settings.channels[1].statuses == [5, "Ready for print"]
    assert settings.channels[0].options == {"path": "/tmp/web"}
    assert "/from/env" not in repr(settings)  # adapter keys may be secrets: never in a repr
    assert settings.main_channel == "print"
    assert settings.feedback.enabled and settings.feedback.link_element
    assert (settings.ops.host, settings.ops.port) == ("127.0.0.1", 9090)
    assert settings.queue.clock_skew_seconds == DEFAULT_CLOCK_SKEW_SECONDS == 5.0


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "from-env")
    monkeypatch.setenv("BRIDGE_QUEUE__CONCURRENCY", "8")
    settings = load_settings(write(tmp_path, VALID))
    assert settings.kordiam.client_secret.get_secret_value() == "from-env"
    assert settings.queue.concurrency == 8
    assert settings.queue.read_ahead == 128  # its default follows the concurrency from the environment
    assert settings.queue.url.endswith("/kordiam")  # the rest of the section is kept


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG", str(write(tmp_path, VALID)))
    assert load_settings().kordiam.client_id == "bridge"


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('client_id = "bridge"', ""), "kordiam.client_id", "is required"),
        (('url = "sqlite:///tmp/state.db"', 'url = "postgres://x"'), "state.url", "sqlite:///PATH"),
        (('base_url = "https://api.kordiam.app"', 'base_url = "api.kordiam.app"'), "kordiam.base_url", "http(s) URL"),
        (("[queue]\n", "[queue]\nconcurrency = 0\n"), "queue.concurrency", "greater than or equal to 1"),
        (("[queue]\n", "[queue]\nurll = 'x'\n"), "queue.urll", "is not a known key"),
        (("[queue]\n", "[queue]\nclock_skew_seconds = -1\n"), "queue.clock_skew_seconds", "greater than or equal to 0"),
        (("[queue]\n", "[queue]\nread_ahead = -1\n"), "queue.read_ahead", "greater than or equal to 0"),
        (("platforms = [99003]", "platforms = []"), "channels[0].platforms", "at least 1 item"),
        (('name = "print"', 'name = "web"'), "channels[1].name", "used by another channel"),
        (("[kordiam]\n", "[kordiam]\ntimeout = nan\n"), "kordiam.timeout", "finite number"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: tuple[str, str], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace(*change, 1)))
    assert raised.value.key == key
    assert problem in raised.value.problem


def test_secrets_never_appear_in_errors_or_dumps(tmp_path: Path) -> None:
    broken = VALID.replace('client_id = "bridge"', 'client_id = ""')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, broken))
    assert "s3cret-value" not in str(raised.value)
    settings = load_settings(write(tmp_path, VALID))
    assert "s3cret-value" not in settings.model_dump_json()
    assert "s3cret-value" not in repr(settings)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[queue\n"))


def test_cli_exits_2_with_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID.replace('type = "folder"', 'type = "fax"', 1))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    known = "folder, kordiam-platform, kordiam-webhook, mailchimp, newsml, wordpress"
    expected = f"channels[0].type: unknown channel type 'fax' (known: {known})"
    assert err == f"kordiam-bridge: configuration error: {expected}"


def test_cli_names_a_wrong_adapter_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID.replace('path = "/tmp/web"', 'pth = "/tmp/web"'))
    assert main(["check-config", "--config", str(path)]) == 2
    # The misspelling, not the key it stands for missing (which it explains).
    assert "channels[0].pth: is not a known key (did you mean 'path'?)\n" in capsys.readouterr().err


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "examples" / "bridge.toml"
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("BRIDGE_CHANNELS__WEBSITE__APP_PASSWORD", "abcd efgh ijkl mnop qrst uvwx")
    monkeypatch.setenv("BRIDGE_CHANNELS__NEWSLETTER__API_KEY", "0123456789abcdef-us21")
    monkeypatch.setenv("BRIDGE_CHANNELS__CMS__AUTH__TOKEN", "t0ken-value")
    monkeypatch.setenv("BRIDGE_CHANNELS__MAGAZINE__API_SECRET", "magazine-secret")
    monkeypatch.setenv("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN", "ingress-token")
    monkeypatch.setenv("BRIDGE_INGRESS__PLATFORM__API_SECRET", "platform-secret")
    # check-config validates every channel's own keys too.
    assert main(["check-config", "--config", str(example)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed)["main_channel"] == "website"  # the channel the element links to
    for secret in (
        "abcd efgh",
        "0123456789abcdef",
        "t0ken-value",
        "magazine-secret",
        "ingress-token",
        "platform-secret",
    ):
        assert secret not in printed


def test_channel_keys_from_the_environment_by_channel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__PATH", "/from/env")
    settings = load_settings(write(tmp_path, VALID))
    assert settings.channels[1].options == {"path": "/from/env"}
    assert settings.channels[0].options == {"path": "/tmp/web"}


def test_an_environment_variable_for_an_unknown_channel_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS__WEBISTE__PATH", "/x")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == "BRIDGE_CHANNELS__WEBISTE__PATH"
    assert "channels: PRINT, WEB" in raised.value.problem


@pytest.mark.parametrize("variable", ["BRIDGE_CHANNELS__WEB", "BRIDGE_CHANNELS__WEB__", "BRIDGE_CHANNELS__WEB__AUTH__"])
def test_an_environment_variable_naming_a_channel_but_no_key_says_so(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "names no configured channel key (channels: PRINT, WEB)", as if WEB were not one of them.
    monkeypatch.setenv(variable, '{"path": "/x"}')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == variable
    assert raised.value.problem == (
        "names channel WEB but no key of it: BRIDGE_CHANNELS__WEB__KEY sets one (BRIDGE_CHANNELS__WEB__AUTH__TOKEN "
        "a nested one)"
    )


def test_two_channel_names_the_environment_cannot_tell_apart_are_an_error(tmp_path: Path) -> None:
    # BRIDGE_CHANNELS__WEB_SITE__… would set one of them, silently: a secret could reach the wrong channel.
    text = VALID.replace('name = "web"', 'name = "Web-Site"').replace('name = "print"', 'name = "web.site"')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert raised.value.key == "channels[1].name"
    assert raised.value.problem == (
        "'web.site' and 'Web-Site' are one channel to the environment (BRIDGE_CHANNELS__WEB_SITE__…): rename one"
    )


def test_a_channel_name_longer_than_the_state_keys_carry_is_an_error(tmp_path: Path) -> None:
    # The name is part of every delivery's DynamoDB range key (at most 1024 bytes) and of its parked elements' hash
    # key: one of 1100 characters was accepted, and then every delivery refused after its channel made the item.
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace('name = "print"', f'name = "{"p" * 1100}"')))
    assert raised.value.key == "channels[1].name"
    assert "at most 100 characters" in raised.value.problem
    assert load_settings(write(tmp_path, VALID.replace('name = "print"', f'name = "{"p" * 100}"'))).channels


def test_nested_channel_keys_and_json_tables_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__AUTH__TOKEN", "from-env")
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__STATUS_MAP", '{"Ready": "publish"}')
    settings = load_settings(write(tmp_path, VALID))
    assert settings.channels[0].options["auth"] == {"token": "from-env"}
    assert settings.channels[1].options["status_map"] == {"Ready": "publish"}
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__STATUS_MAP", '{"Ready": ')
    with pytest.raises(ConfigError, match="looks like JSON but does not parse"):
        load_settings(write(tmp_path, VALID))


def test_the_whole_channel_list_from_one_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Terraform module hands ECS the channels (credentials included) as one secret in BRIDGE_CHANNELS.
    channels = '[{"name": "cms", "type": "folder", "platforms": [7], "path": "/srv/cms"}]'
    monkeypatch.setenv("BRIDGE_CHANNELS", channels)
    settings = load_settings(write(tmp_path, VALID))
    assert [c.name for c in settings.channels] == ["cms"]
    assert settings.channels[0].options == {"path": "/srv/cms"}


def test_an_empty_channel_list_from_the_variable_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "channels: List should have at least 1 item …", the file's key, which the file had set right.
    monkeypatch.setenv("BRIDGE_CHANNELS", "[]")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == "BRIDGE_CHANNELS (channels)"


def test_channel_keys_by_name_apply_to_the_channels_of_the_one_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment that passes the channels as one secret still sets (or rotates) one key by name; before, the
    # by-name variable was dropped without a word and the missing-secret error recommended it all the same.
    monkeypatch.setenv("BRIDGE_CHANNELS", '[{"name": "cms", "type": "folder", "platforms": [7], "path": "/srv/a"}]')
    monkeypatch.setenv("BRIDGE_CHANNELS__CMS__PATH", "/srv/b")
    settings = load_settings(write(tmp_path, VALID))
    assert settings.channels[0].options == {"path": "/srv/b"}
    # A by-name variable for a channel the variable does not hold is an error, listing the channels it does.
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__PATH", "/x")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == "BRIDGE_CHANNELS__WEB__PATH"
    assert "channels: CMS" in raised.value.problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('[{"name": "cms"', "is not valid JSON"),
        ('{"name": "cms"}', "must be a JSON array of channel tables"),
        ('["cms"]', "must be a JSON array of channel tables"),
    ],
)
def test_a_malformed_channel_variable_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS", value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == "BRIDGE_CHANNELS"
    assert problem in raised.value.problem
    assert "\n" not in str(raised.value)


def test_a_wrong_key_of_a_channel_from_the_variable_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS", '[{"name": "cms", "type": "folder", "platforms": "seven", "path": "/a"}]')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key.startswith("BRIDGE_CHANNELS (channels[0].platforms")


# ---- what each command validates ---------------------------------------------------------------------------------

NO_SECRET = VALID.replace('client_secret = "s3cret-value"\n', "")


def test_queue_commands_validate_only_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_KORDIAM__CLIENT_SECRET", raising=False)
    path = write(tmp_path, NO_SECRET.replace('type = "folder"', 'type = "fax"', 1))
    settings = load_settings(path, model=QueueCommandSettings)
    assert settings.queue.url.endswith("/kordiam")
    # An unknown section is still a mistake, whatever the command.
    with pytest.raises(ConfigError, match=r"^quue: is not a known key"):
        load_settings(write(tmp_path, NO_SECRET + '\n[quue]\nurl = "x"\n'), model=QueueCommandSettings)


def test_status_needs_no_secret_but_the_whole_channel_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BRIDGE_KORDIAM__CLIENT_SECRET", raising=False)
    check = lambda channel, index: channel_problems(channel, index, secrets=False)  # noqa: E731
    wordpress = NO_SECRET.replace(
        'type = "folder"\nplatforms = [99003]\npath = "/tmp/web"',
        'type = "wordpress"\nplatforms = [99003]\nurl = "http://127.0.0.1:8089"\nusername = "bridge"',
    )
    settings = load_settings(write(tmp_path, wordpress), model=StatusSettings, check_channel=check)
    assert [c.type for c in settings.channels] == ["wordpress", "folder"]
    with pytest.raises(ConfigError, match=r"^channels\[0\]\.type: unknown channel type 'fax'"):
        load_settings(
            write(tmp_path, NO_SECRET.replace('type = "folder"', 'type = "fax"', 1)),
            model=StatusSettings,
            check_channel=check,
        )
    with pytest.raises(ConfigError, match=r"^channels\[0\]\.url: is required"):
        load_settings(
            write(tmp_path, wordpress.replace('url = "http://127.0.0.1:8089"\n', "")),
            model=StatusSettings,
            check_channel=check,
        )
    # The command itself: one line, exit 2.
    assert main(["status", "--config", str(write(tmp_path, VALID.replace('"folder"', '"fax"', 1)))]) == 2
    assert capsys.readouterr().err.startswith("kordiam-bridge: configuration error: channels[0].type: unknown")


# ---- environment and secrets -------------------------------------------------------------------------------------


def test_a_variable_that_sets_nothing_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    monkeypatch.setenv("BRIDGE_KORDAIM__CLIENT_SECRET", "x")
    monkeypatch.setenv("BRIDGE_QUEU__URL", "http://x/q")
    monkeypatch.setenv("BRIDGE_OPS_PORT", "1")
    monkeypatch.setenv("BRIDGE_TEST_SOMETHING", "the test suite's own")
    load_settings(write(tmp_path, VALID))
    warned = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert sorted(w["variable"] for w in warned if w["event"] == "environment_variable_ignored") == [
        "BRIDGE_KORDAIM__CLIENT_SECRET",
        "BRIDGE_OPS_PORT",
        "BRIDGE_QUEU__URL",
    ]
    assert all("kordiam" in w["reason"] for w in warned if w["variable"] == "BRIDGE_KORDAIM__CLIENT_SECRET")


def test_a_misspelt_key_of_a_section_the_command_reads_is_its_error_not_also_an_ignored_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: "environment_variable_ignored" first, then the command refused to start because of that variable.
    monkeypatch.setenv("BRIDGE_QUEUE__CONCURREN", "5")
    assert main(["check-config", "--config", str(write(tmp_path, VALID))]) == 2
    assert capsys.readouterr().err == (
        "kordiam-bridge: configuration error: BRIDGE_QUEUE__CONCURREN (queue.concurren): is not a known key "
        "(did you mean 'concurrency'?)\n"
    )
    # A command that does not read the section (dlq list reads [queue] and [ops]) leaves the variable unused: said.
    monkeypatch.delenv("BRIDGE_QUEUE__CONCURREN")
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRE", "s3cret-value")
    configure_logging("info")
    load_settings(write(tmp_path, VALID), model=QueueCommandSettings)
    (warned,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (warned["event"], warned["variable"]) == ("environment_variable_ignored", "BRIDGE_KORDIAM__CLIENT_SECRE")


def test_ingress_variables_set_something_and_are_not_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    monkeypatch.setenv("BRIDGE_INGRESS__PORT", "8780")
    monkeypatch.setenv("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN", "t0ken")
    monkeypatch.setenv("BRIDGE_INGRESS__PROT", "8780")
    load_settings(write(tmp_path, VALID))
    warned = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [w["variable"] for w in warned if w["event"] == "environment_variable_ignored"] == ["BRIDGE_INGRESS__PROT"]


def test_check_config_marks_as_main_the_channel_the_element_is_linked_to_set_or_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No channel sets ``main``: the first is the main channel, and the printed configuration says so on it, not
    ``"main": false`` on every channel."""
    by_default = write(tmp_path, VALID.replace("main = true\n", ""))
    # On the settings themselves: a kordiam-webhook channel reads its own ``main`` to look for the item the element
    # is linked to, as the main channel it is.
    assert [c.main for c in load_settings(by_default).channels] == [True, False]
    assert main(["check-config", "--config", str(by_default)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["main"]) for c in printed["channels"]] == [("web", True), ("print", False)]
    assert printed["main_channel"] == "web"
    assert main(["check-config", "--config", str(write(tmp_path, VALID))]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["main"]) for c in printed["channels"]] == [("web", False), ("print", True)]
    assert printed["main_channel"] == "print"


INGRESS_WITHOUT_SECRETS = """
[ingress]
[ingress.global_export]
path = "/kordiam"
auth = { type = "bearer" }
"""


def test_the_worker_does_not_need_the_ingress_secrets_but_check_config_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, VALID + INGRESS_WITHOUT_SECRETS)
    settings = load_settings(path)
    assert "ingress" not in type(settings).model_fields
    assert main(["check-config", "--config", str(path)]) == 2
    assert "ingress.global_export.auth.token" in capsys.readouterr().err


def test_an_error_from_a_variable_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_QUEUE__CONCURRENCY", "many")
    with pytest.raises(ConfigError, match=r"^BRIDGE_QUEUE__CONCURRENCY \(queue\.concurrency\): Input should be"):
        load_settings(write(tmp_path, VALID))
    monkeypatch.delenv("BRIDGE_QUEUE__CONCURRENCY")
    monkeypatch.setenv("BRIDGE_QUEUE__URLL", "http://x/q")
    with pytest.raises(ConfigError, match=r"^BRIDGE_QUEUE__URLL \(queue\.urll\): is not a known key"):
        load_settings(write(tmp_path, VALID))
    monkeypatch.delenv("BRIDGE_QUEUE__URLL")
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__PLATFORMS", "[]")
    with pytest.raises(ConfigError, match=r"^BRIDGE_CHANNELS__PRINT__PLATFORMS \(channels\[1\]\.platforms\)"):
        load_settings(write(tmp_path, VALID))


def test_a_variable_whose_key_is_empty_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A template's `BRIDGE_QUEUE__${KEY}` with KEY unset. Before: "queue.: is not a known key", no variable named.
    monkeypatch.setenv("BRIDGE_QUEUE__", "8")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert str(raised.value) == "BRIDGE_QUEUE__ (queue.): is not a known key"


@pytest.mark.parametrize(
    ("variable", "value", "key", "problem"),
    [
        # Before, an environment variable's "nan" reached the bound ("less than or equal to 120"), a file's did not.
        ("BRIDGE_KORDIAM__TIMEOUT", "nan", "kordiam.timeout", "must be a finite number, not nan"),
        ("BRIDGE_KORDIAM__TIMEOUT", " -inf", "kordiam.timeout", "must be a finite number, not -inf"),
        ("BRIDGE_STATE__LEASE_SECONDS", "1e400", "state.lease_seconds", "must be a finite number, not inf"),
        # Before, an item of a list a variable set was named without the variable.
        ("BRIDGE_CHANNELS__PRINT__PLATFORMS", "[0]", "channels[1].platforms[0]", "must be a Kordiam id"),
    ],
)
def test_a_wrong_value_from_a_variable_is_named_as_a_file_s_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key == f"{variable} ({key})"
    assert raised.value.problem.startswith(problem), raised.value.problem


def test_the_config_file_is_named_by_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CONFIG", "/nope.toml")
    with pytest.raises(ConfigError, match=r"^BRIDGE_CONFIG: file /nope.toml does not exist"):
        load_settings()
    with pytest.raises(ConfigError, match=r"^--config: file /also-nope.toml does not exist"):
        load_settings("/also-nope.toml")
    monkeypatch.delenv("BRIDGE_CONFIG")
    with pytest.raises(ConfigError, match=r"no configuration file given \(--config or BRIDGE_CONFIG\)"):
        load_settings()


def test_all_missing_secrets_in_one_line_with_their_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_KORDIAM__CLIENT_SECRET", raising=False)
    text = NO_SECRET.replace(
        'type = "folder"\nplatforms = [99003]\npath = "/tmp/web"',
        'type = "kordiam-webhook"\nplatforms = [99003]\nurl = "http://127.0.0.1:9/hook"\nauth = { type = "bearer" }',
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert str(raised.value) == (
        "secrets: not set: kordiam.client_secret (or BRIDGE_KORDIAM__CLIENT_SECRET), "
        "channels[0].auth.token (or BRIDGE_CHANNELS__WEB__AUTH__TOKEN)"
    )
    # The union's tag is no key anyone writes: `auth.token`, never `auth.bearer.token`.
    with pytest.raises(ConfigError, match=r"^channels\[0\]\.auth\.token: must not be empty"):
        load_settings(
            write(tmp_path, text.replace('type = "bearer" }', 'type = "bearer", token = " " }')),
            overrides={"kordiam": {"base_url": "https://k", "client_id": "c", "client_secret": "s3cret-value"}},
            check_channel=channel_problems,
        )


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ('{ token = "t0ken-value" }', "auth.type: is required: 'bearer', 'jwt', 'api_key' or 'headers'"),
        ('{ type = "beare", token = "t0ken-value" }', "auth.type: must be 'bearer', 'jwt', 'api_key' or 'headers'"),
        ('{ type = 1, token = "t0ken-value" }', "auth.type: must be 'bearer', 'jwt', 'api_key' or 'headers'"),
    ],
)
def test_an_auth_table_without_a_known_type_names_the_types(tmp_path: Path, auth: str, expected: str) -> None:
    # pydantic's own words ("Unable to extract tag using discriminator 'type'") name no type the table may take.
    ingress = f"\n[ingress.global_export]\nauth = {auth}\n"
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress), model=IngressCommandSettings)
    assert str(raised.value) == f"ingress.global_export.{expected}"
    channel = VALID.replace('path = "/tmp/web"', f'url = "http://127.0.0.1:9/hook"\nauth = {auth}').replace(
        'type = "folder"\nplatforms = [99003]', 'type = "kordiam-webhook"\nplatforms = [99003]'
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, channel), check_channel=channel_problems)
    assert str(raised.value) == f"channels[0].{expected}"


# ---- ActiveMQ queues ----------------------------------------------------------------------------------------------

STOMP = VALID.replace(
    """url = "http://127.0.0.1:4566/000000000000/kordiam"
endpoint_url = "http://127.0.0.1:4566"
""",
    """url = "stomp://mq.example.org:61613/queue/kordiam.acme"
dlq_url = "stomp://mq.example.org:61613/queue/kordiam.acme.dlq"
username = "acme"
password = "mq-s3cret"
""",
)


def test_a_stomp_queue_loads_with_its_own_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(write(tmp_path, STOMP))
    assert settings.queue.backend == "stomp" and settings.queue.username == "acme"
    assert settings.queue.password is not None and settings.queue.password.get_secret_value() == "mq-s3cret"
    assert load_settings(write(tmp_path, VALID)).queue.backend == "sqs"
    assert main(["check-config", "--config", str(write(tmp_path, STOMP))]) == 0
    assert "mq-s3cret" not in capsys.readouterr().out


@pytest.mark.parametrize("dlq", ["http://127.0.0.1:4566/000000000000/kordiam", "https://sqs.x/000000000000/kordiam/"])
def test_an_sqs_dead_letter_queue_must_be_another_queue(tmp_path: Path, dlq: str) -> None:
    # A dead letter sent back to its own queue is received again at once: a poison message looped at full speed.
    config = VALID.replace(
        'endpoint_url = "http://127.0.0.1:4566"\n', f'endpoint_url = "http://127.0.0.1:4566"\ndlq_url = "{dlq}"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, config))
    assert (raised.value.key, raised.value.problem) == ("queue.dlq_url", "must name another queue than queue.url")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # Before: "must be a table ([section] or { … }), not a single value", of a list of tables.
        (
            VALID.replace("[queue]", "[[queue]]", 1),
            "queue: must be one table ([queue]), not a list of them ([[queue]])",
        ),
        # Before: "Input should be a valid list".
        (
            VALID.partition("\n[[channels]]")[0] + '\n[channels]\nname = "web"\n',
            "channels: must be a list ([[channels]] tables, or [ … ]), not one table",
        ),
        (
            VALID.replace("platforms = [99003]", "platforms = 99003", 1),
            "channels[0].platforms: must be a list ([ … ]), not one value",
        ),
    ],
)
def test_a_table_where_a_list_goes_and_the_other_way_round_is_said_so(tmp_path: Path, text: str, line: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert str(raised.value) == line


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("# M\u00fcnchen desk\n".encode("latin-1") + VALID.encode())
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.key == str(path) and "not UTF-8" in raised.value.problem


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        # Before: a UnicodeEncodeError traceback out of the redaction of the secret (exit 1).
        (
            "BRIDGE_KORDIAM__CLIENT_SECRET",
            "s\u00e9cret-\udcffvalue",
            "BRIDGE_KORDIAM__CLIENT_SECRET: its value is not UTF-8 (byte 8)",
        ),
        # Before: "must not contain spaces or control characters", of a URL that holds neither.
        ("BRIDGE_QUEUE__URL", "http://127.0.0.1:4566/000000000000/k\udce9", "BRIDGE_QUEUE__URL: its value is not"),
        # Before: a UnicodeEncodeError traceback out of the warning that names the variable.
        ("BRIDGE_\udcff", "1", "BRIDGE_\\xff: the variable's name is not UTF-8"),
    ],
)
def test_a_variable_that_is_not_utf8_is_one_line_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    line: str,
) -> None:
    # The environment holds bytes: a value (or name) in Latin-1, from a shell or a secret store that wrote it so.
    monkeypatch.setenv(variable, value)
    assert main(["check-config", "--config", str(write(tmp_path, VALID))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kordiam-bridge: configuration error: {line}"), err
    assert err.count("\n") == 1 and "cret-" not in err, err  # the secret is not echoed


WEBHOOK_CHANNEL = """
[[channels]]
name = "cms"
type = "kordiam-webhook"
platforms = [99005]
url = "https://cms.example.org/kordiam"
auth = { type = "bearer" }
"""


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        # A secret store's value, or `--from-file`, with the file's last newline: sent as `Bearer …\n`, the header
        # was refused by the HTTP client at every delivery ("Forbidden control character detected in headers").
        ("BRIDGE_CHANNELS__CMS__AUTH__TOKEN", "t0ken-value-1234\n", "channels[2].auth.token"),
        ("BRIDGE_CHANNELS__CMS__AUTH__TOKEN", "t0ken\x01value-1234", "channels[2].auth.token"),
        # Sent in a form, a newline is a different secret: Kordiam refused the credentials, not saying why.
        ("BRIDGE_KORDIAM__CLIENT_SECRET", "s3cret-value\r\n", "kordiam.client_secret"),
    ],
)
def test_a_secret_with_a_line_break_or_control_character_is_refused_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    key: str,
) -> None:
    monkeypatch.setenv("BRIDGE_CHANNELS__CMS__AUTH__TOKEN", "t0ken-good-1234")
    assert main(["check-config", "--config", str(write(tmp_path, VALID + WEBHOOK_CHANNEL))]) == 0
    capsys.readouterr()
    monkeypatch.setenv(variable, value)
    assert main(["check-config", "--config", str(write(tmp_path, VALID + WEBHOOK_CHANNEL))]) == 2
    err = capsys.readouterr().err
    expected = f"kordiam-bridge: configuration error: {variable} ({key}): holds a line break or control character"
    assert err.startswith(expected), err
    assert err.count("\n") == 1 and "value" not in err.replace("value_", ""), err  # the secret is not echoed


@pytest.mark.parametrize("value", ["notjson", "{bad", "[1, 2]"])
def test_a_whole_section_from_a_variable_that_is_not_a_json_table_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BRIDGE_QUEUE", value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert raised.value.key.startswith("BRIDGE_QUEUE"), raised.value


@pytest.mark.parametrize(
    ("table", "value", "variable", "key"),
    [
        ("BRIDGE_QUEUE", '{"concurrency": 8}', "BRIDGE_QUEUE__CONCURRENCY", "queue.concurrency"),
        ("bridge_queue", '{"concurrency": 8}', "BRIDGE_QUEUE__CONCURRENCY", "queue.concurrency"),
        # The table sets url as a text: the other variable sets a key inside that text.
        ("BRIDGE_QUEUE", '{"url": "http://127.0.0.1:4566/0/q"}', "BRIDGE_QUEUE__URL__HOST", "queue.url"),
        (
            "BRIDGE_INGRESS__GLOBAL_EXPORT",
            '{"auth": {"type": "bearer", "token": "t0ken-value-1"}}',
            "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN",
            "ingress.global_export.auth.token",
        ),
        (
            "BRIDGE_CHANNELS__CMS__AUTH",
            '{"type": "bearer", "token": "t0ken-value-1"}',
            "BRIDGE_CHANNELS__CMS__AUTH__TOKEN",
            "channels.cms.auth.token",
        ),
    ],
)
def test_a_key_set_both_by_a_table_variable_and_its_own_variable_is_refused_naming_both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    table: str,
    value: str,
    variable: str,
    key: str,
) -> None:
    # Before: the single key won silently (BRIDGE_QUEUE='{"concurrency": 8}' beside BRIDGE_QUEUE__CONCURRENCY=64
    # ran 64), whichever the operator meant.
    monkeypatch.setenv(table, value)
    monkeypatch.setenv(variable, "t0ken-value-2" if key.endswith("token") else "64")
    path = write(tmp_path, VALID + INGRESS + WEBHOOK_CHANNEL)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, model=FileSettings)
    assert (raised.value.key, raised.value.problem) == (
        variable,
        f"sets {key}, which {table} sets too (a JSON table): set it in one of them",
    )
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"kordiam-bridge: configuration error: {variable}: {raised.value.problem}\n", err
    assert "t0ken" not in err


def test_a_table_variable_and_a_variable_for_another_of_its_keys_both_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing is set twice: the table from one place (a deployment's JSON), a key beside it from another (a secret).
    monkeypatch.setenv("BRIDGE_QUEUE", '{"concurrency": 8}')
    monkeypatch.setenv("BRIDGE_QUEUE__READ_AHEAD", "0")
    monkeypatch.setenv("BRIDGE_INGRESS__GLOBAL_EXPORT", '{"auth": {"type": "bearer"}}')
    monkeypatch.setenv("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN", "t0ken-value-1")
    monkeypatch.setenv("BRIDGE_CHANNELS__CMS__AUTH", '{"type": "bearer"}')
    monkeypatch.setenv("BRIDGE_CHANNELS__CMS__AUTH__TOKEN", "t0ken-value-2")
    settings = load_settings(write(tmp_path, VALID + INGRESS + WEBHOOK_CHANNEL), model=FileSettings)
    assert (settings.queue.concurrency, settings.queue.read_ahead) == (8, 0)
    assert settings.ingress is not None and settings.ingress.global_export is not None
    auth = settings.ingress.global_export.auth
    assert isinstance(auth, BearerAuth) and auth.token.get_secret_value() == "t0ken-value-1"
    assert settings.channels[2].options["auth"] == {"type": "bearer", "token": "t0ken-value-2"}


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (("username", "endpoint_url = 'http://x'\nusername"), "queue.endpoint_url", "is for SQS queues only"),
        (("username", "visibility_timeout = 30\nusername"), "queue.visibility_timeout", "is for SQS queues only"),
        (('dlq_url = "stomp://mq.example.org:61613/queue/kordiam.acme.dlq"\n', ""), "queue.dlq_url", "required"),
        (("mq.example.org:61613/queue/kordiam.acme.dlq", "other:61613/queue/d"), "queue.dlq_url", "same broker"),
        (("61613/queue/kordiam.acme.dlq", "61613/queue/kordiam.acme"), "queue.dlq_url", "another queue"),
        (('61613/queue/kordiam.acme"', '61613/topic/kordiam.acme"'), "queue.url", "/queue/NAME"),
        (('stomp://mq.example.org:61613/queue/kordiam.acme"', 'ftp://x/q"'), "queue.url", "stomp://HOST"),
        (("stomp://mq.example.org", "stomp://u:p@mq.example.org"), "queue.url", "must not hold credentials"),
        ((':61613/queue/kordiam.acme"', ':0/queue/kordiam.acme"'), "queue.url", "from 1 to 65535"),
        (
            ("username", "retry_base_seconds = 1000\nretry_max_seconds = 10\nusername"),
            "queue.retry_base_seconds",
            "caps",
        ),
    ],
)
def test_stomp_errors_name_the_key(tmp_path: Path, change: tuple[str, str], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, STOMP.replace(*change, 1)))
    assert (raised.value.key, problem in raised.value.problem) == (key, True), raised.value
    assert "mq-s3cret" not in str(raised.value)


def test_activemq_keys_are_refused_for_an_sqs_queue(tmp_path: Path) -> None:
    for key, value in (
        ("username", '"acme"'),
        ("password", '"x"'),
        ("ca_file", '"/etc/ssl/certs/ca-certificates.crt"'),
    ):
        with pytest.raises(ConfigError) as raised:
            load_settings(write(tmp_path, VALID.replace("[queue]\n", f"[queue]\n{key} = {value}\n")))
        assert raised.value.key == f"queue.{key}" and "ActiveMQ" in raised.value.problem


def test_a_ca_file_for_a_broker_without_tls_is_refused(tmp_path: Path) -> None:
    # A stomp:// connection is plain TCP: the CA bundle would silently not be used (stomp+ssl:// was meant).
    ca = 'ca_file = "/etc/ssl/certs/ca-certificates.crt"\n'
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, STOMP.replace("username", ca + "username", 1)))
    assert (raised.value.key, raised.value.problem) == (
        "queue.ca_file",
        "is for stomp+ssl:// queues only (a stomp:// connection has no TLS); remove it or use stomp+ssl://",
    )
    tls = STOMP.replace("stomp://", "stomp+ssl://").replace("username", ca + "username", 1)
    assert load_settings(write(tmp_path, tls)).queue.ca_file is not None


def test_a_native_redrive_on_a_stomp_queue_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "redrive", "--native", "--config", str(write(tmp_path, STOMP))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kordiam-bridge: --native: ActiveMQ has no move task") and "\n" not in err


def test_a_blank_secret_is_no_secret_wherever_it_is_set(tmp_path: Path) -> None:
    # One rule (config.plausible_secret) for Kordiam's client secret and every channel's: blank is refused.
    with pytest.raises(ConfigError, match=r"^kordiam\.client_secret: must not be empty"):
        load_settings(write(tmp_path, VALID.replace('client_secret = "s3cret-value"', 'client_secret = "   "')))
    wordpress = (
        'type = "wordpress"\nplatforms = [99003]\nurl = "https://wp.example"\nusername = "u"\napp_password = " "'
    )
    with pytest.raises(ConfigError, match=r"^channels\[0\]\.app_password: must not be empty"):
        text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', wordpress)
        load_settings(write(tmp_path, text), check_channel=channel_problems)


SHORT = "Ab1!xyz"  # 7 characters
_CMS = 'type = "kordiam-webhook"\nplatforms = [99003]\nurl = "https://cms.example"\n'
_FOLDER = 'type = "folder"\nplatforms = [99003]\npath = "/tmp/web"'


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("kordiam.client_secret", VALID.replace('"s3cret-value"', f'"{SHORT}"')),
        (
            "channels[0].app_password",
            VALID.replace(
                _FOLDER,
                f'type = "wordpress"\nplatforms = [99003]\nurl = "https://wp.example"\n'
                f'username = "u"\napp_password = "{SHORT}"',
            ),
        ),
        ("channels[0].auth.token", VALID.replace(_FOLDER, _CMS + f'auth = {{ type = "bearer", token = "{SHORT}" }}')),
        ("channels[0].auth.secret", VALID.replace(_FOLDER, _CMS + f'auth = {{ type = "jwt", secret = "{SHORT}" }}')),
        (
            "channels[0].auth.api_secret",
            VALID.replace(_FOLDER, _CMS + f'auth = {{ type = "api_key", api_key = "k", api_secret = "{SHORT}" }}'),
        ),
        (
            "channels[0].auth.headers",
            VALID.replace(_FOLDER, _CMS + f'auth = {{ type = "headers", headers = {{ X-Api-Key = "{SHORT}" }} }}'),
        ),
        (
            "channels[0].api_secret",
            VALID.replace(
                _FOLDER,
                'type = "kordiam-platform"\nplatforms = [99003]\nurl = "https://cms.example"\n'
                f'api_user = "u"\napi_secret = "{SHORT}"',
            ),
        ),
        (
            "channels[0].api_key",
            VALID.replace(
                _FOLDER,
                'type = "mailchimp"\nplatforms = [99003]\nlist_id = "l"\napi_key = "Ab1-us1"',  # 7 with its -us1
            ),
        ),
    ],
)
def test_a_secret_too_short_to_be_one_is_refused_naming_its_key_never_its_value(
    key: str, text: str, tmp_path: Path
) -> None:
    # Redaction replaces every configured secret in what a server answers: a 3-character one would never be
    # found (or, found, would blank out ordinary words), so it is refused at start-up instead.
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert raised.value.key == key and "at least 8 characters" in raised.value.problem
    assert SHORT not in str(raised.value) and "Ab1" not in str(raised.value)


def test_every_secret_a_setting_may_hold_is_long_enough_to_be_redacted() -> None:
    # The redaction floor passes over only what no secret setting can be.
    assert SHORTEST_REDACTED <= SHORTEST_SECRET


@pytest.mark.parametrize(
    ("key", "ingress"),
    [
        (
            "ingress.global_export.auth.token",
            f'[ingress.global_export]\nauth = {{ type = "bearer", token = "{SHORT}" }}',
        ),
        (
            "ingress.global_export.auth.headers",
            f'[ingress.global_export]\nauth = {{ type = "headers", headers = {{ X-Key = "{SHORT}" }} }}',
        ),
        ("ingress.platform.api_secret", f'[ingress.platform]\napi_user = "kordiam"\napi_secret = "{SHORT}"'),
    ],
)
def test_the_ingress_refuses_a_shared_secret_too_short_to_be_one(key: str, ingress: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress), model=IngressCommandSettings)
    assert raised.value.key == key and "at least 8 characters" in raised.value.problem
    assert SHORT not in str(raised.value)


# Credentials the ingress's request head limits (IngressServer: a header line of 2048 bytes, a name of 1024) would
# refuse on every call: before, each passed check-config, and every webhook was answered 400 by aiohttp.
LONG_CREDENTIALS = [
    (
        "ingress.global_export.auth.token",
        '[ingress.global_export]\nauth = { type = "bearer", token = "%s" }',
        ("T" * 2027, "T" * 2026),  # 2048 - len("Authorization: Bearer ")
        "a token of at most 2026",
    ),
    (
        "ingress.global_export.auth.headers",
        '[ingress.global_export]\nauth = { type = "headers", headers = { X-Key = "%s" } }',
        ("V" * 2042, "V" * 2041),  # 2048 - len("X-Key: ")
        "a value of at most 2041",
    ),
    (
        "ingress.global_export.auth.headers",
        '[ingress.global_export]\nauth = { type = "headers", headers = { %s = "header-value" } }',
        ("N" * 1025, "N" * 1024),
        "a name of at most 1024",
    ),
    (
        "ingress.platform.api_secret",
        '[ingress.platform]\napi_user = "kordiam"\napi_secret = "%s"',
        # "Authorization: Basic " and base64 of "kordiam:" and the secret: 4 characters per 3 bytes, 2027 at most.
        ("S" * 1511, "S" * 1510),
        "api_user and api_secret of at most 1517 bytes together",
    ),
]


@pytest.mark.parametrize(
    ("key", "ingress", "lengths", "limit"), LONG_CREDENTIALS, ids=["bearer", "header-value", "header-name", "basic"]
)
def test_the_ingress_refuses_credentials_too_long_for_a_request_head(
    key: str, ingress: str, lengths: tuple[str, str], limit: str, tmp_path: Path
) -> None:
    too_long, longest = lengths
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress % too_long), model=IngressCommandSettings)
    assert raised.value.key == key and limit in raised.value.problem
    assert too_long[:100] not in str(raised.value) and "\n" not in str(raised.value)
    load_settings(write(tmp_path, VALID + ingress % longest), model=IngressCommandSettings)


def test_check_config_refuses_a_bearer_token_too_long_for_a_request_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, ingress, (too_long, _), _ = LONG_CREDENTIALS[0]
    assert main(["check-config", "--config", str(write(tmp_path, VALID + "\n[ingress]\n" + ingress % too_long))]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert key in line and "2026" in line and too_long[:100] not in line


# Receiver paths the ingress's request line limit (IngressServer.max_line_size, 2048 bytes) would refuse: before, each
# passed check-config, and every call to it was answered 400 by aiohttp. Kordiam's longest call is a DELETE with the
# id in its path, for which 1024 bytes are kept (the longest id a DynamoDB state store maps back).
LONG_PATHS = [
    (
        "ingress.global_export.path",
        '[ingress.global_export]\npath = "/%s"\nauth = { type = "bearer", token = "a-bearer-token" }',
        998,  # 2048 - len("DELETE ") - len("/element/") - 1024 - len(" HTTP/1.1"), its "/" apart
        "a path of at most 999",
    ),
    (
        "ingress.platform.path",
        '[ingress.platform]\npath = "/%s"\napi_user = "kordiam"\napi_secret = "an-api-secret"',
        994,  # 2048 - len("DELETE ") - len("/publication/") - 1024 - len(" HTTP/1.1"), its "/" apart
        "a path of at most 995",
    ),
    (
        "ingress.global_export.auth.token_path",
        '[ingress.global_export]\nauth = { type = "api_key", api_key = "key", api_secret = "an-api-secret", '
        'token_path = "/%s" }',
        2025,  # 2048 - len("POST ") - len("/kordiam") - len(" HTTP/1.1"), its "/" apart
        "a token_path of at most 2026",
    ),
]


@pytest.mark.parametrize(
    ("key", "ingress", "longest", "limit"), LONG_PATHS, ids=["global-export", "platform", "token-path"]
)
def test_the_ingress_refuses_a_path_too_long_for_a_request_line(
    key: str, ingress: str, longest: int, limit: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress % ("p" * (longest + 1))), model=IngressCommandSettings)
    assert raised.value.key == key and limit in raised.value.problem and "2048" in raised.value.problem
    assert "\n" not in str(raised.value)
    load_settings(write(tmp_path, VALID + ingress % ("p" * longest)), model=IngressCommandSettings)


def test_check_config_refuses_a_receiver_path_too_long_for_a_request_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, ingress, longest, limit = LONG_PATHS[0]
    config = write(tmp_path, VALID + "\n[ingress]\n" + ingress % ("p" * (longest + 1)))
    assert main(["check-config", "--config", str(config)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert key in line and limit in line


def test_a_channel_may_send_a_token_longer_than_the_ingress_takes() -> None:
    # The head limits are the ingress's own: a CMS may take a longer token.
    sent = TypeAdapter(WebhookAuth).validate_python({"type": "bearer", "token": "T" * 4000})
    assert isinstance(sent, BearerAuth) and sent.token.get_secret_value() == "T" * 4000


@pytest.mark.parametrize(("concurrency", "read_ahead"), [(1, 16), (8, 128), (32, 512), (100, 512)])
def test_read_ahead_defaults_to_16_per_slot_up_to_512(tmp_path: Path, concurrency: int, read_ahead: int) -> None:
    settings = load_settings(write(tmp_path, VALID.replace("[queue]\n", f"[queue]\nconcurrency = {concurrency}\n")))
    assert settings.queue.read_ahead == read_ahead


def test_read_ahead_set_is_kept_whatever_the_concurrency(tmp_path: Path) -> None:
    text = VALID.replace("[queue]\n", "[queue]\nconcurrency = 1\nread_ahead = 0\n")
    assert load_settings(write(tmp_path, text)).queue.read_ahead == 0


def test_a_ca_file_that_holds_no_certificate_is_one_line(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("[queue]\nurl = 'x'\n")
    config = STOMP.replace("[queue]\n", f'[queue]\nca_file = "{not_pem}"\n', 1)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, config))
    assert raised.value.key == "queue.ca_file" and "is not a PEM file of CA certificates" in raised.value.problem


def test_a_ca_file_named_with_a_control_character_is_escaped_in_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the name raw in the one line, its line break breaking it and its escape sequence reaching the terminal.
    not_pem = tmp_path / "ca\n\x1b[31m.pem"
    not_pem.write_text("[queue]\nurl = 'x'\n")
    monkeypatch.setenv("BRIDGE_QUEUE__CA_FILE", str(not_pem))
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, STOMP))
    assert raised.value.key == "BRIDGE_QUEUE__CA_FILE (queue.ca_file)", raised.value
    assert raised.value.problem.startswith(f"{str(not_pem)!r} is not a PEM file of CA certificates"), raised.value


def test_an_empty_folder_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty template variable must not turn into "." (the worker's working directory).
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__PATH", "")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID), check_channel=channel_problems)
    assert raised.value.key == "BRIDGE_CHANNELS__PRINT__PATH (channels[1].path)"
    assert raised.value.problem == "must not be empty"


# ---- numbers are numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("[queue]\n", "[queue]\nconcurrency = true\n"), "queue.concurrency"),
        (("[queue]\n", "[queue]\nshutdown_timeout = false\n"), "queue.shutdown_timeout"),
        (('client_secret = "s3cret-value"', 'client_secret = "s3cret-value"\ntimeout = true'), "kordiam.timeout"),
        (("platforms = [99003]", "platforms = [true]"), "channels[0].platforms[0]"),
        (('statuses = [5, "Ready for print"]', "statuses = [true]"), "channels[1].statuses[0]"),
        (("platforms = [99003]", "platforms = [99003]\nmax_in_flight = true"), "channels[0].max_in_flight"),
    ],
)
def test_a_boolean_where_a_number_belongs_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], key: str
) -> None:
    # pydantic's lax mode would read true as 1 (one handler, a one-second timeout, platform 1).
    path = write(tmp_path, VALID.replace(*change, 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    problem = "must be a number, not true or false"
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {problem}\n"


def test_a_boolean_for_a_channels_own_number_names_the_key(tmp_path: Path) -> None:
    newsml = 'type = "newsml"\nplatforms = [99003]\ntarget = "/tmp/web"\ntimeout = true'
    with pytest.raises(ConfigError) as raised:
        text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', newsml)
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == ("channels[0].timeout", "must be a number, not true or false")


def _setting_models() -> list[type[BaseModel]]:
    """Every model a configuration value is read into: the sections, the channel table, each adapter's options,
    and the tables nested in them."""
    from bridge import config
    from bridge.channels import channel_types

    roots: list[Any] = [
        value
        for value in vars(config).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and not issubclass(value, BaseSettings)
    ]
    roots += [kind.options for kind in channel_types().values()]
    found: list[type[BaseModel]] = []
    while roots:
        model = roots.pop()
        if model in found or model is BaseModel or not issubclass(model, BaseModel):
            continue
        found.append(model)
        for field in model.model_fields.values():
            roots += [t for t in _members(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
    return found


def _members(annotation: Any) -> list[Any]:
    """Every type an annotation is made of (``dict[str, int | X]`` gives str, int, X)."""
    arguments = get_args(annotation)
    if not arguments:
        return [annotation]
    return [annotation] + [member for argument in arguments for member in _members(argument)]


def _a_boolean_in_place_of_a_number(annotation: Any) -> Any:
    """A value of ``annotation``'s shape with ``True`` where a number goes; None when it holds no number."""
    origin, arguments = get_origin(annotation), get_args(annotation)
    if annotation in (int, float):
        return True
    if origin is Annotated:
        return _a_boolean_in_place_of_a_number(arguments[0])
    if origin in (list, tuple, set, frozenset):
        inner = _a_boolean_in_place_of_a_number(arguments[0])
        return None if inner is None else [inner]
    if origin is dict:
        inner = _a_boolean_in_place_of_a_number(arguments[1])
        return None if inner is None else {"key": inner}
    if origin in (Union, types.UnionType):
        shapes = [_a_boolean_in_place_of_a_number(argument) for argument in arguments]
        return next((shape for shape in shapes if shape is not None), None)
    return None


def test_every_number_setting_refuses_a_boolean() -> None:
    # A number setting added later without config.Int / config.Float (or NotBoolean) fails here, by name.
    checked, accepted = [], []
    for model in _setting_models():
        for name, field in model.model_fields.items():
            value = _a_boolean_in_place_of_a_number(field.annotation)
            if value is None:
                continue
            checked.append(f"{model.__name__}.{name}")
            try:
                model.model_validate({name: value})
            except ValidationError as error:
                if any(e["loc"][:1] == (name,) and "not true or false" in e["msg"] for e in error.errors()):
                    continue
            accepted.append(f"{model.__name__}.{name}")
    assert accepted == []
    assert {"QueueSettings.concurrency", "ChannelSettings.platforms", "NewsMLOptions.timeout"} <= set(checked)
    assert {"WordPressOptions.category_map", "PlatformStatus.id", "JwtAuth.ttl_seconds"} <= set(checked)


# ---- typos --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "meant"),
    [
        (("[state]\n", "[recocile]\nenabled = true\n\n[state]\n"), "recocile", "reconcile"),
        (("[queue]\n", "[queue]\nconcurency = 8\n"), "queue.concurency", "concurrency"),
        (("[state]\n", "[feedback]\nenabeld = false\n\n[state]\n"), "feedback.enabeld", "enabled"),
        (('path = "/tmp/web"', 'pth = "/tmp/web"'), "channels[0].pth", "path"),
        (("platforms = [99003]", "plattforms = [99003]"), "channels[0].plattforms", "platforms"),
    ],
)
def test_a_misspelt_key_or_section_says_which_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], key: str, meant: str
) -> None:
    path = write(tmp_path, VALID.replace(*change, 1))
    problem = f"is not a known key (did you mean {meant!r}?)"
    with pytest.raises(ConfigError) as raised:
        load_settings(path, check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {problem}\n"


@pytest.mark.parametrize(
    ("text", "key", "sections"),
    [
        # A key appended at the end of the file belongs to the last [[channels]] table, not to the section meant.
        (VALID + "concurrency = 8\n", "channels[1].concurrency", "[queue]"),
        (VALID + "enabled = true\n", "channels[1].enabled", "[feedback] or [reconcile]"),
        (
            VALID.replace('client_id = "bridge"', 'client_id = "bridge"\nconcurrency = 8'),
            "kordiam.concurrency",
            "[queue]",
        ),
        ("concurrency = 8\n" + VALID, "concurrency", "[queue]"),
    ],
)
def test_a_key_under_the_wrong_header_says_which_section_it_belongs_to(
    tmp_path: Path, text: str, key: str, sections: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (
        key,
        f"is not a known key here: it is a key of {sections}",
    )


def test_a_key_like_no_other_is_only_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace("[queue]\n", "[queue]\nxyzzy = 1\n", 1)))
    assert (raised.value.key, raised.value.problem) == ("queue.xyzzy", "is not a known key")


def test_a_misspelt_key_of_a_nested_table_says_which_was_meant(tmp_path: Path) -> None:
    ingress = '\n[ingress]\n[ingress.global_export]\nauth = { type = "bearer", tokn = "t0ken-value" }\n'
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress), model=FileSettings)
    assert (raised.value.key, raised.value.problem) == (
        "ingress.global_export.auth.tokn",
        "is not a known key (did you mean 'token'?)",
    )


def test_a_misspelt_variable_says_which_key_or_section_was_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_QUEUE__URLL", "https://sqs.eu-central-1.amazonaws.com/1/q")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert str(raised.value) == "BRIDGE_QUEUE__URLL (queue.urll): is not a known key (did you mean 'url'?)"
    # A misspelt section is ignored, not an error (BRIDGE_SQS_PORT and the like are compose's): the warning says
    # which section was meant.
    monkeypatch.delenv("BRIDGE_QUEUE__URLL")
    monkeypatch.setenv("BRIDGE_RECOCILE__ENABLED", "true")
    configure_logging("info")
    load_settings(write(tmp_path, VALID))
    (warned,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (warned["variable"], warned["reason"]) == (
        "BRIDGE_RECOCILE__ENABLED",
        "no section 'recocile' (did you mean 'reconcile'?)",
    )


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[reconcile]\ninterval_seconds = "15m"', "reconcile.interval_seconds"),
        ('[kordiam]\ntimeout = "30s"', "kordiam.timeout"),
        ('[ingress]\nmax_body_bytes = "4MiB"', "ingress.max_body_bytes"),
        ('[queue]\nvisibility_timeout = "2 min"', "queue.visibility_timeout"),
    ],
)
def test_a_number_with_a_unit_says_numbers_take_none(tmp_path: Path, line: str, key: str) -> None:
    # Before: "Input should be a valid number, unable to parse string as a number", for a value that plainly is one.
    section, _, assignment = line.partition("\n")
    text = VALID.replace(f"{section}\n", f"{section}\n{assignment}\n", 1) if section in VALID else f"{VALID}\n{line}\n"
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text + INGRESS if section != "[ingress]" else text), model=FileSettings)
    problem = "must be a plain number, without a unit: durations are in seconds, sizes in bytes"
    assert (raised.value.key, raised.value.problem) == (key, problem)


@pytest.mark.parametrize("level", ["INFO", "Warning", " debug\n"])
def test_a_log_level_or_format_is_read_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    # LOG_LEVEL=INFO is how most tools spell it: before, refused as "Input should be 'debug', 'info', …".
    monkeypatch.setenv("BRIDGE_OPS__LOG_LEVEL", level)
    monkeypatch.setenv("BRIDGE_INGRESS__LOG_LEVEL", level)
    text = VALID + '\n[ops]\nlog_format = "Console"\n' + INGRESS
    settings = load_settings(write(tmp_path, text), model=FileSettings)
    assert settings.ingress is not None
    assert settings.ops.log_level == settings.ingress.log_level == level.strip().lower()
    assert settings.ops.log_format == "console"
    monkeypatch.setenv("BRIDGE_OPS__LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), model=FileSettings)
    assert raised.value.key == "BRIDGE_OPS__LOG_LEVEL (ops.log_level)"


@pytest.mark.parametrize(
    ("variable", "value", "key", "kept"),
    [
        ("BRIDGE_STATE__URL", "sqlite:////tmp/state.db\n", "state.url", "sqlite:////tmp/state.db"),
        ("BRIDGE_STATE__URL", " sqlite:////tmp/state.db ", "state.url", "sqlite:////tmp/state.db"),
        ("BRIDGE_STATE__URL", "dynamodb://bridge-state\n", "state.url", "dynamodb://bridge-state"),
        ("BRIDGE_QUEUE__URL", " stomp://mq:61613/queue/in\n", "queue.url", "stomp://mq:61613/queue/in"),
    ],
)
def test_a_store_or_queue_address_is_read_without_the_spaces_around_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, kept: str
) -> None:
    # Before: a variable's last newline became part of the SQLite file's name ("state.db\n"): a fresh, empty store
    # beside the real one, silently. Every http(s) address was already read so.
    monkeypatch.setenv(variable, value)
    if variable == "BRIDGE_QUEUE__URL":
        monkeypatch.setenv("BRIDGE_QUEUE__DLQ_URL", "stomp://mq:61613/queue/dlq")
    text = VALID.replace('endpoint_url = "http://127.0.0.1:4566"\n', "", 1)  # an SQS key: refused for stomp://
    settings = load_settings(write(tmp_path, text))
    section, _, name = key.partition(".")
    assert getattr(getattr(settings, section), name) == kept
    if kept.startswith("sqlite"):
        assert settings.state.sqlite_path == Path("/tmp/state.db")


def test_a_state_path_with_a_control_character_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_STATE__URL", "sqlite:////tmp/state\n.db")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert (raised.value.key, raised.value.problem) == (
        "BRIDGE_STATE__URL (state.url)",
        "must not contain a line break or control character",
    )


def test_a_folder_channel_path_is_read_without_the_spaces_around_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "/srv/out\n" from a variable was a directory named "out\n", made at start-up and written to, silently.
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__PATH", f" {tmp_path / 'out'}\n")
    settings = load_settings(write(tmp_path, VALID))
    options = channel_options(settings.channels[0], index=0)
    assert isinstance(options, FolderOptions) and options.path == tmp_path / "out"
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__PATH", f"{tmp_path}/o\tut")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (
        "BRIDGE_CHANNELS__WEB__PATH (channels[0].path)",
        "must not contain a line break or control character",
    )


@pytest.mark.parametrize(("name", "problem"), [("web site", "letters"), ("wéb", "letters"), ("", "empty")])
def test_a_channel_name_of_other_characters_says_which_it_may_hold(tmp_path: Path, name: str, problem: str) -> None:
    # Before: "String should match pattern '^[A-Za-z0-9_.-]+$'", and "String should have at least 1 character".
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace('name = "web"', f'name = "{name}"', 1)))
    assert (raised.value.key, raised.value.problem) == (
        "channels[0].name",
        {
            "letters": "must be letters, digits, '_', '.' or '-' (it is part of the state store's keys and of the "
            "BRIDGE_CHANNELS__NAME__KEY variables)",
            "empty": "must not be empty",
        }[problem],
    )


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('client_id = "bridge"', "client_id = 12345"), "kordiam.client_id"),
        (('client_secret = "s3cret-value"', "client_secret = 123456789"), "kordiam.client_secret"),
        (('name = "web"', "name = 7"), "channels[0].name"),
    ],
)
def test_a_number_where_text_belongs_says_to_quote_it(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    # Before: "Input should be a valid string", for an id that is all digits: the fix is a pair of quotes.
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace(*change, 1)))
    assert (raised.value.key, raised.value.problem) == (key, 'must be text, in quotes ("…")')


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ('{ token = "t0ken-value" }', "is required: 'bearer', 'jwt', 'api_key' or 'headers'"),
        ('{ type = "Bearer", token = "t0ken-value" }', "must be 'bearer', 'jwt', 'api_key' or 'headers'"),
    ],
)
def test_a_credentials_table_without_its_type_names_the_type_key(tmp_path: Path, auth: str, problem: str) -> None:
    # Before: "ingress.global_export.auth: Unable to extract tag using discriminator 'type'", pydantic's words.
    ingress = f"\n[ingress]\n[ingress.global_export]\nauth = {auth}\n"
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + ingress), model=FileSettings)
    assert (raised.value.key, raised.value.problem) == ("ingress.global_export.auth.type", problem)
    channel = WEBHOOK_CHANNEL.replace('auth = { type = "bearer" }', f"auth = {auth}")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + channel), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == ("channels[2].auth.type", problem)


# ---- booleans are booleans --------------------------------------------------------------------------------------

FILE_BOOLEAN = "must be true or false, without quotes"
VARIABLE_BOOLEAN = "must be true or false (or yes/no, on/off, 1/0)"


@pytest.mark.parametrize("value", ['"no"', '"yes"', '"false"', '"true"', "1", "0", '""'])
@pytest.mark.parametrize(
    ("section", "key"),
    [("[reconcile]", "reconcile.enabled"), ("[feedback]", "feedback.enabled"), ("[state]", "state.create_directories")],
)
def test_a_boolean_in_the_file_is_true_or_false_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, section: str, key: str
) -> None:
    # Before: "no", "off", 0 read as false and "yes", "on", 1 as true, silently; "false" in quotes is text, which
    # other tools reading the same file take as true. The file has booleans: a value of any other type is a mistake.
    line = f"{key.split('.')[1]} = {value}\n"
    text = VALID.replace("[state]\n", f"[state]\n{line}", 1) if section == "[state]" else f"{VALID}\n{section}\n{line}"
    path = write(tmp_path, text)
    problem = FILE_BOOLEAN if value.startswith('"') else "must be true or false"
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {problem}\n"


def test_a_channel_boolean_in_the_file_is_true_or_false_nothing_else(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace("main = true", 'main = "yes"')))
    assert (raised.value.key, raised.value.problem) == ("channels[1].main", FILE_BOOLEAN)
    platform = (
        'type = "kordiam-platform"\nplatforms = [99003]\nurl = "https://cms.example"\napi_user = "u"\n'
        'api_secret = "s3cret-value"\ntoken_cache = "off"'
    )
    text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', platform)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == ("channels[0].token_cache", FILE_BOOLEAN)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("true", True),
        ("TRUE", True),
        (" True\n", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
        ("0", False),
    ],
)
def test_a_boolean_from_a_variable_reads_the_words_an_operator_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, meant: bool
) -> None:
    monkeypatch.setenv("BRIDGE_RECONCILE__ENABLED", text)
    monkeypatch.setenv("BRIDGE_STATE__CREATE_DIRECTORIES", text)
    monkeypatch.setenv("BRIDGE_CHANNELS__PRINT__MAIN", text)
    monkeypatch.setenv("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__REQUIRE_EXPIRY", text)
    ingress = '\n[ingress]\n[ingress.global_export]\nauth = { type = "jwt", secret = "s3cret-value" }\n'
    settings = load_settings(write(tmp_path, VALID.replace("main = true", "") + ingress), model=FileSettings)
    assert settings.reconcile.enabled is meant
    assert settings.state.create_directories is meant
    assert settings.channels[1].main is meant  # else the first channel is the main one
    assert settings.ingress is not None and settings.ingress.global_export is not None
    assert isinstance(settings.ingress.global_export.auth, JwtCheck)
    assert settings.ingress.global_export.auth.require_expiry is meant


def test_a_channel_option_from_a_variable_reads_the_same_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = (
        'type = "kordiam-platform"\nplatforms = [99003]\nurl = "https://cms.example"\napi_user = "u"\n'
        'api_secret = "s3cret-value"'
    )
    text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', platform)
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__TOKEN_CACHE", "no")
    load_settings(write(tmp_path, text), check_channel=channel_problems)  # "no" is a word a variable may say
    monkeypatch.setenv("BRIDGE_CHANNELS__WEB__TOKEN_CACHE", "nope")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (
        "BRIDGE_CHANNELS__WEB__TOKEN_CACHE (channels[0].token_cache)",
        VARIABLE_BOOLEAN,
    )


@pytest.mark.parametrize("text", ["", " ", "maybe", "2", "t", "y", "enabled", "-1"])
def test_a_boolean_variable_that_is_no_such_word_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    monkeypatch.setenv("BRIDGE_RECONCILE__ENABLED", text)
    path = write(tmp_path, VALID)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    key = "BRIDGE_RECONCILE__ENABLED (reconcile.enabled)"
    assert (raised.value.key, raised.value.problem) == (key, VARIABLE_BOOLEAN)
    assert main(["check-config", "--config", str(path)]) == 2
    line = f"{key}: {VARIABLE_BOOLEAN}"
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {line}\n"


def test_a_boolean_in_json_from_a_variable_is_a_json_boolean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # JSON has booleans, as TOML has: "true" in quotes is text there too.
    monkeypatch.setenv("BRIDGE_RECONCILE", '{"enabled": "yes"}')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert (raised.value.key, raised.value.problem) == ("BRIDGE_RECONCILE (reconcile.enabled)", FILE_BOOLEAN)
    monkeypatch.setenv("BRIDGE_RECONCILE", '{"enabled": true}')
    assert load_settings(write(tmp_path, VALID)).reconcile.enabled
    monkeypatch.delenv("BRIDGE_RECONCILE")
    monkeypatch.setenv("BRIDGE_CHANNELS", '[{"name": "cms", "type": "folder", "platforms": [7], "main": 1}]')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert (raised.value.key, raised.value.problem) == ("BRIDGE_CHANNELS (channels[0].main)", "must be true or false")


def _a_word_in_place_of_a_boolean(annotation: Any) -> Any:
    """A value of ``annotation``'s shape with ``"no"`` where a boolean goes; None when it holds no boolean."""
    origin, arguments = get_origin(annotation), get_args(annotation)
    if annotation is bool:
        return "no"
    if origin is Annotated:
        return _a_word_in_place_of_a_boolean(arguments[0])
    if origin in (list, tuple, set, frozenset):
        inner = _a_word_in_place_of_a_boolean(arguments[0])
        return None if inner is None else [inner]
    if origin is dict:
        inner = _a_word_in_place_of_a_boolean(arguments[1])
        return None if inner is None else {"key": inner}
    if origin in (Union, types.UnionType):
        shapes = [_a_word_in_place_of_a_boolean(argument) for argument in arguments]
        return next((shape for shape in shapes if shape is not None), None)
    return None


def test_every_boolean_setting_refuses_a_word_in_quotes() -> None:
    # A boolean setting added later without config.Bool fails here, by name.
    checked, accepted = [], []
    for model in _setting_models():
        for name, field in model.model_fields.items():
            value = _a_word_in_place_of_a_boolean(field.annotation)
            if value is None:
                continue
            checked.append(f"{model.__name__}.{name}")
            try:
                model.model_validate({field.alias or name: value})
            except ValidationError as error:
                if any(e["loc"][:1] == (field.alias or name,) and FILE_BOOLEAN in e["msg"] for e in error.errors()):
                    continue
            accepted.append(f"{model.__name__}.{name}")
    assert accepted == []
    assert {"ReconcileSettings.enabled", "ChannelSettings.main", "JwtCheck.require_expiry"} <= set(checked)
    assert {"KordiamPlatformOptions.token_cache", "WordPressOptions.create_missing_categories"} <= set(checked)
    assert {"PlatformStatus.triggers_export", "FeedbackSettings.publish_when_live"} <= set(checked)


# ---- text that names something is not blank ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('client_id = "bridge"', 'client_id = " "'), "kordiam.client_id"),
        (('client_id = "bridge"', 'client_id = "\\n"'), "kordiam.client_id"),
        (('client_id = "bridge"', 'client_id = ""'), "kordiam.client_id"),
    ],
)
def test_a_blank_name_or_id_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], key: str
) -> None:
    # Before: " " passed check-config as a client id (only the empty string was refused), to fail at Kordiam.
    path = write(tmp_path, VALID.replace(*change, 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (key, "must not be empty or blank")
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: must not be empty or blank\n"


def test_a_blank_name_from_a_variable_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_ID", "  ")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert (raised.value.key, raised.value.problem) == (
        "BRIDGE_KORDIAM__CLIENT_ID (kordiam.client_id)",
        "must not be empty or blank",
    )


@pytest.mark.parametrize("value", ["bridge\n", " bridge "])
def test_a_name_or_id_is_read_without_the_spaces_around_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Before: kept as is and sent to Kordiam, whose refusal said "credentials refused", not which key was wrong.
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_ID", value)
    assert load_settings(write(tmp_path, VALID)).kordiam.client_id == "bridge"


def test_a_name_or_id_with_a_control_character_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_ID", "bri\tdge")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert (raised.value.key, raised.value.problem) == (
        "BRIDGE_KORDIAM__CLIENT_ID (kordiam.client_id)",
        "must not contain a line break or control character",
    )


def _requires_text(annotation: Any, metadata: list[Any]) -> bool:
    """Whether a field is text that must hold at least one character (``min_length=1``), itself or in a union."""

    def at_least_one(constraints: Any) -> bool:
        return any(getattr(c, "min_length", None) for c in constraints) or any(
            at_least_one(getattr(c, "metadata", ())) for c in constraints
        )

    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return any(
        (member is str and at_least_one(metadata))
        or (get_origin(member) is Annotated and get_args(member)[0] is str and at_least_one(get_args(member)[1:]))
        for member in members
    )


def test_every_text_setting_that_must_not_be_empty_refuses_a_blank_one() -> None:
    # A setting added later with Field(min_length=1) but not config.NonBlank fails here, by name.
    checked, accepted = [], []
    for model in _setting_models():
        for name, field in model.model_fields.items():
            if not _requires_text(field.annotation, field.metadata):
                continue
            checked.append(f"{model.__name__}.{name}")
            try:
                model.model_validate({field.alias or name: " \t"})
            except ValidationError as error:
                # A pattern of letters and digits (ChannelSettings.name) refuses spaces too.
                refused = ("blank", "should match pattern")
                if any(
                    e["loc"][:1] == (field.alias or name,) and any(r in e["msg"] for r in refused)
                    for e in error.errors()
                ):
                    continue
            accepted.append(f"{model.__name__}.{name}")
    assert accepted == []
    assert {"KordiamSettings.client_id", "QueueSettings.username", "PlatformReceiver.api_user"} <= set(checked)
    assert {"WordPressOptions.username", "JwtAuth.subject", "NewsMLOptions.provider"} <= set(checked)


# ---- http(s) addresses -------------------------------------------------------------------------------------------

HTTP_URL_CREDENTIALS = "must not hold credentials (user:password@): set them in the keys for secrets"
HOST_NAME_PROBLEM = "has a host name that is not valid (each dot-separated label 1 to 63 characters, 253 in all)"

# What urlparse takes for an http(s) URL but no request can use: before, each was accepted, and the worker met it at
# its first Kordiam call as an error like an unreachable server's, retried for ever ("Kordiam not reachable").
UNUSABLE_URLS = [
    ("ftp://api.kordiam.app", "must be an http(s) URL"),
    ("htp://api.kordiam.app", "must be an http(s) URL"),
    ("api.kordiam.app", "must be an http(s) URL"),
    ("http://:8700", "must be an http(s) URL"),
    ("https://user@", "must be an http(s) URL"),
    ("https://api.kordiam.app:99999", "has a port that is not a number from 1 to 65535"),
    ("https://api.kordiam.app:443x", "has a port that is not a number from 1 to 65535"),
    ("https://api.kordiam.app:0", "has a port that is not a number from 1 to 65535"),
    ("https://[::1", "has a host that is not a valid [IPv6] address"),
    ("https://api.kor diam.app", "must not contain spaces or control characters"),
    ("ht\ttps://api.kordiam.app", "must not contain spaces or control characters"),
    ("https://api.kordiam.app?tenant=1", "must be a base address, without ?query or #fragment"),
    ("https://api.kordiam.app/#top", "must be a base address, without ?query or #fragment"),
    ("https://bridge:pw-SECRET@api.kordiam.app", HTTP_URL_CREDENTIALS),
    ("https://bridge@api.kordiam.app", HTTP_URL_CREDENTIALS),
    # Before, these passed and met the resolver: "label empty or too long", retried for ever as unreachable.
    ("https://api..kordiam.app", HOST_NAME_PROBLEM),
    ("https://.kordiam.app", HOST_NAME_PROBLEM),
    ("https://" + "a" * 64 + ".kordiam.app", HOST_NAME_PROBLEM),
    ("https://" + ".".join(["a" * 60] * 5), HOST_NAME_PROBLEM),
]


@pytest.mark.parametrize(("url", "problem"), UNUSABLE_URLS)
def test_a_kordiam_base_url_no_request_can_use_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, problem: str
) -> None:
    path = write(tmp_path, VALID.replace('base_url = "https://api.kordiam.app"', f"base_url = {json.dumps(url)}"))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == ("kordiam.base_url", problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: kordiam.base_url: {problem}\n"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/000000000000/kordiam",
        "http://[zz]:4566/000000000000/kordiam",
        "stomp://[::1:61613/queue/kordiam",
        "stomp+ssl://[zz]:61613/queue/kordiam",
    ],
)
def test_a_queue_url_with_a_wrong_ipv6_host_says_so_in_the_words_of_every_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    # Before: urlparse's own words, "Invalid IPv6 URL" or "'zz' does not appear to be an IPv4 or IPv6 address".
    monkeypatch.setenv("BRIDGE_QUEUE__URL", url)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID))
    assert str(raised.value) == "BRIDGE_QUEUE__URL (queue.url): has a host that is not a valid [IPv6] address"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.kordiam.app",
        " http://127.0.0.1:8700/ ",
        "HTTPS://api.kordiam.app:443/base",
        "http://[::1]:8",
        "https://api.kordiam.app.",
        "https://bücher.example",
        "http://my_host:8700",
        "https://" + "a" * 63 + ".kordiam.app",
    ],
)
def test_a_usable_kordiam_base_url_is_kept(tmp_path: Path, url: str) -> None:
    text = VALID.replace('base_url = "https://api.kordiam.app"', f"base_url = {json.dumps(url)}")
    assert load_settings(write(tmp_path, text)).kordiam.base_url == url.strip()


CHANNEL_URL_KEYS = {
    "wordpress": ('url = "{url}"\nusername = "u"\napp_password = "app-password"', "url"),
    "mailchimp": ('base_url = "{url}"\napi_key = "0123456789abcdef-us1"\nlist_id = "abc"', "base_url"),
    "kordiam-webhook": ('url = "{url}"\nauth = {{ type = "bearer", token = "t0ken-value" }}', "url"),
    "kordiam-platform": ('url = "{url}"\napi_user = "u"\napi_secret = "api-secret"', "url"),
    "newsml": ('target = "s3://bucket/in/"\nendpoint_url = "{url}"', "endpoint_url"),
}


@pytest.mark.parametrize("kind", sorted(CHANNEL_URL_KEYS))
def test_an_address_with_a_password_is_refused_without_printing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    # A URL is no secret: check-config prints it, and every "unreachable" error (log line, dead letter) names it.
    keys, key = CHANNEL_URL_KEYS[kind]
    channel = f'type = "{kind}"\nplatforms = [99003]\n' + keys.format(url="https://admin:pw-SECRET@cms.example")
    path = write(tmp_path, VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', channel))
    assert main(["check-config", "--config", str(path)]) == 2
    output = capsys.readouterr()
    assert "pw-SECRET" not in output.out + output.err
    assert output.err == f"kordiam-bridge: configuration error: channels[0].{key}: {HTTP_URL_CREDENTIALS}\n"


@pytest.mark.parametrize("kind", sorted(CHANNEL_URL_KEYS))
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://cms.example", "must be an http(s) URL"),
        ("http://:80", "must be an http(s) URL"),
        ("https://cms.example:99999", "has a port that is not a number from 1 to 65535"),
    ],
)
def test_every_channel_address_has_the_same_rule(tmp_path: Path, kind: str, url: str, problem: str) -> None:
    keys, key = CHANNEL_URL_KEYS[kind]
    channel = f'type = "{kind}"\nplatforms = [99003]\n' + keys.format(url=url)
    text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', channel)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (f"channels[0].{key}", problem)


def test_a_newsml_s3_endpoint_botocore_refuses_is_refused_naming_the_key(tmp_path: Path) -> None:
    keys, key = CHANNEL_URL_KEYS["newsml"]
    channel = 'type = "newsml"\nplatforms = [99003]\n' + keys.format(url="http://minio_server:9000")
    text = VALID.replace('type = "folder"\nplatforms = [99003]\npath = "/tmp/web"', channel)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), check_channel=channel_problems)
    assert (raised.value.key, raised.value.problem) == (f"channels[0].{key}", AWS_ENDPOINT_PROBLEM)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('url = "http://127.0.0.1:4566/000000000000/kordiam"', "queue.url"),
        ('endpoint_url = "http://127.0.0.1:4566"', "queue.endpoint_url"),
    ],
)
def test_the_queue_addresses_have_the_same_rule(tmp_path: Path, line: str, key: str) -> None:
    broken = line.replace("4566", "99999")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID.replace(line, broken, 1)))
    assert (raised.value.key, raised.value.problem) == (key, "has a port that is not a number from 1 to 65535")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('endpoint_url = "http://127.0.0.1:4566"', "queue.endpoint_url"),
        ('url = "sqlite:///tmp/state.db"', "state.endpoint_url"),
    ],
)
def test_an_aws_endpoint_botocore_refuses_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    # Before, botocore's "Invalid endpoint" ValueError came out of the first client made: a traceback, exit 1.
    broken = (
        'url = "dynamodb://bridge-state"\nendpoint_url = "http://dynamodb_local:8000"'
        if key == "state.endpoint_url"
        else 'endpoint_url = "http://moto_server:4566"'
    )
    path = write(tmp_path, VALID.replace(line, broken, 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (key, AWS_ENDPOINT_PROBLEM)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {AWS_ENDPOINT_PROBLEM}\n"


AWS_ENDPOINT_PROBLEM = "has a host the AWS client refuses: letters, digits, '-' and '.' only (no '_'), or an IP address"


def test_a_named_pipe_nothing_writes_to_is_one_line_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, reading the file waited for a writer for ever: `check-config` hung without a word.
    monkeypatch.setattr(config_module, "CONFIG_PIPE_WAIT_SECONDS", 0.01)
    pipe = tmp_path / "bridge.toml"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError) as raised:
        load_settings(pipe)
    assert (raised.value.key, raised.value.problem) == (
        "--config",
        f"{pipe} is a pipe nothing was written to within 0.01 s (is the process that should write it running?)",
    )


@pytest.mark.parametrize("text", [VALID, "\ufeff" + VALID])
def test_a_pipe_that_holds_the_configuration_is_read(tmp_path: Path, text: str) -> None:
    # `--config <(vault read …)` or `--config /dev/stdin <<EOF`: a pipe a process writes to is a configuration file.
    # (A byte order mark is still named: before, saying so opened the pipe a second time.)
    read_end, write_end = os.pipe()
    os.write(write_end, text.encode())
    os.close(write_end)
    try:
        if text.startswith("\ufeff"):
            with pytest.raises(ConfigError, match=r"starts with a byte order mark"):
                load_settings(f"/dev/fd/{read_end}")
        else:
            assert load_settings(f"/dev/fd/{read_end}").kordiam.client_id == "bridge"
    finally:
        os.close(read_end)


def test_a_process_substitution_slower_than_the_pipe_wait_is_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # `--config <(gpg -d bridge.toml.gpg)` asking for a passphrase: the pipe has its writer from the start and cannot
    # hang without one, so it is read however long the first bytes take (before, refused after the wait).
    monkeypatch.setattr(config_module, "CONFIG_PIPE_WAIT_SECONDS", 0.0)
    read_end, write_end = os.pipe()
    waited = threading.Event()
    real_select = select.select

    def select_then_write(*args: Any) -> Any:
        found = real_select(*args)
        waited.set()
        return found

    def writer() -> None:
        # Only once the load has looked for the first bytes (when it does) or is reading.
        waited.wait(timeout=1)
        os.write(write_end, VALID.encode())
        os.close(write_end)

    monkeypatch.setattr(select, "select", select_then_write)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert load_settings(f"/dev/fd/{read_end}").kordiam.client_id == "bridge"
    finally:
        thread.join()
        os.close(read_end)


@pytest.mark.parametrize("table", ["no", "state table", "a" * 256, ""])
def test_a_dynamodb_table_name_dynamodb_refuses_is_said_so(tmp_path: Path, table: str) -> None:
    # Before: "must be sqlite:///PATH or dynamodb://TABLE", which the URL was.
    text = VALID.replace('url = "sqlite:///tmp/state.db"', f'url = "dynamodb://{table}"')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert (raised.value.key, raised.value.problem) == (
        "state.url",
        "dynamodb://TABLE: a DynamoDB table name is 3 to 255 letters, digits, '_', '.' or '-'",
    )


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n"])
def test_an_empty_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    # Before: "queue: is required (and 2 more problems)", as if the file were only missing a section (an empty
    # mount or template is the likelier cause).
    for name in [name for name in os.environ if name.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (
        "--config",
        f"{path} holds no settings (it is empty, or only comments)",
    )


@pytest.mark.parametrize("path", ["big.toml", "/dev/zero"])
def test_a_file_larger_than_any_configuration_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # Before, --config /dev/zero (or /dev/urandom, a log file named by mistake) was read whole: all the memory there
    # is, then a MemoryError traceback.
    monkeypatch.setattr(config_module, "CONFIG_MAX_BYTES", 1000)
    file = tmp_path / path if not path.startswith("/") else Path(path)
    if not path.startswith("/"):
        file.write_text(VALID + "#" * 1000 + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(file)
    assert (raised.value.key, raised.value.problem) == (
        "--config",
        f"{file} is larger than 1000 bytes: no configuration is",
    )


def test_a_file_nested_deeper_than_the_parser_goes_is_one_line(tmp_path: Path) -> None:
    # Before: tomllib's RecursionError, a traceback of thousands of lines.
    path = write(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (str(path), "not valid TOML: nested too deeply")


@pytest.mark.parametrize(
    "variable",
    ["BRIDGE_CHANNELS", "BRIDGE_QUEUE", "BRIDGE_CHANNELS__PRINT__PLATFORMS", "BRIDGE_INGRESS__TRUSTED_PROXIES"],
)
def test_a_variable_nested_deeper_than_the_parser_goes_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Before: json's RecursionError, a traceback.
    monkeypatch.setenv(variable, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    assert (raised.value.key, raised.value.problem) == (variable, "is nested too deeply to read")


def test_a_file_that_starts_with_a_byte_order_mark_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    with pytest.raises(ConfigError, match=r"starts with a byte order mark \(BOM\): save it as UTF-8 without one"):
        load_settings(path)


def test_a_section_given_as_a_single_value_says_it_must_be_a_table(tmp_path: Path) -> None:
    text = VALID.replace(
        '[queue]\nurl = "http://127.0.0.1:4566/000000000000/kordiam"\nendpoint_url = "http://127.0.0.1:4566"\n',
        "queue = 5\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert (raised.value.key, raised.value.problem) == (
        "queue",
        "must be a table ([section] or { … }), not a single value",
    )


# ---- AWS regions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[queue]\nregion = "{region}"\n', "queue.region"),
        ('[state]\nregion = "{region}"\n', "state.region"),
    ],
)
@pytest.mark.parametrize("region", ["eu central 1", "eu-central-1/", "", " ", "-eu"])
def test_a_region_botocore_cannot_take_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str, region: str
) -> None:
    # botocore refuses it with a traceback when the first client is made; an empty state.region would silently be
    # AWS_REGION's or the queue's instead.
    section = line.partition("\n")[0] + "\n"
    path = write(tmp_path, VALID.replace(section, line.format(region=region), 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    problem = "must be an AWS region name like eu-central-1"
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {problem}\n"


@pytest.mark.parametrize("region", ["eu-central-1", "us-gov-west-1", "local"])
def test_a_region_name_is_kept(tmp_path: Path, region: str) -> None:
    text = VALID.replace("[queue]\n", f'[queue]\nregion = "{region}"\n').replace(
        'url = "sqlite:///tmp/state.db"', f'url = "dynamodb://bridge-state"\nregion = "{region}"'
    )
    settings = load_settings(write(tmp_path, text))
    assert (settings.queue.region, settings.state.region) == (region, region)


# ---- listening addresses -----------------------------------------------------------------------------------------

INGRESS = '\n[ingress]\n[ingress.global_export]\nauth = { type = "bearer", token = "t0ken-value" }\n'


@pytest.mark.parametrize(("section", "key"), [("ops", "ops.host"), ("ingress", "ingress.host")])
@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_listening_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, host: str
) -> None:
    # An empty host is every interface to asyncio: an empty template variable would expose /metrics (or the
    # ingress) beyond the 127.0.0.1 default, silently.
    monkeypatch.setenv(f"BRIDGE_{section.upper()}__HOST", host)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    variable = f"BRIDGE_{section.upper()}__HOST"
    assert (raised.value.key, raised.value.problem) == (
        f"{variable} ({key})",
        "must not be empty (0.0.0.0 listens on every interface)",
    )


@pytest.mark.parametrize(("section", "key"), [("ops", "ops.host"), ("ingress", "ingress.host")])
@pytest.mark.parametrize("host", ["bridge..internal", "-" * 64])
def test_a_listening_host_no_resolver_takes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, host: str
) -> None:
    # Before, it passed, and binding raised idna's UnicodeError (no OSError): a traceback out of `run` or `ingress`.
    monkeypatch.setenv(f"BRIDGE_{section.upper()}__HOST", host)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    variable = f"BRIDGE_{section.upper()}__HOST"
    assert (raised.value.key, raised.value.problem) == (f"{variable} ({key})", HOST_NAME_PROBLEM)


@pytest.mark.parametrize(("section", "key"), [("ops", "ops.host"), ("ingress", "ingress.host")])
@pytest.mark.parametrize(
    "host", ["http://bridge.internal", " 0.0.0.0", "bridge internal", "bridge\x01", "10.0.0.1:9090"]
)
def test_a_listening_host_that_is_no_host_is_refused_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, host: str
) -> None:
    # Before: check-config passed it, and `run` said "cannot listen on http://bridge.internal:9090: cannot resolve
    # …", a space or a control character in it not to be seen.
    monkeypatch.setenv(f"BRIDGE_{section.upper()}__HOST", host)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    variable = f"BRIDGE_{section.upper()}__HOST"
    assert (raised.value.key, raised.value.problem) == (
        f"{variable} ({key})",
        f"{host!r} is not an IP address or a host name (letters, digits, '-', '_' and '.')",
    )


def test_every_interface_is_said_in_words(tmp_path: Path) -> None:
    text = VALID + '\n[ops]\nhost = "0.0.0.0"\n' + INGRESS.replace("[ingress]\n", '[ingress]\nhost = "::"\n')
    settings = load_settings(write(tmp_path, text), model=FileSettings)
    assert settings.ops.host == "0.0.0.0" and settings.ingress is not None and settings.ingress.host == "::"


# ---- state keys of the other backend -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "line", "key", "kind"),
    [
        ("sqlite:///tmp/state.db", 'endpoint_url = "http://127.0.0.1:8000"', "state.endpoint_url", "dynamodb://"),
        ("sqlite:///tmp/state.db", 'region = "eu-central-1"', "state.region", "dynamodb://"),
        ("dynamodb://bridge-state", "create_directories = true", "state.create_directories", "sqlite:///"),
    ],
)
def test_a_state_key_of_the_other_backend_is_refused(tmp_path: Path, url: str, line: str, key: str, kind: str) -> None:
    # As for the queue's keys: set for the other kind of store, it would silently do nothing (a DynamoDB Local
    # endpoint under a sqlite:/// URL that was meant to be dynamodb://).
    text = VALID.replace('url = "sqlite:///tmp/state.db"', f'url = "{url}"\n{line}')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert (raised.value.key, raised.value.problem) == (
        key,
        f"is for {kind} state stores only; remove it for this state.url",
    )


def test_create_directories_false_asks_nothing_of_a_dynamodb_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file written for local use (create_directories = true) moved to DynamoDB through the environment: the key
    # cannot be removed from there, and false asks for nothing a DynamoDB store would silently not do.
    text = VALID.replace('url = "sqlite:///tmp/state.db"', 'url = "sqlite:///tmp/state.db"\ncreate_directories = true')
    monkeypatch.setenv("BRIDGE_STATE__URL", "dynamodb://bridge-state")
    monkeypatch.setenv("BRIDGE_STATE__CREATE_DIRECTORIES", "false")
    settings = load_settings(write(tmp_path, text))
    assert (settings.state.backend, settings.state.create_directories) == ("dynamodb", False)


# ---- which publications a channel takes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (
            ('statuses = [5, "Ready for print"]', "statuses = []"),
            "channels[1].statuses",
            "must list at least one status id or name (leave it out for every status)",
        ),
        (('statuses = [5, "Ready for print"]', 'statuses = [5, " "]'), "channels[1].statuses[1]", "must not be blank"),
        (
            ('statuses = [5, "Ready for print"]', "statuses = [-5]"),
            "channels[1].statuses[0]",
            "must be a Kordiam id (a positive integer) or a status name",
        ),
        (
            ("platforms = [99003]", "platforms = [0]"),
            "channels[0].platforms[0]",
            "must be a Kordiam id (a positive integer)",
        ),
        (
            ("platforms = [99004]", "platforms = [99004, -99004]"),
            "channels[1].platforms[1]",
            "must be a Kordiam id (a positive integer)",
        ),
        (
            ("platforms = [99003]", "platforms = [9223372036854775808]"),
            "channels[0].platforms[0]",
            "must be a Kordiam id (a positive integer)",
        ),
    ],
)
def test_a_channel_that_could_never_take_a_publication_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], key: str, problem: str
) -> None:
    # Each of these matched no publication ever: the channel was configured, and silently exported nothing.
    path = write(tmp_path, VALID.replace(*change, 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert (raised.value.key, raised.value.problem) == (key, problem)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {key}: {problem}\n"


def test_a_status_id_in_quotes_is_still_a_status(tmp_path: Path) -> None:
    text = VALID.replace('statuses = [5, "Ready for print"]', 'statuses = ["5", "Published"]')
    assert load_settings(write(tmp_path, text)).channels[1].statuses == ["5", "Published"]


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN", " ", "ingress.global_export.auth.token"),
        ("BRIDGE_INGRESS__GLOBAL_EXPORT__PATH", "bad path", "ingress.global_export.path"),
        ("BRIDGE_INGRESS__GLOBAL_EXPORT", '{"path": "bad path"}', "ingress.global_export.path"),
        ("BRIDGE_QUEUE__URL__HOST", "x", "queue.url"),
    ],
)
def test_an_error_from_a_nested_variable_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    # The ingress's secrets come from such variables (README, Webhook accounts): the file does not hold the value.
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    assert raised.value.key == f"{variable} ({key})"


@pytest.mark.parametrize("key", ["link_element", "publish_when_live"])
def test_a_feedback_write_asked_for_with_feedback_off_is_refused(tmp_path: Path, key: str) -> None:
    # With enabled = false the bridge writes nothing back to Kordiam: the one write asked for would silently not
    # happen (enabled = false reads as "no publication feedback" to someone who only wants the element linked).
    text = VALID + f"\n[feedback]\nenabled = false\n{key} = true\n"
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert (raised.value.key, raised.value.problem) == (
        f"feedback.{key}",
        "needs feedback.enabled = true: with enabled = false the bridge writes nothing back to Kordiam",
    )
    off = VALID + "\n[feedback]\nenabled = false\n"
    assert not load_settings(write(tmp_path, off)).feedback.enabled
    quiet = VALID + f"\n[feedback]\nenabled = false\n{key} = false\n"
    assert not load_settings(write(tmp_path, quiet)).feedback.enabled


@pytest.mark.parametrize(
    ("variable", "value", "key", "problem"),
    [
        ("BRIDGE_INGRESS__TRUSTED_PROXIES", "10.0.0.0/8", "ingress.trusted_proxies", "must be a JSON list ([…])"),
        (
            "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__HEADERS",
            "X-Token=t",
            "ingress.global_export.auth.headers",
            "must be a JSON table ({…})",
        ),
    ],
)
def test_a_key_that_takes_json_from_a_variable_that_is_not_json_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str, problem: str
) -> None:
    # Before: "BRIDGE_INGRESS: is not a JSON table of the section's keys", a variable nobody had set.
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    assert (raised.value.key, raised.value.problem) == (f"{variable} ({key})", problem)


@pytest.mark.parametrize(
    ("proxy", "problem"),
    [
        # Before: "value is not a valid IPv4 or IPv6 network", of what is one address of a network with its prefix.
        ("10.0.0.1/16", "10.0.0.1/16 has host bits set: write the network, 10.0.0.0/16"),
        ("fd00::1/64", "fd00::1/64 has host bits set: write the network, fd00::/64"),
    ],
)
def test_a_trusted_proxy_network_written_with_an_address_says_which_network(
    tmp_path: Path, proxy: str, problem: str
) -> None:
    text = VALID + INGRESS.replace("[ingress]\n", f'[ingress]\ntrusted_proxies = ["10.1.0.0/16", "{proxy}"]\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), model=FileSettings)
    assert str(raised.value) == f"ingress.trusted_proxies[1]: {problem}"
    fixed = load_settings(write(tmp_path, text.replace(proxy, problem.rpartition(", ")[2])), model=FileSettings)
    assert fixed.ingress is not None and len(fixed.ingress.trusted_proxies) == 2


@pytest.mark.parametrize("path", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
def test_a_config_from_a_file_descriptor_not_open_here_says_so(path: str) -> None:
    # `sudo kordiam-bridge run --config <(…)`: sudo closes the descriptor the shell made. Before: "file /dev/fd/63
    # does not exist", of a path that always names one.
    reader, writer = os.pipe()
    os.close(reader)
    os.close(writer)
    named = path.format(fd=reader)
    with pytest.raises(ConfigError) as raised:
        load_settings(named)
    assert str(raised.value) == (
        f"--config: {named}: file descriptor {reader} is not open in this process (sudo closes the one of "
        "--config <(…)): give a file"
    )


# ---- the ingress's open connections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_connections = 1", "Input should be greater than or equal to 2"),
        ("max_connections = 1000001", "Input should be less than or equal to 1000000"),
        (
            "max_connections = 64",
            "must be more than max_concurrent_requests (64): every call in progress holds a "
            "connection, and a health check needs one more",
        ),
        (
            "max_concurrent_requests = 8\nmax_connections = 8",
            "must be more than max_concurrent_requests (8): every "
            "call in progress holds a connection, and a health check needs one more",
        ),
    ],
)
def test_max_connections_out_of_bounds_is_one_line_naming_it(tmp_path: Path, line: str, problem: str) -> None:
    text = VALID + INGRESS.replace("[ingress]\n", f"[ingress]\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), model=FileSettings)
    assert (raised.value.key, raised.value.problem) == ("ingress.max_connections", problem)
    assert "\n" not in str(raised.value)


def test_max_connections_is_read_and_its_default_fits_a_descriptor_limit_of_1024(tmp_path: Path) -> None:
    text = VALID + INGRESS.replace("[ingress]\n", "[ingress]\nmax_connections = 100\n")
    settings = load_settings(write(tmp_path, text), model=FileSettings)
    assert settings.ingress is not None and settings.ingress.max_connections == 100
    default = IngressSettings.model_fields["max_connections"].default
    # The justification of the default: with the ingress's other descriptors (its SQS and DynamoDB pools) it fits
    # the common soft `ulimit -n`.
    pooled = pooled_connections(settings.queue) + POOL_CONNECTIONS
    assert default + pooled + PROCESS_DESCRIPTORS <= 1024
    assert default > IngressSettings.model_fields["max_concurrent_requests"].default


def test_max_connections_unset_follows_max_concurrent_requests(tmp_path: Path) -> None:
    # A config that raised max_concurrent_requests before max_connections existed still starts.
    text = VALID + INGRESS.replace("[ingress]\n", "[ingress]\nmax_concurrent_requests = 600\n")
    settings = load_settings(write(tmp_path, text), model=FileSettings)
    assert settings.ingress is not None and settings.ingress.max_connections == 8 * 600
    settings = load_settings(write(tmp_path, VALID + INGRESS), model=FileSettings)
    assert settings.ingress is not None and settings.ingress.max_connections == 512
