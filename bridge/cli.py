"""``kordiam-bridge``: the worker, the Kordiam API simulator and the embedded demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from rich.console import Console

from bridge import __version__
from bridge.errors import BridgeError, ConfigError, TransientError, shown
from bridge.signals import two_steps
from bridge.terminal import visible

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from bridge.admin.progress import ProgressSink
    from bridge.config import OpsSettings, QueueCommandSettings, StatusSettings

EXIT_CONFIG = 2
# sysexits.h's EX_TEMPFAIL: a long-lived command (the worker, the ingress) could not start for a fault that may pass
# (the state file locked by another program, DynamoDB or SQS answering 5xx or throttling): start it again later.
EXIT_UNAVAILABLE = 75
EXIT_INTERRUPTED = 130
# 128 + SIGPIPE, what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE = 141
T = TypeVar("T")
# Kordiam element ids are positive 64-bit integers (the state stores keep them as SQLite INTEGER / DynamoDB N):
# bridge.kordiam.models.MAX_ID, written out so that a wrong argument is refused before pydantic is imported.
MAX_ELEMENT_ID = 2**63 - 1


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none worth showing (None, False, empty: the option is simply off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "", []) or action.help is None or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one line on a bad argument (no usage block), exit 2, and every option's default in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message}\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # --help and --version are output like any command's: one that cannot be written (a full disk, a closed
        # stdout) is an error line and exit 1, where argparse drops the OSError and exits 0 having printed nothing.
        # Its own lines on stderr (usage, errors) it still writes as it does.
        if file is not sys.stdout or not message:
            super()._print_message(message, file)
            return
        with _writing_output():
            print(message, end="")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        # A command's own parser says what it does not know, named by its prog (`kordiam-bridge dlq list: …`);
        # argparse would leave it to the top parser, as "kordiam-bridge: unrecognized arguments".
        if unknown and self._subparsers is None:
            self.error(f"unrecognized arguments: {' '.join(map(shown, unknown))}")
        return parsed, unknown


def _bounded_int(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        # Digits only: Python's int() also reads "1_000" and "+5", which no id or count is written as.
        if not re.fullmatch(r"-?[0-9]+", text.strip()):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not {what} ({low}..{high})")
        return value

    return parse


def _not_empty(text: str) -> str:
    # An empty value is never meant: a path would read as "." (the working directory), a secret as no secret.
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _path(text: str) -> Path:
    return Path(_not_empty(text))


def _message_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a message id cannot be empty")
    # SQS's are UUIDs, ActiveMQ's ID:host-…: one inside a line break would break the "not found" line in two.
    if any(character.isspace() or not character.isprintable() for character in text.strip()):
        raise argparse.ArgumentTypeError("a message id has no spaces or control characters")
    return text.strip()


_element_id = _bounded_int(1, MAX_ELEMENT_ID, "an element id")
_count = _bounded_int(1, 1_000_000, "a count")
_port = _bounded_int(0, 65535, "a TCP port")


def main(argv: Sequence[str] | None = None) -> int:
    if (misplaced := _option_too_early(list(sys.argv[1:] if argv is None else argv))) is not None:
        _say(misplaced)
        return EXIT_CONFIG
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except (OutputUnwritable, BrokenPipeError) as error:  # --help or --version
        return _output_failed(error)
    from bridge.ops.logging import configure_logging, release_held_logs

    # Logs go to stderr (JSON); stdout is for a command's own output (tables, --json). Lines logged while a
    # command's configuration is read wait for the format it sets (ops.log_format); a command without one (the
    # simulator, the demo) has none to wait for.
    configure_logging("info", hold=hasattr(args, "config"))
    try:
        try:
            result: int = args.command(args)
        finally:
            release_held_logs()  # before an error's line, which they may explain
    except ConfigError as error:
        from bridge.config import naming_its_variable

        _say(f"kordiam-bridge: configuration error: {naming_its_variable(error)}")
        return EXIT_CONFIG
    except (OutputUnwritable, BrokenPipeError) as error:
        return _output_failed(error)
    except BridgeError as error:  # operator commands: a clear message, no traceback
        _say(f"kordiam-bridge: {error}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("kordiam-bridge: interrupted")
        return EXIT_INTERRUPTED
    return result


def _output_failed(error: OutputUnwritable | BrokenPipeError) -> int:
    """The exit code of a command whose output could not be written. What stdout still buffers would fail again at
    Python's own flush at exit, so it goes to /dev/null first."""
    _discard(sys.stdout)
    if isinstance(error, BrokenPipeError):
        # The reader of stdout went away (`dlq list --json | head`): nothing more to say to it.
        return EXIT_BROKEN_PIPE
    _say(f"kordiam-bridge: {error}")
    return 1


