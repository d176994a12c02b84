"""The operator commands: ``replay``, ``dlq list`` / ``dlq show``, ``dlq redrive`` and ``status``.

One module a job: ``progress`` (the bar), ``results`` (the dataclasses every command returns), ``sqs`` (the
operations on SQS queues), ``replay``, ``dlq``, ``redrive`` and ``status`` (the entry points ``bridge.cli`` calls)
and ``rendering`` (rich tables). Nothing below ``bridge.admin`` imports it: it sits above queue, state and pipeline.
"""
