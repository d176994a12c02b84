"""Optional OpenTelemetry spans: one consumer span per message, continuing the producer's trace.

The trace context arrives as a ``traceparent`` message attribute (W3C) or as SQS's ``AWSTraceHeader`` system
attribute (X-Ray format, converted here). Without ``opentelemetry-api`` installed (``pip install
kordiam-bridge[otel]``) this module does nothing; with the API but no SDK configured, spans are no-ops.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised only without the optional dependency
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]

XRAY = re.compile(
    r"Root=1-(?P<time>[0-9a-f]{8})-(?P<id>[0-9a-f]{24});Parent=(?P<parent>[0-9a-f]{16})(?:;Sampled=(?P<s>[01]))?"
)


def xray_to_traceparent(header: str) -> str | None:
    """``Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`` → W3C ``traceparent``."""
    found = XRAY.search(header)
    if not found:
        return None
    flags = "01" if found.group("s") == "1" else "00"
    return f"00-{found.group('time')}{found.group('id')}-{found.group('parent')}-{flags}"


def tracing_configured() -> bool:
    """True when an OpenTelemetry SDK is in place; without one every span would be a no-op."""
    return trace is not None and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def message_span(message_id: str, attributes: dict[str, str], trace_header: str | None) -> Iterator[Any]:
    """A CONSUMER span for one message, child of the producer's span when the message carries one."""
    # Without an SDK (the API's proxy provider) every span would be a no-op: skip the work entirely.
    if trace is None or propagate is None or not tracing_configured():
        yield None
        return
    carrier: dict[str, str] = {}
    if "traceparent" in attributes:
        carrier["traceparent"] = attributes["traceparent"]
        if "tracestate" in attributes:
            carrier["tracestate"] = attributes["tracestate"]
    elif trace_header:
        converted = xray_to_traceparent(trace_header)
        if converted:
            carrier["traceparent"] = converted
    context = propagate.extract(carrier)
    tracer = trace.get_tracer("kordiam-bridge")
    with tracer.start_as_current_span(
        "kordiam-bridge process",
        context=context,
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "aws_sqs", "messaging.message.id": message_id},
    ) as span:
        yield span
