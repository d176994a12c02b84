"""``python -m bridge.simulator``: serve the Kordiam simulator in the foreground."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from bridge.simulator.server import run_simulator
from bridge.simulator.settings import SimulatorSettings


def _parser() -> argparse.ArgumentParser:
    defaults = SimulatorSettings()
    parser = argparse.ArgumentParser(prog="python -m bridge.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument("--token-ttl-seconds", type=int, default=defaults.token_ttl_seconds)
    parser.add_argument("--queue-url", default=None, help="SQS queue for change notifications (optional)")
    parser.add_argument("--sqs-endpoint-url", default=None, help="e.g. http://127.0.0.1:5000 for moto")
    parser.add_argument("--region", default=defaults.region)
    parser.add_argument(
        "--no-notify-on-api-writes",
        dest="notify_on_api_writes",
        action="store_false",
        help="do not send 'updated' notifications for writes made through the API",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = SimulatorSettings(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl_seconds=args.token_ttl_seconds,
        queue_url=args.queue_url,
        sqs_endpoint_url=args.sqs_endpoint_url,
        region=args.region,
        notify_on_api_writes=args.notify_on_api_writes,
    )
    run_simulator(settings, args.host, args.port)


if __name__ == "__main__":
    main()
