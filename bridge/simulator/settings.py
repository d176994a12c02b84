"""Configuration of the Kordiam API simulator."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.simulator.webhooks import WebhookAuth


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything the simulator needs; immutable so one instance can be shared between threads.

    ``notify_on_api_writes`` mirrors real Kordiam, which emits a change notification for writes made
    through the API too (PATCH publication, publish, link). Keeping it on lets the bridge prove that its
    own write-back does not start an endless notify/write loop.
    """

    client_id: str = "demo-client"
    client_secret: str = "demo-secret"
    token_ttl_seconds: int = 3600
    queue_url: str | None = None
    sqs_endpoint_url: str | None = None
    # Kordiam's own message queue: notifications go to this ActiveMQ queue (stomp://HOST:PORT/queue/NAME) instead.
    stomp_url: str | None = None
    region: str = "eu-central-1"
    notify_on_api_writes: bool = True
    aws_access_key_id: str = "testing"
    aws_secret_access_key: str = "testing"
    # Kordiam's webhooks (bridge.simulator.webhooks): Global Export to this URL with this auth, Platform
    # integration to that URL with that API user and secret.
    global_export_url: str | None = None
    global_export_auth: WebhookAuth | None = None
    platform_url: str | None = None
    platform_api_user: str = ""
    platform_api_secret: str = ""
