"""``kordiam-bridge``: the worker, the Kordiam API simulator and the embedded demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__
from bridge.errors import ConfigError

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.command(args)
    except ConfigError as error:
        print(f"kordiam-bridge: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
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
    simulator.add_argument("--region", default="eu-central-1")
    simulator.add_argument("--client-id", default="demo-client")
    simulator.add_argument("--client-secret", default="demo-secret")
    simulator.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    simulator.set_defaults(command=_simulator)

    demo = commands.add_parser("demo", help="run the whole bridge on embedded defaults and show what landed where")
    demo.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the demo writes its output")
    demo.set_defaults(command=_demo)
    return parser


def _run(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.ops.logging import configure_logging
    from bridge.worker import install_signal_handlers, run_worker

    settings = load_settings(args.config)
    configure_logging(settings.ops.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_worker(settings, stop)

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
            **channel.model_dump(mode="json", include={"name", "type", "platforms", "statuses", "main"}),
            **channel_options(channel, index=index).model_dump(mode="json"),
        }
        for index, channel in enumerate(settings.channels)
    ]
    print(json.dumps(effective, indent=2))
    return 0


def _simulator(args: argparse.Namespace) -> int:
    from bridge.simulator import SimulatorSettings, run_simulator

    settings = SimulatorSettings(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl_seconds=args.token_ttl,
        queue_url=args.queue_url,
        sqs_endpoint_url=args.sqs_endpoint_url,
        region=args.region,
    )
    run_simulator(settings, args.host, args.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