def _say(line: str) -> None:
    """A line for the operator on stderr; none when stderr is closed (`2>&-`): print's None is stdout, where the
    line would reach what reads the output (`status --json 2>&- | jq`). A stderr that cannot take it (a pipe whose
    reader went away, a full disk) leaves the exit code to say what happened.

    What the line quotes from outside (a server's HTML page, a broker's ERROR frame) may hold line breaks, folded
    here, and other control characters, written out (``bridge.terminal``)."""
    if sys.stderr is None:
        return
    try:
        print(visible(" ".join(line.split())), file=sys.stderr, flush=True)
    except OSError:
        _discard(sys.stderr)


class OutputUnwritable(BridgeError):
    """stdout took not all of a command's output (a full disk, `>&-`): the one line says so, not a traceback."""


@contextlib.contextmanager
def _writing_output() -> Iterator[None]:
    """Where a command writes its output (and flushes it, so that a write that fails fails here, not at exit)."""
    if sys.stdout is None:  # closed (`>&-`): print() would drop the output silently
        raise OutputUnwritable("cannot write the output: stdout is closed")
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputUnwritable(f"cannot write the output: {error.strerror or error}") from None


class _OutputConsole(Console):
    """A command's output through rich (tables, the demo's report). rich's own answer to a reader that went away is
    SystemExit(1), which would read as "done with failures": the BrokenPipeError goes to ``main`` instead, whose
    answer is 141 as for ``--json``."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _discard(stream: TextIO | None) -> None:
    """Point ``stream``'s file at /dev/null: what it still buffers would fail again at Python's own flush at exit
    (and make the exit code 120)."""
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError):  # not a real file (a test's) or none at all
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())


def _option_too_early(tokens: list[str]) -> str | None:
    """An option before the command (or the action of ``dlq``/``parked``): ``--config`` would read as an unknown
    command named after the file; say where it goes instead."""

    def is_config(token: str) -> bool:
        return token == "--config" or token.startswith("--config=")

    if tokens and is_config(tokens[0]):
        return "kordiam-bridge: --config goes after the command: kordiam-bridge COMMAND --config FILE"
    if len(tokens) > 1 and tokens[0] in ("dlq", "parked") and is_config(tokens[1]):
        group = tokens[0]
        return f"kordiam-bridge {group}: --config goes after the action: kordiam-bridge {group} ACTION --config FILE"
    # Any other option there would read as the command ("invalid choice: '5'" for `--limit 5 dlq list`), or make
    # argparse say only that the command is missing (`-v`).
    if tokens and _misplaced_option(tokens[0], ("--help", "--version")):
        option = tokens[0].partition("=")[0]
        return (
            f"kordiam-bridge: {option} goes after the command: kordiam-bridge COMMAND {option} … (see COMMAND --help)"
        )
    if len(tokens) > 1 and tokens[0] in ("dlq", "parked") and _misplaced_option(tokens[1], ("--help",)):
        group, option = tokens[0], tokens[1].partition("=")[0]
        return (
            f"kordiam-bridge {group}: {option} goes after the action: kordiam-bridge {group} ACTION {option} … "
            "(see ACTION --help)"
        )
    return None


def _misplaced_option(token: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``token`` is an option other than ``-h`` and ``allowed`` (or argparse's abbreviations of them)."""
    if not token.startswith("-") or token in ("-", "--", "-h"):
        return False
    name = token.partition("=")[0]
    return not (name.startswith("--") and any(option.startswith(name) for option in allowed))


