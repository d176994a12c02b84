"""The ingress's Prometheus metrics (its own process, the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# The route label of a request that never reached a route: a head aiohttp refused (400), or one never finished
# (408: the ingress closed its connection first; 499: its client did).
UNPARSED_ROUTE = "unparsed"

REQUESTS = Counter(
    "bridge_ingress_requests",
    "Webhook calls by route and HTTP status (499: the client went away before its answer)",
    ["route", "status"],
)
ENQUEUE_SECONDS = Histogram(
    "bridge_ingress_enqueue_seconds",
    "Time from a valid webhook call to the queue's confirmation of its message",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AUTH_FAILURES = Counter("bridge_ingress_auth_failures", "Calls refused with 401, by receiver", ["receiver"])
QUEUE_UNAVAILABLE = Counter("bridge_ingress_queue_unavailable", "Calls answered 503 because the queue failed")
UNMAPPED = Counter(
    "bridge_ingress_unmapped", "PUT/DELETE calls whose id maps to no Kordiam element (nothing enqueued)", ["receiver"]
)
RATE_LIMITED = Counter("bridge_ingress_rate_limited", "Calls answered 429 by the per-client rate limit")
BODIES_TRIMMED = Counter(
    "bridge_ingress_bodies_trimmed",
    "Element calls whose body was larger than the queue takes, enqueued as the element id and event only",
)
IN_PROGRESS = Gauge(
    "bridge_ingress_requests_in_progress", "Webhook calls in progress (at most max_concurrent_requests)"
)
OVER_CAPACITY = Counter(
    "bridge_ingress_over_capacity", "Calls answered 503 because max_concurrent_requests calls were in progress"
)
BODY_TIMEOUTS = Counter("bridge_ingress_body_timeouts", "Calls answered 408: the body took over body_timeout_seconds")
OPEN_CONNECTIONS = Gauge("bridge_ingress_open_connections", "Client connections open (at most max_connections)")
CONNECTIONS_SHED = Counter(
    "bridge_ingress_connections_shed",
    "Connections closed at max_connections: the longest idle for a new one (idle_closed), or a new one with none "
    "idle (refused)",
    ["outcome"],
)
