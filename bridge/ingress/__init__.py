"""The webhook ingress: Kordiam's Global Export and Platform integration webhooks become durable queue messages.

``bridge.ingress.app`` serves it; ``bridge.config`` imports ``bridge.ingress.settings``, so this package's
``__init__`` imports nothing (an import here would be circular).
"""