def serve_until_signalled(serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """Run a long-lived command (the worker, the ingress) until SIGTERM, SIGINT or SIGHUP sets the event ``serve``
    is given; it then drains and returns. The exit code: 0, or ``EXIT_UNAVAILABLE`` with one line when the start
    met a fault that may pass (a ``TransientError``), which an orchestrator's restart with back-off waits out."""
    from bridge.worker import stop_on_signals

    async def main() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            await serve(stop)

    try:
        asyncio.run(main())
    except TransientError as error:
        _say(f"kordiam-bridge: cannot start now (a fault that may pass, not the configuration): {error}")
        return EXIT_UNAVAILABLE
    return 0


def run_command(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]], *, stops_on_interrupt: bool = False) -> T:
    """Run a command's coroutine with Ctrl-C handled in two steps; SIGTERM (``timeout``, ``docker stop``, a
    Kubernetes job deleted) as the first Ctrl-C, or it would kill the command between a copy and its delete, with
    no summary.

    The first Ctrl-C (or SIGTERM) sets the event ``main`` is given: a command that watches it
    (``stops_on_interrupt``) stops at its next safe point and returns what it did (redrive prints its partial
    summary); any other is cancelled, and its clean-up still runs. A second Ctrl-C exits at once with 130, the way
    out of a clean-up that hangs.
    """

    async def runner() -> T:
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None

        def interrupted() -> None:
            stop.set()
            if stops_on_interrupt:
                # Said at once: the next safe point may be a while away (a connection still being made).
                if sys.stderr is not None:
                    sys.stderr.write("kordiam-bridge: stopping at the next safe point (Ctrl-C again to exit at once)\n")
                    sys.stderr.flush()
            else:
                task.cancel()

        # Python's own handler, not the loop's: a loop stuck in a write (stderr or stdout a full pipe) cannot hold
        # up the second Ctrl-C (``bridge.signals.two_steps``).
        with two_steps((signal.SIGINT, signal.SIGTERM), lambda _: interrupted(), FORCE_EXIT_LINE):
            return await main(stop)

    return asyncio.run(runner())


