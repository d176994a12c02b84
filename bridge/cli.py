"""``kordiam-bridge``: the worker, the Kordiam API simulator and the embedded demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bridge import __version__
from bridge.errors import BridgeError, ConfigError

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bridge.ops.logging import configure_logging

    # Logs go to stderr (JSON); stdout is for a command's own output (tables, --json).
    configure_logging("info")
    try:
        result: int = args.command(args)
    except ConfigError as error:
        print(f"kordiam-bridge: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except BridgeError as error:  # operator commands: a clear message, no traceback
        print(f"kordiam-bridge: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kordiam-bridge",
        description="Consume Kordiam change notifications from SQS and keep publishing channels in sync.",
    )
    parser.add_argument("--version", action="version", version=f"kordiam-bridge {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the worker")
    run.add_argument("--config", type=Path, help="TOML configuration file (default: $BRIDGE_CONFIG)")
    run.set_defaults(command=_run)

    check = commands.add_parser("check-config", help="validate the configuration and print it without secrets")
    check.add_argument("--config", type=Path, help="TOML configuration file (default: $BRIDGE_CONFIG)")
    check.set_defaults(command=_check_config)

    simulator = commands.add_parser("simulator", help="serve the Kordiam API v2 simulator")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=8700)
    simulator.add_argument("--queue-url", help="SQS queue that receives change notifications")
    simulator.add_argument("--sqs-endpoint-url", help="SQS endpoint (LocalStack, moto server)")
    simulator.add_argument(
        "--stomp-url", help="ActiveMQ queue that receives change notifications instead: stomp://HOST:PORT/queue/NAME"
    )
    simulator.add_argument("--region", default="eu-central-1")
    simulator.add_argument("--client-id", default="demo-client")
    simulator.add_argument("--client-secret", default="demo-secret")
    simulator.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    simulator.set_defaults(command=_simulator)

    replay = commands.add_parser("replay", help="enqueue fresh notifications for elements (re-sync them)")
    _config_option(replay)
    replay.add_argument("element_ids", metavar="ELEMENT_ID", type=int, nargs="+")
    _output_options(replay, progress=True)
    replay.set_defaults(command=_replay)

    dlq = commands.add_parser("dlq", help="inspect and redrive the dead-letter queue")
    dlq_commands = dlq.add_subparsers(required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="show dead letters with their failure context")
    _config_option(dlq_list)
    dlq_list.add_argument("--limit", type=int, default=50)
    _output_options(dlq_list)
    dlq_list.set_defaults(command=_dlq_list)
    dlq_show = dlq_commands.add_parser("show", help="one dead letter, whole")
    _config_option(dlq_show)
    dlq_show.add_argument("message_id", metavar="MESSAGE_ID")
    dlq_show.add_argument("--scan-limit", type=int, default=1000)
    _output_options(dlq_show)
    dlq_show.set_defaults(command=_dlq_show)
    redrive = dlq_commands.add_parser("redrive", help="move dead letters back to the queue, never losing one")
    _config_option(redrive)
    redrive.add_argument("--limit", type=int, help="move at most N messages")
    redrive.add_argument("--element", type=int, action="append", dest="elements", help="only this element (repeat)")
    redrive.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use SQS StartMessageMoveTask (default: when the endpoint supports it and no filter is given)",
    )
    _output_options(redrive, progress=True)
    redrive.set_defaults(command=_dlq_redrive)

    status = commands.add_parser("status", help="queue depth, oldest message, DLQ depth, per-channel health")
    _config_option(status)
    status.add_argument("--sample", action="store_true", help="also peek at the main queue for the oldest message")
    status.add_argument("--sample-size", type=int, default=10)
    _output_options(status)
    status.set_defaults(command=_status)

    demo = commands.add_parser("demo", help="run the whole bridge on embedded defaults and show what landed where")
    demo.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the demo writes its output")
    demo.set_defaults(command=_demo)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file (default: $BRIDGE_CONFIG)")


def _output_options(parser: argparse.ArgumentParser, *, progress: bool = False) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if progress:
        parser.add_argument(
            "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a TTY)"
        )


def _show(args: argparse.Namespace, result: object, render: Callable[[Any, Console], None]) -> None:
    from bridge.queue.admin import to_json

    if args.json:
        print(to_json(result))
    else:
        render(result, Console())


def _replay(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.queue.admin import progress_bar, render_replay, replay

    settings = load_settings(args.config)
    with progress_bar(args.progress) as progress:
        result = asyncio.run(replay(settings.queue, args.element_ids, progress=progress))
    _show(args, result, render_replay)
    return 1 if result.failed else 0


def _dlq_list(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.queue.admin import dlq_list, render_dlq_list

    settings = load_settings(args.config)
    _show(args, asyncio.run(dlq_list(settings.queue, limit=args.limit)), render_dlq_list)
    return 0


def _dlq_show(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.queue.admin import dlq_show, render_dlq_message

    settings = load_settings(args.config)
    found = asyncio.run(dlq_show(settings.queue, args.message_id, scan_limit=args.scan_limit))
    if found is None:
        print(f"kordiam-bridge: no dead letter {args.message_id} found", file=sys.stderr)
        return 1
    _show(args, found, render_dlq_message)
    return 0


def _dlq_redrive(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.queue.admin import dlq_redrive, progress_bar, render_redrive

    settings = load_settings(args.config)
    try:
        with progress_bar(args.progress) as progress:
            result = asyncio.run(
                dlq_redrive(
                    settings.queue, limit=args.limit, element_ids=args.elements, native=args.native, progress=progress
                )
            )
    except ValueError as error:  # --native together with a filter
        print(f"kordiam-bridge: {error}", file=sys.stderr)
        return EXIT_CONFIG
    _show(args, result, render_redrive)
    return 0 if result.ok else 1


def _status(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.ops.status import collect_status, render_status

    settings = load_settings(args.config)
    report = asyncio.run(collect_status(settings, sample_main=args.sample, sample_size=args.sample_size))
    _show(args, report, render_status)
    return 0


def _run(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.ops.logging import configure_logging
    from bridge.worker import install_signal_handlers, run_worker

    settings = load_settings(args.config)
    configure_logging(settings.ops.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_worker(settings, stop, own_process=True)

    asyncio.run(_main())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    import json

    from bridge.channels import channel_options
    from bridge.config import load_settings

    settings = load_settings(args.config)
    effective = settings.model_dump(mode="json", exclude={"channels"})
    effective["channels"] = [
        {
            **channel.model_dump(mode="json", exclude=set(channel.model_extra or {})),
            **channel_options(channel, index=index).model_dump(mode="json"),
        }
        for index, channel in enumerate(settings.channels)
    ]
    print(json.dumps(effective, indent=2))
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from bridge.config import parse_stomp_url
    from bridge.simulator import SimulatorSettings, run_simulator

    if args.stomp_url is not None:
        if args.queue_url is not None:
            raise ConfigError("--stomp-url", "send notifications to one queue: give --queue-url or --stomp-url")
        try:
            parse_stomp_url(args.stomp_url)
        except ValueError as error:
            raise ConfigError("--stomp-url", str(error)) from None
    settings = SimulatorSettings(
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


def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
