"""The operator commands: ``replay``, ``dlq list`` / ``dlq show``, ``dlq redrive``, ``parked list`` / ``parked
requeue`` and ``status``.

One module a job: ``replay``, ``dlq``, ``redrive``, ``parked`` and ``status`` (the entry points ``bridge.cli``
calls), each on any backend through ``bridge.queue.QueueAdmin`` (opened by ``open_queue_admin``; no queue client
here, a ``lint-imports`` contract keeps it so; ``parked`` and ``status`` read the state store too); ``results``
(the dataclasses every command returns), ``progress`` (the bar) and ``rendering`` (rich tables); ``sqs``,
``QueueAdmin(transport)`` for a caller that already holds an ``SqsTransport``. Nothing below ``bridge.admin``
imports it: it sits above queue, state and pipeline.
"""
