"""The operator commands: ``replay``, ``dlq list`` / ``dlq show``, ``dlq redrive``, ``parked list`` / ``parked
requeue``, ``status`` and ``element``.

One module a job: ``replay``, ``dlq``, ``redrive``, ``parked``, ``status`` and ``element`` (the entry points
``bridge.cli`` calls), each on any backend through ``bridge.queue.QueueAdmin`` (opened by ``open_queue_admin``; no
queue client here, a ``lint-imports`` contract keeps it so; ``parked``, ``status`` and ``element`` read the state
store too, ``element --kordiam`` Kordiam through the bridge's ``KordiamClient``); ``results``
(the dataclasses every command returns), ``progress`` (the bar) and ``rendering`` (rich tables); ``sqs``,
``QueueAdmin(transport)`` for a caller that already holds an ``SqsTransport``. Nothing below ``bridge.admin``
imports it: it sits above queue, state and pipeline.
"""
