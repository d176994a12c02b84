"""kordiam-bridge: Kordiam change notifications from a queue (SQS, ActiveMQ), fanned out to publishing channels."""

__version__ = "0.1.0"
