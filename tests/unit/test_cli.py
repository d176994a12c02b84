"""The command line itself: one line and exit 2 for a bad argument, defaults shown in --help."""

from __future__ import annotations

import errno
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridge import cli
from bridge.admin import element as element_module
from bridge.cli import main
from bridge.config import AWS_ENDPOINT_PROBLEM, HOST_NAME_PROBLEM, StatusSettings
from bridge.errors import BridgeError, ConfigError
from tests.support import write_config
from tests.unit.fakes import MemoryStateStore


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["replay", "0"], "kordiam-bridge replay: argument ELEMENT_ID: 0 is not an element id"),
        (["replay", "-5"], "kordiam-bridge replay: argument ELEMENT_ID: -5 is not an element id"),
        (
            ["replay", "1001", "99999999999999999999"],
            "kordiam-bridge replay: argument ELEMENT_ID: 99999999999999999999 is not an element id",
        ),
        (["dlq", "show", " "], "kordiam-bridge dlq show: argument MESSAGE_ID: a message id cannot be empty"),
        (
            ["dlq", "show", "abc\ndef"],
            "kordiam-bridge dlq show: argument MESSAGE_ID: a message id has no spaces or control characters",
        ),
        (["replay", "x1"], "kordiam-bridge replay: argument ELEMENT_ID: 'x1' is not an integer"),
        (["replay", "1_000"], "kordiam-bridge replay: argument ELEMENT_ID: '1_000' is not an integer"),
        (["dlq", "list", "--limit", "0"], "kordiam-bridge dlq list: argument --limit: 0 is not a count"),
        (["dlq", "delete"], "kordiam-bridge dlq delete: the following arguments are required: MESSAGE_ID"),
        (
            ["dlq", "delete", "abc", "d e"],
            "kordiam-bridge dlq delete: argument MESSAGE_ID: a message id has no spaces or control characters",
        ),
        (["dlq", "redrive", "--element", "0"], "kordiam-bridge dlq redrive: argument --element: 0 is not an element"),
        (["simulator", "--port", "99999"], "kordiam-bridge simulator: argument --port: 99999 is not a TCP port"),
        (["status", "--sample-size", "-1"], "kordiam-bridge status: argument --sample-size: -1 is not a count"),
        (["nonsense"], "kordiam-bridge: argument COMMAND: invalid choice: 'nonsense'"),
        # Before: "kordiam-bridge: unrecognized arguments: …", not saying which command has no such option.
        (["dlq", "list", "--bogus"], "kordiam-bridge dlq list: unrecognized arguments: --bogus\n"),
        (["element", "1", "2"], "kordiam-bridge element: unrecognized arguments: 2\n"),
        (["status", "--sizes=3", "x"], "kordiam-bridge status: unrecognized arguments: --sizes=3 x\n"),
        # A terminal escape, shown escaped: raw, it would clear the operator's screen.
        (["status", "\x1b[2J"], "kordiam-bridge status: unrecognized arguments: '\\x1b[2J'\n"),
    ],
)
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err


def test_the_largest_element_id_is_accepted_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    # It gets past the arguments to the configuration, which is missing here.
    assert main(["replay", str(2**63 - 1), "--config", "/nonexistent/bridge.toml"]) == 2
    assert "ELEMENT_ID" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["simulator", "--help"], ["(default: 8700)", "(default: 127.0.0.1)", "(default: 3600)"]),
        (["dlq", "list", "--help"], ["(default: 50)"]),
        (["dlq", "show", "--help"], ["(default: 1000)"]),
        (["dlq", "delete", "--help"], ["(default: 1000)", "Without --yes it prints what it would delete"]),
        (["status", "--help"], ["(default: 10)"]),
        (["demo", "--help"], ["(default: demo-output)"]),
    ],
)
def test_help_shows_the_defaults(argv: list[str], shown: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in shown:
        assert default in text
    assert "(default: None)" not in text


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_no_empty_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["simulator", "--help"], capsys)
    assert "(default: [])" not in text and "(default: )" not in text


def test_help_names_an_element_option_s_value_as_the_other_commands_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--element ID only this element (repeat)" in help_text(["dlq", "redrive", "--help"], capsys)