# The second Ctrl-C's line: exit 130 now, without clean-up (held messages come back when their hold ends).
FORCE_EXIT_LINE = "kordiam-bridge: interrupted again, exiting now without cleaning up"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kordiam-bridge",
        description="Consume Kordiam change notifications from a queue (AWS SQS, Kordiam's ActiveMQ, or webhooks "
        "through the ingress) and keep publishing channels in sync.",
    )
    parser.add_argument("--version", action="version", version=f"kordiam-bridge {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="run the worker")
    _config_option(run)
    run.set_defaults(command=_run)

    check = commands.add_parser("check-config", help="validate the configuration and print it without secrets")
    _config_option(check)
    check.set_defaults(command=_check_config)

    simulator = commands.add_parser("simulator", help="serve the Kordiam API v2 simulator")
    simulator.add_argument("--host", type=_not_empty, default="127.0.0.1", help="address to listen on")
    simulator.add_argument("--port", type=_port, default=8700, help="port to listen on (0: any free port)")
    simulator.add_argument("--queue-url", help="SQS queue that receives change notifications")
    simulator.add_argument("--sqs-endpoint-url", help="SQS endpoint (LocalStack, moto server)")
    simulator.add_argument(
        "--stomp-url", help="ActiveMQ queue that receives change notifications instead: stomp://HOST:PORT/queue/NAME"
    )
    simulator.add_argument("--region", default="eu-central-1", help="AWS region of the SQS queue")
    simulator.add_argument(
        "--client-id", type=_not_empty, default="demo-client", help="OAuth client id the simulator accepts"
    )
    simulator.add_argument(
        "--client-secret", type=_not_empty, default="demo-secret", help="OAuth client secret it accepts"
    )
    simulator.add_argument("--token-ttl", type=_count, default=3600, help="access token lifetime in seconds")
    simulator.add_argument("--global-export-url", help="call Kordiam's Global Export webhooks here (seed 001)")
    simulator.add_argument(
        "--global-export-auth",
        action="append",
        default=[],
        metavar="SPEC",
        help="bearer:TOKEN, jwt:SECRET, api_key:KEY:SECRET or header:NAME=VALUE (repeat for more headers)",
    )
    simulator.add_argument("--platform-url", help="call the Platform integration webhooks here (seed 002)")
    simulator.add_argument("--platform-api-user", default="", help="the Platform integration's API user")
    simulator.add_argument(
        "--platform-api-secret", default="", help="its API secret (default: $KORDIAM_PLATFORM_API_SECRET)"
    )
    simulator.set_defaults(command=_simulator)

    replay = commands.add_parser(
        "replay",
        help="enqueue fresh notifications for elements (re-sync them)",
        description="The worker fetches each element again and writes every channel whose content changed since it "
        "last wrote it; a channel that already holds this version is left alone (outcome 'unchanged'). --force "
        "rewrites every channel of the element, to repair one that lost the item.",
    )
    _config_option(replay)
    replay.add_argument(
        "element_ids",
        metavar="ELEMENT_ID",
        type=_element_id,
        nargs="+",
        help=f"Kordiam element id (1..{MAX_ELEMENT_ID})",
    )
    replay.add_argument(
        "--force", action="store_true", help="rewrite every channel of the elements, even where nothing changed"
    )
    _output_options(replay, progress=True)
    replay.set_defaults(command=_replay)

    dlq = commands.add_parser("dlq", help="inspect, redrive and delete dead letters")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION", parser_class=_Parser)
    dlq_list = dlq_commands.add_parser("list", help="show dead letters with their failure context")
    _config_option(dlq_list)
    dlq_list.add_argument("--limit", type=_count, default=50, help="show at most N dead letters")
    _output_options(dlq_list, progress=True)
    dlq_list.set_defaults(command=_dlq_list)
    dlq_show = dlq_commands.add_parser("show", help="one dead letter, whole")
    _config_option(dlq_show)
    dlq_show.add_argument("message_id", metavar="MESSAGE_ID", type=_message_id)
    dlq_show.add_argument("--scan-limit", type=_count, default=1000, help="look at most at N dead letters")
    _output_options(dlq_show, progress=True)
    dlq_show.set_defaults(command=_dlq_show)
    redrive = dlq_commands.add_parser("redrive", help="move dead letters back to the queue, never losing one")
    _config_option(redrive)
    redrive.add_argument("--limit", type=_count, help="move at most N messages")
    redrive.add_argument(
        "--element", type=_element_id, action="append", dest="elements", metavar="ID", help="only this element (repeat)"
    )
    redrive.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use SQS StartMessageMoveTask (default: when the endpoint supports it and no filter is given)",
    )
    _output_options(redrive, progress=True)
    redrive.set_defaults(command=_dlq_redrive)
    delete = dlq_commands.add_parser(
        "delete",
        help="delete dead letters that should never be retried (without --yes: only say which)",
        description="Deletes exactly the dead letters named, nothing else: each MESSAGE_ID as `dlq show` takes it "
        "(its id in `dlq list`, or the message_id of its `dead_lettered` line). Without --yes it prints what it would "
        "delete (id, element, stage, reason) and deletes nothing. Each deletion is logged (dead_letter_deleted). "
        "Exit code: 0 done, 1 an id not found or not deleted (one line each; the others are still handled), 2 a "
        "configuration or argument error.",
    )
    _config_option(delete)
    delete.add_argument("message_ids", metavar="MESSAGE_ID", type=_message_id, nargs="+")
    delete.add_argument("--yes", action="store_true", help="delete them (without it: only say what would be deleted)")
    delete.add_argument("--scan-limit", type=_count, default=1000, help="look at most at N dead letters")
    _output_options(delete, progress=True)
    delete.set_defaults(command=_dlq_delete)

    parked = commands.add_parser(
        "parked",
        help="elements parked for a channel that refused the bridge's credentials or was down; requeue them by hand",
    )
    parked_commands = parked.add_subparsers(required=True, metavar="ACTION", parser_class=_Parser)
    parked_list = parked_commands.add_parser(
        "list",
        help="show the parked elements (reads the state store, changes nothing)",
        description="The configured channels in configuration order, then any channel no longer configured that "
        "still holds parked elements; each channel's elements by element id. Ends with how many are parked, per "
        "channel.",
    )
    _config_option(parked_list)
    parked_list.add_argument("--channel", metavar="NAME", help="only this channel")
    parked_list.add_argument("--limit", type=_count, default=50, help="show at most N parked elements")
    _output_options(parked_list)
    parked_list.set_defaults(command=_parked_list)
    parked_requeue = parked_commands.add_parser(
        "requeue",
        help="put parked elements back on the queue now, and unpark each once the queue holds it",
        description="One fresh notification per element (source parked-requeue), as the worker sends once the channel "
        "accepts a call again; use it after fixing the secret, rather than wait for the worker's next trial. "
        "If the channel still refuses or is still down, the worker simply parks the element again. Say which: "
        "--channel, --element or --all.",
    )
    _config_option(parked_requeue)
    parked_requeue.add_argument("--channel", metavar="NAME", help="the parked elements of this channel")
    parked_requeue.add_argument(
        "--element",
        type=_element_id,
        action="append",
        dest="elements",
        metavar="ID",
        help="only this element (repeat; with --channel, only for that channel)",
    )
    parked_requeue.add_argument("--all", action="store_true", help="every parked element of every channel")
    _output_options(parked_requeue, progress=True)
    parked_requeue.set_defaults(command=_parked_requeue)

    status = commands.add_parser(
        "status",
        help="queue depth, oldest message, DLQ depth, per-channel health",
        description="Exit code: 0 no problem found, 1 problems found (listed at the end, and as `problems` with "
        "--json), 2 a configuration or argument error.",
    )
    _config_option(status)
    status.add_argument(
        "--sample",
        action="store_true",
        help="also peek at the main queue for the oldest message (on SQS each peek counts as a receive towards the "
        "queue's maxReceiveCount)",
    )
    status.add_argument(
        "--sample-size",
        type=_count,
        default=10,
        help="messages to peek at in the dead-letter queue, and with --sample in the queue, for the oldest one's age",
    )
    _output_options(status)
    status.set_defaults(command=_status)

    element = commands.add_parser(
        "element",
        help="what the bridge did with one element: state store, parked, lease; --dlq, --kordiam (changes nothing)",
        description="Its mark (the last version synced), each channel's delivery, the channels it is parked for and "
        "its lease, from the state store; whether the worker at [ops] takes messages (paused, nothing is delivered) "
        "and which channels fail now; --dlq adds its dead letters, --kordiam fetches it from Kordiam and says per "
        "channel and publication whether the channel is in line with it. Exit code: 0 no problem found, 1 a problem "
        "found (parked, dead-lettered, out of line with Kordiam, the worker paused, a channel it goes to failing now, "
        "which without --kordiam is known only of a channel holding its delivery or parked work; listed at "
        "the end, and as `problems` with --json), "
        "2 a configuration or argument error. An element the store never saw is no error.",
    )
    _config_option(element)
    element.add_argument(
        "element_id", metavar="ELEMENT_ID", type=_element_id, help=f"Kordiam element id (1..{MAX_ELEMENT_ID})"
    )
    element.add_argument(
        "--dlq", action="store_true", help="also look for its dead letters (on SQS each look counts as a receive)"
    )
    element.add_argument("--scan-limit", type=_count, help="with --dlq: look at most at N dead letters (default: 1000)")
    element.add_argument(
        "--kordiam", action="store_true", help="also fetch it from Kordiam (one GET) and compare each channel with it"
    )
    _output_options(element)
    element.set_defaults(command=_element)

    ingress = commands.add_parser("ingress", help="receive Kordiam's webhooks and enqueue them for the worker")
    _config_option(ingress)
    ingress.set_defaults(command=_ingress)

    demo = commands.add_parser("demo", help="run the whole bridge on embedded defaults and show what landed where")
    demo.add_argument("--workdir", type=_path, default=Path("demo-output"), help="where the demo writes its output")
    demo.add_argument(
        "--webhooks", action="store_true", help="Kordiam sends Global Export webhooks to the ingress instead of SQS"
    )
    demo.set_defaults(command=_demo)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=_path, help="TOML configuration file (default: $BRIDGE_CONFIG)")


