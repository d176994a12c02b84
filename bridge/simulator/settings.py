"""Configuration of the Kordiam API simulator."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.simulator.webhooks import WebhookAuth


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything the simulator needs; immutable so one instance can be shared between threads.

    ``notify_on_api_writes`` sends an ``updated`` notification for every API write (PATCH publication, publish,
    link, unlink), even one that changes nothing. Kordiam's message queue documents its triggers (reference 1:
    publication status, date, platform, category, type, …), not CMS links or external ids, so this is more than
    Kordiam sends, on purpose: keeping it on lets the bridge prove that its own write-back does not start an
    endless notify/write loop, whichever of its writes Kordiam turns out to announce.
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