def test_parked_list_help_says_it_lists_channels_no_longer_configured_too(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["parked", "list", "--help"], capsys)
    assert "then any channel no longer configured that still holds parked elements" in text


def test_status_help_says_what_a_sample_of_the_main_queue_costs(capsys: pytest.CaptureFixture[str]) -> None:
    # As `element --dlq` says it: each peek is a receive, which counts towards the queue's maxReceiveCount.
    text = help_text(["status", "--help"], capsys)
    assert "--sample also peek at the main queue for the oldest message (on SQS each peek counts as a receive" in text


def test_the_simulator_on_a_taken_port_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["simulator", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"kordiam-bridge: configuration error: --port: cannot listen on 127.0.0.1:{port}: address already in use\n"
    )


@pytest.mark.parametrize("flag", ["--sqs-endpoint-url", "--queue-url"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("notaurl", "must be an http(s) URL"),
        ("http://127.0.0.1:99999", "has a port that is not a number from 1 to 65535"),
        ("http://moto..local:4566", HOST_NAME_PROBLEM),
    ],
)
def test_the_simulator_refuses_a_queue_address_that_is_no_url(
    flag: str, url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a traceback inside a JSON log line and "Application startup failed" (the endpoint), or a warning at
    # the first notification (the queue URL). The flags have the configuration's rule (bridge.config.http_url).
    assert main(["simulator", "--port", "0", flag, url]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {flag}: {url!r} {problem}\n"


def test_the_simulator_refuses_an_sqs_endpoint_botocore_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://moto_server:4566"
    assert main(["simulator", "--port", "0", "--queue-url", url + "/0/q", "--sqs-endpoint-url", url]) == 2
    line = f"kordiam-bridge: configuration error: --sqs-endpoint-url: {url!r} {AWS_ENDPOINT_PROBLEM}\n"
    assert capsys.readouterr().err == line


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `kordiam-bridge dlq list --json | head -1`: the rest of the output has nowhere to go; no traceback.
    script = (
        "import sys\n"
        "from bridge import cli\n"
        "def flood(args):\n"
        "    for _ in range(200_000):\n"
        "        print('x' * 100)\n"
        "    return 0\n"
        "cli._check_config = flood\n"
        "sys.exit(cli.main(['check-config', '--config', 'unused.toml']))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.readline()
    writer.stdout.close()
    assert writer.wait(timeout=60) == 141
    assert writer.stderr.read() == b""


def test_a_reader_that_goes_away_from_a_table_ends_the_command_quietly_too() -> None:
    # `kordiam-bridge dlq list | head -1`: rich's Console meets the broken pipe itself. Before: it raised
    # SystemExit(1), so the table commands exited 1 ("done with failures") where --json exits 141.
    script = (
        "import sys, argparse\n"
        "from bridge import cli\n"
        "def render(lines, console):\n"
        "    for line in lines:\n"
        "        console.print(line)\n"
        "def table(args):\n"
        "    cli._show(argparse.Namespace(json=False), ['x' * 60] * 200_000, render)\n"
        "    return 0\n"
        "cli._check_config = table\n"
        "sys.exit(cli.main(['check-config', '--config', 'unused.toml']))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.readline()
    writer.stdout.close()
    assert writer.wait(timeout=60) == 141
    assert writer.stderr.read() == b""


class _FullDisk(io.StringIO):
    """A stdout on a full disk (`> /dev/full`): every write fails."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("json_output", [False, True])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, json_output: bool
) -> None:
    # Before: the OSError's traceback (`check-config > /dev/full`, `element 5 --json > /dev/full`), exit 1.
    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "s3cret-value")

    async def open_store(_: StatusSettings, *, read_only: bool) -> MemoryStateStore:
        return MemoryStateStore()

    monkeypatch.setattr(element_module, "open_store", open_store)
    argv = ["element", "5", "--config", str(config)] + (["--json"] if json_output else [])
    for command in (["check-config", "--config", str(config)], argv):
        monkeypatch.setattr(sys, "stdout", _FullDisk())
        assert main(command) == 1
        assert capsys.readouterr().err == "kordiam-bridge: cannot write the output: No space left on device\n"
        # `>&-`: Python's stdout is None, and print() would drop the output without a word, exit 0.
        monkeypatch.setattr(sys, "stdout", None)
        assert main(command) == 1
        assert capsys.readouterr().err == "kordiam-bridge: cannot write the output: stdout is closed\n"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["dlq", "list", "--help"], ["status", "-h"]])
def test_help_that_cannot_be_written_is_one_line_and_exit_1(argv: list[str]) -> None:
    # As every command's output: before, argparse dropped the write error and the help exited 0, printing nothing.
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *argv], check=False, stdout=full, stderr=subprocess.PIPE, timeout=60
        )
    assert (done.returncode, done.stderr) == (1, b"kordiam-bridge: cannot write the output: No space left on device\n")


@pytest.mark.parametrize("argv", [["--help"], ["dlq", "delete", "--help"]])
def test_help_on_a_closed_or_full_stdout_is_one_line_and_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(argv) == 1
    assert capsys.readouterr().err == "kordiam-bridge: cannot write the output: No space left on device\n"
    # `>&-`: before, argparse printed the help to stderr instead, exit 0.
    monkeypatch.setattr(sys, "stdout", None)
    assert main(argv) == 1
    assert capsys.readouterr().err == "kordiam-bridge: cannot write the output: stdout is closed\n"


def test_an_error_that_quotes_several_lines_is_printed_on_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever an error quotes (a server's page, a broker's ERROR frame), the command's last word is one line.
    def fails(_: object) -> int:
        raise BridgeError("cannot fetch element 1: 500; <html>\n<title>Oops</title>\r\n</html>")

    monkeypatch.setattr(cli, "_check_config", fails)
    assert main(["check-config", "--config", "unused.toml"]) == 1
    assert (
        capsys.readouterr().err == "kordiam-bridge: cannot fetch element 1: 500; <html> <title>Oops</title> </html>\n"
    )

    def refused(_: object) -> int:
        raise ConfigError("queue.url", "the broker said:\nnot allowed")

    monkeypatch.setattr(cli, "_check_config", refused)
    assert main(["check-config", "--config", "unused.toml"]) == 2
    assert capsys.readouterr().err == "kordiam-bridge: configuration error: queue.url: the broker said: not allowed\n"


# A name with a line break and a terminal escape (it colours the rest of the terminal red).
ODD_NAME = "odd\nname\x1b[31m"


@pytest.mark.parametrize(
    ("make", "argv", "variables", "line"),
    [
        (
            None,
            ["check-config", "--config", "{dir}/{odd}.toml"],
            {},
            "--config: file '{dir}/{odd}.toml' does not exist",
        ),
        (
            None,
            ["check-config"],
            {"BRIDGE_CONFIG": "{dir}/{odd}.toml"},
            "BRIDGE_CONFIG: file '{dir}/{odd}.toml' does not exist",
        ),
        ("dir", ["check-config", "--config", "{dir}/{odd}"], {}, "--config: '{dir}/{odd}' is a directory, not a file"),
        (
            "x = [",
            ["check-config", "--config", "{dir}/{odd}"],
            {},
            "'{dir}/{odd}': not valid TOML: Invalid value (at end of document)",
        ),
        (
            "",
            ["check-config", "--config", "{dir}/{odd}"],
            {},
            "--config: '{dir}/{odd}' holds no settings (it is empty, or only comments)",
        ),
        (
            "\xff",
            ["check-config", "--config", "{dir}/{odd}"],
            {},
            "'{dir}/{odd}': not UTF-8 (byte 0); TOML files are UTF-8",
        ),
        (
            '"odd\\nname\\u001b[31m" = 1\n',
            ["check-config", "--config", "{dir}/{odd}"],
            {},
            "'{odd}': is not a known key",
        ),
        ("file", ["demo", "--workdir", "{dir}/{odd}"], {}, "--workdir: '{dir}/{odd}' is not a directory"),
    ],
)
def test_a_name_with_a_control_character_is_escaped_in_an_error_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make: str | None,
    argv: list[str],
    variables: dict[str, str],
    line: str,
) -> None:
    # Before: printed raw, the line break read as a space (the file named so cannot be found) and the escape
    # sequence reached the terminal.
    def filled(text: str) -> str:
        return text.replace("{dir}", str(tmp_path)).replace("{odd}", ODD_NAME)

    def shown(text: str) -> str:
        return text.replace("{dir}", str(tmp_path)).replace("{odd}", repr(ODD_NAME)[1:-1])

    if make == "dir":
        (tmp_path / ODD_NAME).mkdir()
    elif make == "file":
        (tmp_path / ODD_NAME).write_text("x")
    elif make is not None:
        (tmp_path / ODD_NAME).write_bytes(filled(make).encode("latin-1"))
    for name, value in variables.items():
        monkeypatch.setenv(name, filled(value))
    main([filled(token) for token in argv])
    err = capsys.readouterr().err
    assert err.startswith(f"kordiam-bridge: configuration error: {shown(line)}"), err
    assert err.count("\n") == 1 and "\x1b" not in err, err


@pytest.mark.parametrize(
    ("variable", "line"),
    [
        (f"BRIDGE_CHANNELS__WEB{ODD_NAME}__PATH", "'BRIDGE_CHANNELS__WEB{odd}__PATH': names no configured channel"),
        (
            f"BRIDGE_QUEUE__CONCURRENCY{ODD_NAME}",
            "'BRIDGE_QUEUE__CONCURRENCY{odd} (queue.concurrency{lower})': is not a known key",
        ),
    ],
)
def test_a_variable_named_with_a_control_character_is_escaped_in_an_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str, line: str
) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    monkeypatch.setenv(variable, "3")
    assert main(["dlq", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    expected = line.replace("{odd}", repr(ODD_NAME)[1:-1]).replace("{lower}", repr(ODD_NAME.lower())[1:-1])
    assert err.startswith(f"kordiam-bridge: configuration error: {expected}"), err
    assert err.count("\n") == 1 and "\x1b" not in err, err


def test_an_error_found_after_loading_names_the_variable_that_set_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Terraform module passes settings as environment variables: the file does not hold the value at fault.
    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    assert main(["parked", "list", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith("kordiam-bridge: configuration error: state.url: ")

    monkeypatch.setenv("BRIDGE_STATE__URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert main(["parked", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kordiam-bridge: configuration error: BRIDGE_STATE__URL (state.url): "), err
    assert "elsewhere.db does not exist" in err and err.count("\n") == 1


def test_a_warning_logged_while_the_config_is_read_comes_in_the_format_the_config_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    monkeypatch.setenv("BRIDGE_QUEU__URL", "http://x/q")
    monkeypatch.setenv("BRIDGE_OPS__LOG_FORMAT", "console")
    assert main(["parked", "list", "--config", str(config)]) == 2  # the state file does not exist
    warning, error = capsys.readouterr().err.splitlines()
    assert not warning.startswith("{") and "environment_variable_ignored" in warning, warning
    assert "variable=BRIDGE_QUEU__URL" in warning
    assert error.startswith("kordiam-bridge: configuration error: state.url: ")

    # check-config too, whose JSON goes to stdout: the warning on stderr was JSON whatever the config said.
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "demo-secret")
    assert main(["check-config", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    [warning] = captured.err.splitlines()
    assert not warning.startswith("{") and "environment_variable_ignored" in warning, warning
    assert json.loads(captured.out)["ops"]["log_format"] == "console"

    # A command stopped before it set its format (here by the file itself) still prints them, as JSON, first.
    config.write_text(config.read_text().replace("[queue]", "[queue]\nbogus = 1", 1))
    assert main(["parked", "list", "--config", str(config)]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert json.loads(warning)["variable"] == "BRIDGE_QUEU__URL"
    assert error.startswith("kordiam-bridge: configuration error: queue.bogus")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--config", "local.toml", "status"],
            "kordiam-bridge: --config goes after the command: kordiam-bridge COMMAND --config FILE\n",
        ),
        (
            ["--config=local.toml", "status"],
            "kordiam-bridge: --config goes after the command: kordiam-bridge COMMAND --config FILE\n",
        ),
        (
            ["dlq", "--config", "local.toml", "list"],
            "kordiam-bridge dlq: --config goes after the action: kordiam-bridge dlq ACTION --config FILE\n",
        ),
        # Before: "argument COMMAND: invalid choice: '5'", and for -v "the following arguments are required".
        (
            ["--limit", "5", "dlq", "list"],
            "kordiam-bridge: --limit goes after the command: kordiam-bridge COMMAND --limit … (see COMMAND --help)\n",
        ),
        (["-v"], "kordiam-bridge: -v goes after the command: kordiam-bridge COMMAND -v … (see COMMAND --help)\n"),
        (
            ["parked", "--limit=5", "list"],
            "kordiam-bridge parked: --limit goes after the action: kordiam-bridge parked ACTION --limit … (see ACTION "
            "--help)\n",
        ),
    ],
)
def test_config_before_the_command_says_where_it_goes(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Otherwise argparse reads the file's name as the command: "invalid choice: 'local.toml'".
    assert main(argv) == 2
    assert capsys.readouterr().err == said


def test_a_server_host_that_does_not_resolve_is_named_in_words() -> None:
    import socket as sockets

    from bridge.errors import ConfigError

    error = sockets.gaierror(-2, "Name or service not known")
    refused = ConfigError.cannot_listen(error, "no.such.host.invalid", 9090, port_key="ops.port", host_key="ops.host")
    # Not "unknown error -2": os.strerror does not know the resolver's codes.
    expected = "ops.host: cannot listen on no.such.host.invalid:9090: cannot resolve no.such.host.invalid: "
    assert str(refused) == expected + "name or service not known"


def _served(*_: object, **__: object) -> None:
    raise AssertionError("the command ran with a wrong argument")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["simulator", "--client-id", ""], "kordiam-bridge simulator: argument --client-id: must not be empty\n"),
        (
            ["simulator", "--client-secret", " "],
            "kordiam-bridge simulator: argument --client-secret: must not be empty\n",
        ),
        (["check-config", "--config", ""], "kordiam-bridge check-config: argument --config: must not be empty\n"),
        (["demo", "--workdir", " "], "kordiam-bridge demo: argument --workdir: must not be empty\n"),
        (["simulator", "--host", ""], "kordiam-bridge simulator: argument --host: must not be empty\n"),
    ],
)
def test_an_empty_argument_is_refused_naming_it(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the simulator served with an empty client secret (an empty one was accepted at the token endpoint),
    # and an empty --config read as "." ("--config: . is a directory, not a file").
    monkeypatch.setattr("bridge.simulator.run_simulator", _served)
    monkeypatch.setattr("bridge.demo.run_demo", _served)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == line


def test_the_simulator_refuses_a_region_botocore_cannot_take(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "Application startup failed" with a botocore InvalidRegionError traceback in a JSON log line.
    monkeypatch.setattr("bridge.simulator.run_simulator", _served)
    argv = ["simulator", "--port", "0", "--queue-url", "http://127.0.0.1:9/1/q", "--region", "eu central 1"]
    assert main(argv) == 2
    expected = "kordiam-bridge: configuration error: --region: must be an AWS region name like eu-central-1\n"
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize("flag", [["--limit", "5"], ["--element", "7"]])
def test_redrive_native_with_a_filter_is_refused_naming_both_before_anything_is_read(
    flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: only after the configuration was read and the queue asked, and without naming the flags.
    assert main(["dlq", "redrive", "--native", *flag, "--config", "/nonexistent.toml"]) == 2
    assert capsys.readouterr().err == (
        "kordiam-bridge dlq redrive: --native moves every dead letter (SQS's move task): give it without --limit "
        "and --element\n"
    )


def test_the_simulator_refuses_a_host_no_resolver_takes(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: idna's UnicodeError out of the bind, a 28-line traceback and exit 1.
    assert main(["simulator", "--host", "kordiam..local", "--port", "0"]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: --host: {HOST_NAME_PROBLEM}\n"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--sqs-endpoint-url", "http://127.0.0.1:5000"], "--sqs-endpoint-url: needs --queue-url"),
        (
            ["--stomp-url", "stomp://127.0.0.1:61613/queue/k", "--sqs-endpoint-url", "http://127.0.0.1:5000"],
            "--sqs-endpoint-url: needs --queue-url",
        ),
        (["--platform-api-user", "api_1"], "--platform-api-user: needs --platform-url"),
        (["--platform-api-secret", "s"], "--platform-api-secret: needs --platform-url"),
    ],
)
def test_a_simulator_flag_that_would_do_nothing_is_refused(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As --global-export-auth without --global-export-url: the flag given was silently unused (no queue to send
    # to through that endpoint, no Platform integration to log in to).
    monkeypatch.setattr("bridge.simulator.run_simulator", _served)
    assert main(["simulator", "--port", "0", *argv]) == 2
    assert capsys.readouterr().err == f"kordiam-bridge: configuration error: {line}\n"


def test_the_simulator_says_where_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    # `--port 0` is "any free port" (its --help): with the socket bound by the simulator itself, uvicorn logs no
    # address, so nothing said which port that was.
    import uvicorn
    from structlog.testing import capture_logs

    from bridge.simulator import SimulatorSettings, run_simulator

    served: list[int] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets[0].getsockname()[1]))
    with capture_logs() as lines:
        run_simulator(SimulatorSettings(), "127.0.0.1", 0)
    (port,) = served
    assert port != 0
    assert {"event": "simulator_listening", "url": f"http://127.0.0.1:{port}", "log_level": "info"} in lines


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "redrive", "--native", "--limit", "5", "--config", "/nonexistent.toml"],
        ["check-config", "--config", "/nonexistent.toml"],
        ["--config", "x.toml", "status"],
    ],
)
def test_a_closed_stderr_keeps_the_error_out_of_stdout(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `status --json 2>&- | jq`: print(file=None) writes to stdout, so the error line went to the JSON reader.
    monkeypatch.setattr(sys, "stderr", None)
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


def test_ctrl_c_twice_with_stderr_closed_still_exits_130() -> None:
    # `kordiam-bridge dlq redrive 2>&-`: the first Ctrl-C's line and the second's had no stderr to go to. Before:
    # the second Ctrl-C's handler raised AttributeError (sys.stderr is None) instead of exiting at once.
    script = (
        "import asyncio, os, sys\n"
        "os.close(2)\n"
        "sys.stderr = None  # as Python starts with fd 2 closed\n"
        "from bridge import cli\n"
        "async def command(stop):\n"
        "    print('ready', flush=True)\n"
        "    await stop.wait()\n"
        "    print('stopping', flush=True)\n"
        "    await asyncio.Event().wait()  # a clean-up that hangs\n"
        "cli.run_command(command, stops_on_interrupt=True)\n"
    )
    command = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert command.stdout is not None
    try:
        assert command.stdout.readline() == b"ready\n"
        command.send_signal(signal.SIGINT)
        assert command.stdout.readline() == b"stopping\n"
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=60) == 130
    finally:
        command.kill()


def test_status_help_says_the_sample_size_also_bounds_the_dead_letter_peek(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: "messages to peek at with --sample", though the DLQ is peeked at with it on every run, --sample or not.
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--sample-size SAMPLE_SIZE messages to peek at in the dead-letter queue, and with --sample in the queue" in (
        help_text
    )


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["check-config", "--config", "/nonexistent.toml"], 2),
        (["dlq", "redrive", "--native", "--limit", "5"], 2),
        (["element", "5", "--scan-limit", "3"], 2),
    ],
)
def test_an_error_line_stderr_cannot_take_leaves_the_exit_code_as_it_is(argv: list[str], code: int) -> None:
    # stderr a pipe whose reader went away (`2>&1 | head -0`, a log shipper that died) or a full disk. Before: the
    # line's BrokenPipeError escaped main from its own except clause, exit 1, or 141: not the command's code.
    for stderr in ("pipe", "/dev/full"):
        if stderr == "pipe":
            reader, writer = os.pipe()
            os.close(reader)
        else:
            writer = os.open(stderr, os.O_WRONLY)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bridge", *argv], check=False, stderr=writer, stdout=subprocess.PIPE
            )
        finally:
            os.close(writer)
        assert (done.returncode, done.stdout) == (code, b""), stderr


def test_a_reader_that_goes_away_from_the_demo_ends_it_with_141() -> None:
    # `kordiam-bridge demo | head -3`: the demo prints through rich, whose own answer is SystemExit(1), "not every
    # story landed". The demo now prints through the commands' console.
    script = (
        "import sys\n"
        "from bridge import cli, demo\n"
        "def flood(workdir, *, webhooks, console):\n"
        "    for _ in range(200_000):\n"
        "        console.print('x' * 60)\n"
        "    return 0\n"
        "demo.run_demo = flood\n"
        "sys.exit(cli.main(['demo']))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.readline()
    writer.stdout.close()
    assert writer.wait(timeout=60) == 141
    assert writer.stderr.read() == b""


def test_a_progress_bar_stderr_cannot_take_leaves_the_output_and_the_exit_code_alone() -> None:
    # `dlq redrive --progress --json > result.json 2>&1 | …` with the reader of stderr gone. Before: rich's answer
    # to the broken pipe pointed stdout (not stderr) at /dev/null and raised SystemExit(1): the JSON result lost.
    script = (
        "import argparse, sys\n"
        "from bridge import cli\n"
        "def redrive(args):\n"
        "    shown = argparse.Namespace(progress=True, json=True)\n"
        "    with cli._progress(shown) as progress:\n"
        "        progress.start('redriving', 3)\n"
        "        progress.advance(3)\n"
        "    with cli._writing_output():\n"
        "        print('{\"redriven\": 3}')\n"
        "    return 0\n"
        "cli._check_config = redrive\n"
        "sys.exit(cli.main(['check-config', '--config', 'unused.toml']))\n"
    )
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run([sys.executable, "-c", script], check=False, stderr=writer, stdout=subprocess.PIPE)
    finally:
        os.close(writer)
    assert (done.returncode, done.stdout) == (0, b'{"redriven": 3}\n')


def test_dlq_list_and_show_draw_a_progress_bar_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `dlq list --limit 5000` and `dlq show ID --scan-limit 5000` make 500 receives (minutes on a slow endpoint):
    # they took no --progress, and showed nothing until done, as `dlq delete` and `redrive` do not.
    from bridge.admin import dlq as dlq_module
    from bridge.admin.progress import RichProgress
    from bridge.admin.results import DlqListing

    config = write_config(
        tmp_path / "bridge.toml",
        queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    given: list[object] = []

    async def dlq_list(_: object, *, limit: int, progress: object = None) -> DlqListing:
        given.append(progress)
        return DlqListing("https://sqs.test/dlq", [], 0, 0, truncated=False)

    async def dlq_show(_: object, message_id: str, *, scan_limit: int, progress: object = None) -> None:
        given.append(progress)

    monkeypatch.setattr(dlq_module, "dlq_list", dlq_list)
    monkeypatch.setattr(dlq_module, "dlq_show", dlq_show)
    assert main(["dlq", "list", "--progress", "--json", "--config", str(config)]) == 0
    assert main(["dlq", "show", "m-1", "--progress", "--config", str(config)]) == 1  # not found
    assert [type(progress) for progress in given] == [RichProgress, RichProgress]


def test_run_on_a_state_file_another_program_holds_locked_is_one_line_not_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "kordiam-bridge: configuration error: state.url: cannot open SQLite database …: database is locked",
    # exit 2: the code that says "fix a setting", for a fault that passes once the other program lets go.
    import asyncio
    import sqlite3

    from bridge.state import SqliteStateStore

    monkeypatch.setattr("bridge.state.sqlite.BUSY_TIMEOUT_MS", 50)
    monkeypatch.setenv("BRIDGE_KORDIAM__CLIENT_SECRET", "demo-secret")
    path = tmp_path / "state.db"

    async def initialise() -> None:
        store = SqliteStateStore(path)
        await store.open()
        await store.close()

    asyncio.run(initialise())
    # Neither is reached: the state store is the first thing the start opens.
    config = write_config(
        tmp_path / "bridge.toml",
        queue="http://127.0.0.1:9/000000000000/never-reached",
        endpoint="http://127.0.0.1:9",
        kordiam="http://127.0.0.1:9",
        workdir=tmp_path,
        ops_port=0,
    )
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            code = main(["run", "--config", str(config)])
        finally:
            other.execute("ROLLBACK")
    assert code == cli.EXIT_UNAVAILABLE == 75
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]  # JSON logs aside
    assert lines == [
        f"kordiam-bridge: cannot start now (a fault that may pass, not the configuration): SQLite {path} is locked "
        "by another program (a sqlite3 shell left in a transaction, a backup) for longer than the busy timeout: "
        "database is locked"
    ]


SERVING_SCRIPT = (
    "import asyncio, signal, sys\n"
    "from bridge import cli\n"
    "if sys.argv[1] == 'nohup':\n"
    "    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it\n"
    "async def serve(stop):\n"
    "    print('serving', flush=True)\n"
    "    await stop.wait()\n"
    "    print('drained', flush=True)\n"
    "sys.exit(cli.serve_until_signalled(serve))\n"
)


def test_sighup_drains_the_worker_as_sigterm_does() -> None:
    # A closed terminal or a `kill -HUP` meant as a reload: before, SIGHUP's default action killed the worker on the
    # spot, without the drain (its messages held until their visibility timeout ended) and without a line.
    command = subprocess.Popen([sys.executable, "-c", SERVING_SCRIPT, "plain"], stdout=subprocess.PIPE)
    assert command.stdout is not None
    try:
        assert command.stdout.readline() == b"serving\n"
        command.send_signal(signal.SIGHUP)
        assert command.wait(timeout=60) == 0
        said = command.stdout.read()  # structlog's default output is stdout here
        assert b"shutdown_requested" in said and b"signal=SIGHUP" in said and said.endswith(b"drained\n")
    finally:
        command.kill()


def test_sighup_ignored_by_whoever_started_the_worker_stays_ignored() -> None:
    # `nohup kordiam-bridge run &`: the terminal's hangup is not meant for the worker.
    command = subprocess.Popen([sys.executable, "-c", SERVING_SCRIPT, "nohup"], stdout=subprocess.PIPE)
    assert command.stdout is not None
    try:
        assert command.stdout.readline() == b"serving\n"
        command.send_signal(signal.SIGHUP)
        command.send_signal(signal.SIGTERM)  # the first stop it takes: SIGHUP changed nothing
        assert command.wait(timeout=60) == 0
        said = command.stdout.read()  # structlog's default output is stdout here
        assert b"signal=SIGTERM" in said and b"SIGHUP" not in said and said.endswith(b"drained\n")
    finally:
        command.kill()


class _RefusingSqs(http.server.BaseHTTPRequestHandler):
    """An SQS endpoint that refuses every call, its error code holding terminal escapes and rich markup."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"__type": f"com.amazonaws.sqs#{HOSTILE}", "message": "refused"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


# What a hostile or broken peer may answer: a screen clear, a window title, a bell, an 8-bit CSI, rich markup.
HOSTILE = "denied\x1b[2J\x1b]0;owned\x07 [bold]x[/bold]\x9b31m"
HOSTILE_SHOWN = "denied\\x1b[2J\\x1b]0;owned\\x07 [bold]x[/bold]\\x9b31m"


def test_an_error_line_shows_the_control_characters_a_server_answered_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, the escape sequences reached the operator's terminal raw: the screen cleared, the window renamed.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingSqs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = write_config(
            tmp_path / "bridge.toml",
            queue="https://sqs.eu-central-1.amazonaws.com/123456789012/bridge",
            endpoint=f"http://127.0.0.1:{server.server_address[1]}",
            kordiam="http://127.0.0.1:9",
            workdir=tmp_path,
            ops_port=0,
        )
        code = main(["dlq", "list", "--config", str(config)])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert code in (1, 2) and err.count("\n") == 1
    assert HOSTILE_SHOWN in err and not any(c in err for c in "\x1b\x07\x9b")