def _output_options(parser: argparse.ArgumentParser, *, progress: bool = False) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if progress:
        parser.add_argument(
            "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a TTY)"
        )


def _show(args: argparse.Namespace, result: object, render: Callable[[Any, Console], None]) -> None:
    from bridge.admin.results import to_json

    with _writing_output():
        if args.json:
            print(to_json(result))
        else:
            render(result, _OutputConsole())


def _log_format(ops: OpsSettings) -> None:
    from bridge.ops.logging import configure_logging

    configure_logging("info", log_format=ops.log_format)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, console: Console | None = None) -> Iterator[ProgressSink]:
    """The progress bar ``--progress`` asks for; while it is drawn, log lines are printed above it."""
    from bridge.admin.progress import RichProgress, StderrConsole, progress_bar
    from bridge.ops.logging import logs_through

    console = console or StderrConsole()
    with progress_bar(args.progress, console) as progress:
        if not isinstance(progress, RichProgress):
            yield progress
            return
        with logs_through(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)):
            yield progress


def _queue_command_settings(args: argparse.Namespace) -> QueueCommandSettings:
    from bridge.channels import channel_options_model
    from bridge.config import QueueCommandSettings, load_settings

    # Only [queue] and [ops] are validated; every other section's secrets are remembered, to leave them out of a
    # dead letter's reason.
    return load_settings(args.config, model=QueueCommandSettings, channel_options_model=channel_options_model)


