"""kordiam-bridge: Kordiam change notifications from SQS, fanned out to publishing channels."""

__version__ = "0.1.0"
