"""Kordiam REST API v2: client, models, and the documented assumptions about its undocumented parts."""