def _replay(args: argparse.Namespace) -> int:
    from bridge.admin.rendering import render_replay
    from bridge.admin.replay import replay
    from bridge.admin.results import INTERRUPTED

    settings = _queue_command_settings(args)
    _log_format(settings.ops)
    with _progress(args) as progress:
        result = run_command(
            lambda stop: replay(settings.queue, args.element_ids, force=args.force, progress=progress, stop=stop),
            stops_on_interrupt=True,
        )
    _show(args, result, render_replay)
    if any(element.error == INTERRUPTED for element in result.elements):
        return EXIT_INTERRUPTED
    return 1 if result.failed else 0


def _dlq_list(args: argparse.Namespace) -> int:
    from bridge.admin.dlq import dlq_list
    from bridge.admin.rendering import render_dlq_list

    settings = _queue_command_settings(args)
    _log_format(settings.ops)
    with _progress(args) as progress:
        listing = run_command(lambda _: dlq_list(settings.queue, limit=args.limit, progress=progress))
    _show(args, listing, render_dlq_list)
    return 0


def _dlq_show(args: argparse.Namespace) -> int:
    from bridge.admin.dlq import dlq_show
    from bridge.admin.rendering import render_dlq_message

    settings = _queue_command_settings(args)
    _log_format(settings.ops)
    with _progress(args) as progress:
        found = run_command(
            lambda _: dlq_show(settings.queue, args.message_id, scan_limit=args.scan_limit, progress=progress)
        )
    if found is None:
        _say(f"kordiam-bridge: no dead letter {args.message_id} found")
        return 1
    _show(args, found, render_dlq_message)
    return 0


def _dlq_redrive(args: argparse.Namespace) -> int:
    from bridge.admin.redrive import dlq_redrive
    from bridge.admin.rendering import render_redrive

    if args.native and (args.limit is not None or args.elements):
        _say(
            "kordiam-bridge dlq redrive: --native moves every dead letter (SQS's move task): give it without --limit "
            "and --element"
        )
        return EXIT_CONFIG
    settings = _queue_command_settings(args)
    _log_format(settings.ops)
    try:
        with _progress(args) as progress:
            result = run_command(
                lambda stop: dlq_redrive(
                    settings.queue,
                    limit=args.limit,
                    element_ids=args.elements,
                    native=args.native,
                    progress=progress,
                    stop=stop,
                ),
                stops_on_interrupt=True,
            )
    except ValueError as error:  # --native on a queue without a move task (ActiveMQ)
        _say(f"kordiam-bridge: {error}")
        return EXIT_CONFIG
    _show(args, result, render_redrive)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 0 if result.ok else 1


def _dlq_delete(args: argparse.Namespace) -> int:
    from bridge.admin.dlq_delete import dlq_delete
    from bridge.admin.rendering import render_dlq_delete

    settings = _queue_command_settings(args)
    _log_format(settings.ops)
    with _progress(args) as progress:
        result = run_command(
            lambda _: dlq_delete(
                settings.queue, args.message_ids, delete=args.yes, scan_limit=args.scan_limit, progress=progress
            )
        )
    _show(args, result, render_dlq_delete)
    for deletion in result.deletions:
        if deletion.error is not None:
            _say(f"kordiam-bridge: {deletion.error}")
    return 1 if result.failed else 0


