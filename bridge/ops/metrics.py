"""Prometheus metrics. One asyncio process per container, so the default registry is enough."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter("bridge_messages_received", "Messages received from SQS")
MESSAGE_OUTCOMES = Counter("bridge_message_outcomes", "Messages by final outcome of one attempt", ["outcome"])
IN_FLIGHT = Gauge("bridge_messages_in_flight", "Messages received and not yet settled")
MESSAGE_AGE = Histogram(
    "bridge_message_age_seconds",
    "Age of a message (since it was sent) when the worker picks it up",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
CHANNEL_LATENCY = Histogram(
    "bridge_channel_write_seconds",
    "Duration of one channel write",
    ["channel", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHANNEL_ERRORS = Counter("bridge_channel_errors", "Failed channel writes", ["channel", "kind"])
KORDIAM_THROTTLED = Counter("bridge_kordiam_throttled", "Kordiam API answers with 429")
VISIBILITY_EXTENSIONS = Counter("bridge_visibility_extensions", "Visibility timeouts extended for slow messages")
NOTIFICATIONS_COALESCED = Counter(
    "bridge_notifications_coalesced", "Notifications acknowledged without a fetch: a later-started fetch covered them"
)
FEEDBACK_WRITES = Counter("bridge_feedback_writes", "Feedback writes to Kordiam", ["kind"])
BREAKER_STATE = Gauge(
    "bridge_channel_breaker_state", "Circuit breaker per channel: 0 closed, 1 half-open, 2 open", ["channel"]
)
RECONCILED = Counter("bridge_reconcile_enqueued", "Elements the reconciliation sweep found out of date and enqueued")
# A sweep that fails is retried only at the next interval; without this, only a log line would show it.
RECONCILE_FAILURES = Counter("bridge_reconcile_failures", "Reconciliation sweeps that failed (Kordiam, state, queue)")
# Every worker with the sweep enabled exports the fleet's cursor as it last read or wrote it: max() over them says
# where the sweep stands, and an alert on its age catches a sweep that neither fails nor advances.
RECONCILE_CURSOR = Gauge(
    "bridge_reconcile_cursor_timestamp_seconds",
    "Where the reconciliation sweep resumes (Unix time): the stored cursor as this worker last read or wrote it",
)
KORDIAM_AUTH_FAILURES = Counter(
    "bridge_kordiam_auth_failures", "Kordiam refusals of the worker's own credentials (by a message or a token retry)"
)
STATE_OUTAGES = Counter(
    "bridge_state_outages", "Pauses of the worker because the state store failed for every message (its probe too)"
)
KORDIAM_OUTAGES = Counter(
    "bridge_kordiam_outages", "Pauses of the worker because Kordiam was unavailable for every message (its probe too)"
)
CHANNEL_CREDENTIALS_REFUSED = Gauge(
    "bridge_channel_credentials_refused",
    "1 while the channel refuses the bridge's credentials (its elements are parked, not dead-lettered)",
    ["channel"],
)
CHANNEL_PARKED = Counter(
    "bridge_channel_parked",
    "Elements parked for a channel that refused the bridge's credentials or whose breaker was open",
    ["channel"],
)
CHANNEL_PARKED_ELEMENTS = Gauge(
    "bridge_channel_parked_elements",
    "Elements parked for the channel now, by every worker (the state store's count, read once a minute)",
    ["channel"],
)
CHANNEL_REQUEUED = Counter(
    "bridge_channel_requeued", "Parked elements put back on the queue for the channel", ["channel"]
)
CONSUMER_PAUSED = Gauge("bridge_consumer_paused", "1 while the worker takes no messages for a worker-wide fault")