def _status_settings(args: argparse.Namespace) -> StatusSettings:
    from bridge.channels import channel_options_model, channel_problems
    from bridge.config import StatusSettings, load_settings

    return load_settings(
        args.config,
        model=StatusSettings,
        # these commands never call a channel: the table's shape is checked, its secrets are not needed.
        check_channel=lambda channel, index: channel_problems(channel, index, secrets=False),
        channel_options_model=channel_options_model,
    )


def _parked_list(args: argparse.Namespace) -> int:
    from bridge.admin.parked import parked_list
    from bridge.admin.rendering import render_parked_list

    settings = _status_settings(args)
    _log_format(settings.ops)
    _show(
        args, run_command(lambda _: parked_list(settings, channel=args.channel, limit=args.limit)), render_parked_list
    )
    return 0


def _parked_requeue(args: argparse.Namespace) -> int:
    from bridge.admin.parked import parked_requeue, requeue_selection
    from bridge.admin.rendering import render_parked_requeue
    from bridge.admin.results import INTERRUPTED

    try:
        requeue_selection(args.channel, args.elements, args.all)
    except ValueError as error:
        _say(f"kordiam-bridge parked requeue: {error}")
        return EXIT_CONFIG
    settings = _status_settings(args)
    _log_format(settings.ops)
    with _progress(args) as progress:
        result = run_command(
            lambda stop: parked_requeue(
                settings, channel=args.channel, element_ids=args.elements, progress=progress, stop=stop
            ),
            stops_on_interrupt=True,
        )
    _show(args, result, render_parked_requeue)
    if any(element.error == INTERRUPTED for element in result.elements):
        return EXIT_INTERRUPTED
    return 1 if result.failed else 0


def _status(args: argparse.Namespace) -> int:
    from bridge.admin.status import collect_status, render_status

    settings = _status_settings(args)
    _log_format(settings.ops)
    report = run_command(lambda _: collect_status(settings, sample_main=args.sample, sample_size=args.sample_size))
    _show(args, report, render_status)
    # For scripts and cron: 0 all well, 1 the report lists problems (the same list the table ends with).
    return 1 if report.problems else 0


def _element(args: argparse.Namespace) -> int:
    from bridge.admin.element import DEFAULT_SCAN_LIMIT, element_report
    from bridge.admin.rendering import render_element
    from bridge.channels import channel_options_model, channel_problems
    from bridge.config import KordiamCommandSettings, StatusSettings, load_settings

    if args.scan_limit is not None and not args.dlq:
        _say("kordiam-bridge element: --scan-limit bounds the look for dead letters: give it with --dlq")
        return EXIT_CONFIG
    settings = load_settings(
        args.config,
        # --kordiam fetches the element: it needs [kordiam] and its secret; the channels' secrets are never needed.
        model=KordiamCommandSettings if args.kordiam else StatusSettings,
        check_channel=lambda channel, index: channel_problems(channel, index, secrets=False),
        channel_options_model=channel_options_model,
    )
    _log_format(settings.ops)
    report = run_command(
        lambda _: element_report(
            settings,
            args.element_id,
            dead_letters=args.dlq,
            scan_limit=args.scan_limit or DEFAULT_SCAN_LIMIT,
            kordiam=args.kordiam,
            config=args.config,
        )
    )
    _show(args, report, render_element)
    # As `status`: 0 nothing wrong found, 1 problems (parked, dead letters, out of line, paused, a channel failing).
    return 1 if report.problems else 0


def _run(args: argparse.Namespace) -> int:
    from bridge.channels import channel_problems
    from bridge.config import load_settings
    from bridge.ops.logging import configure_logging
    from bridge.worker import run_worker

    settings = load_settings(args.config, check_channel=channel_problems)
    configure_logging(settings.ops.log_level, log_format=settings.ops.log_format)
    return serve_until_signalled(lambda stop: run_worker(settings, stop, own_process=True))


def _ingress(args: argparse.Namespace) -> int:
    from bridge.config import IngressCommandSettings, load_settings
    from bridge.ingress.app import run_ingress
    from bridge.ops.logging import configure_logging

    settings = load_settings(args.config, model=IngressCommandSettings)
    configure_logging(settings.ingress.log_level, log_format=settings.ops.log_format)
    return serve_until_signalled(lambda stop: run_ingress(settings, stop, own_process=True))


def _check_config(args: argparse.Namespace) -> int:
    import json

    from bridge.channels import channel_options, channel_problems
    from bridge.config import FileSettings, load_settings

    settings = load_settings(args.config, model=FileSettings, check_channel=channel_problems)
    _log_format(settings.ops)
    effective = settings.model_dump(mode="json", exclude={"channels"})
    effective["channels"] = [
        {
            **channel.model_dump(mode="json", exclude=set(channel.model_extra or {})),
            **channel_options(channel, index=index).model_dump(mode="json"),
        }
        for index, channel in enumerate(settings.channels)
    ]
    # The channel the element is linked to, by name: the one whose "main" above is true (the first by default).
    effective["main_channel"] = settings.main_channel
    with _writing_output():
        print(json.dumps(effective, indent=2))
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from bridge.config import aws_endpoint_url, aws_region, http_url, listen_host, parse_stomp_url
    from bridge.simulator import SimulatorSettings, run_simulator

    try:
        listen_host(args.host)
    except ValueError as error:
        raise ConfigError("--host", str(error)) from None
    if args.stomp_url is not None:
        if args.queue_url is not None:
            raise ConfigError("--stomp-url", "send notifications to one queue: give --queue-url or --stomp-url")
        try:
            parse_stomp_url(args.stomp_url)
        except ValueError as error:
            raise ConfigError("--stomp-url", str(error)) from None
    for flag, url, check in (
        ("--queue-url", args.queue_url, http_url),
        ("--sqs-endpoint-url", args.sqs_endpoint_url, aws_endpoint_url),
    ):
        if url is not None:
            try:
                check(url)
            except ValueError as error:
                raise ConfigError(flag, f"{url!r} {error}") from None
    if args.sqs_endpoint_url is not None and args.queue_url is None:
        raise ConfigError("--sqs-endpoint-url", "needs --queue-url")  # else silently unused
    try:
        aws_region(args.region)
    except ValueError as error:
        raise ConfigError("--region", str(error)) from None
    webhooks = _simulator_webhooks(args)
    settings = SimulatorSettings(
        **webhooks,
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl_seconds=args.token_ttl,
        queue_url=args.queue_url,
        sqs_endpoint_url=args.sqs_endpoint_url,
        stomp_url=args.stomp_url,
        region=args.region,
    )
    run_simulator(settings, args.host, args.port)
    return 0


def _simulator_webhooks(args: argparse.Namespace) -> dict[str, Any]:
    """The simulator's webhook settings from its flags; ``ConfigError`` naming the flag that is wrong."""
    import os

    from bridge.channels.auth import http_url
    from bridge.simulator.webhooks import WebhookAuth

    found: dict[str, Any] = {}
    for flag, value in (("--global-export-url", args.global_export_url), ("--platform-url", args.platform_url)):
        if value is not None:
            try:
                found[flag.removeprefix("--").replace("-", "_")] = http_url(value)
            except ValueError as error:
                raise ConfigError(flag, str(error)) from None
    if "global_export_url" in found:
        try:
            found["global_export_auth"] = WebhookAuth.parse(args.global_export_auth)
        except ValueError as error:
            raise ConfigError("--global-export-auth", str(error)) from None
    elif args.global_export_auth:
        raise ConfigError("--global-export-auth", "needs --global-export-url")
    if "platform_url" in found:
        secret = args.platform_api_secret or os.environ.get("KORDIAM_PLATFORM_API_SECRET", "")
        if not args.platform_api_user or not secret:
            raise ConfigError("--platform-api-user", "--platform-url needs --platform-api-user and its secret")
        found.update(platform_api_user=args.platform_api_user, platform_api_secret=secret)
    elif args.platform_api_user or args.platform_api_secret:
        flag = "--platform-api-user" if args.platform_api_user else "--platform-api-secret"
        raise ConfigError(flag, "needs --platform-url")
    return found


def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(args.workdir, webhooks=args.webhooks, console=_OutputConsole())


if __name__ == "__main__":
    sys.exit(main())
