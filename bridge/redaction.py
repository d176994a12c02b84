"""The process's secrets, and their removal from the outside text the bridge quotes (``SECRETS.redact``).

``HttpResponse.redact`` removes what the answered request itself carried; this removes what any other request
could have carried: a proxy in front of one channel echoing another's API key, a Kordiam token in a channel's
error page, an exception's text holding a configured secret.
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretStr

REDACTED = "***"
# Shorter values are not looked for: they would match ordinary words. Every secret setting is at least this long
# (``bridge.config.SHORTEST_SECRET`` refuses shorter ones at start-up); a shorter one (ActiveMQ's password keeps
# the broker's rules) is not redacted.
SHORTEST_LOOKED_FOR = 8
# Run-time tokens kept: a token source without a cache (a Platform channel's ``token_cache = false``) fetches one
# per request, and the list must not grow for ever; a token long replaced is no longer a credential.
RECENT_TOKENS = 256


class Redaction:
    """The secrets of one process and ``redact``, which replaces each of them in a text by ``***``.

    What is a secret: every ``SecretStr`` of the settings and of each channel's options (``remember_secrets``,
    at start-up, for as long as the process runs), also of the sections and channels a command does not validate
    (``unvalidated_secrets``: an operator command shows reasons that may quote them), values derived from them once
    (an HTTP Basic header), and the tokens the bridge obtains at run time (``remember_token``: Kordiam's OAuth
    access tokens, the protocol channels' bearer tokens; the ``RECENT_TOKENS`` most recent). Each is looked for as
    given and as it may be echoed: without its whitespace (a WordPress application password, configured as
    ``abcd EFGH …``), in groups of four (one configured without the spaces WordPress shows), form-encoded, and
    JSON-escaped.

    Where it is applied: only to text being quoted in an error, a warning or a dead letter (``HttpResponse.redact``,
    the warning and error log lines, a dead letter's or a parked element's reason as written and as the operator
    commands read it back), never on a message's success path; remembering costs a set insertion.
    """

    def __init__(self) -> None:
        # Changed on the event loop, read by stdlib logging from any thread (a library's warning in the SQLite
        # store's thread): changes and the snapshot a rebuild reads hold the lock; a rebuild is kept only if
        # nothing changed meanwhile, so a token remembered during it is not lost.
        self._lock = threading.Lock()
        self._configured: set[str] = set()
        self._tokens: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._changes = 0
        self._longest_first: tuple[str, ...] | None = None  # all forms, sorted when next needed

    def remember_secrets(self, *sources: BaseModel | str) -> None:
        """Remember the secrets of configured ``sources``: each ``SecretStr`` anywhere in a model (its fields,
        nested models, lists and tables), and each ``str`` as a whole."""
        forms: set[str] = set()
        for source in sources:
            values = [source] if isinstance(source, str) else list(_secret_values(source))
            for value in values:
                forms.update(_echoed_forms(value))
        with self._lock:
            self._configured.update(forms)
            self._changed()

    def remember_token(self, token: str) -> None:
        """Remember a token obtained at run time (kept among the ``RECENT_TOKENS`` most recent)."""
        if token in self._tokens or len(token.strip()) < SHORTEST_LOOKED_FOR:
            return
        with self._lock:
            self._tokens[token] = None
            if len(self._tokens) > RECENT_TOKENS:
                del self._tokens[next(iter(self._tokens))]
            self._changed()

    def redact(self, text: str) -> str:
        """``text`` with every remembered secret in any of its forms replaced by ``***``; longest first, so that a
        secret inside another is replaced as part of it."""
        longest_first = self._longest_first
        if longest_first is None:
            longest_first = self._sorted_forms()
        for secret in longest_first:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _changed(self) -> None:
        self._changes += 1
        self._longest_first = None

    def _sorted_forms(self) -> tuple[str, ...]:
        with self._lock:
            configured, tokens, seen = set(self._configured), list(self._tokens), self._changes
        forms = configured.union(*(_echoed_forms(token) for token in tokens))
        longest_first = tuple(sorted(forms, key=len, reverse=True))
        with self._lock:
            if self._changes == seen:
                self._longest_first = longest_first
        return longest_first


def _secret_values(value: object) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item)


def unvalidated_secrets(annotation: Any, raw: object) -> Iterator[str]:
    """The strings of ``raw`` (a table as the configuration holds it, not validated) that ``annotation`` (a model,
    or a list, table or union of them) would read as a ``SecretStr``: the secrets of a section a command does not
    validate. A value of the wrong shape is passed over, never an error."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):  # each member may name other keys (an auth's type)
        for member in get_args(annotation):
            yield from unvalidated_secrets(member, raw)
    elif annotation is SecretStr:
        if isinstance(raw, str):
            yield raw
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if isinstance(raw, dict):
            for name, field in annotation.model_fields.items():
                if name in raw:
                    yield from unvalidated_secrets(field.annotation, raw[name])
    elif get_origin(annotation) in (list, tuple) and isinstance(raw, list):
        for item in raw:
            for member in get_args(annotation):
                yield from unvalidated_secrets(member, item)
    elif get_origin(annotation) is dict and isinstance(raw, dict) and len(get_args(annotation)) == 2:
        for item in raw.values():
            yield from unvalidated_secrets(get_args(annotation)[1], item)


def _echoed_forms(secret: str) -> set[str]:
    """``secret`` as a server may quote it back; none shorter than ``SHORTEST_LOOKED_FOR``."""
    secret = secret.strip()
    spaceless = "".join(secret.split())
    written = {secret, spaceless}
    if spaceless == secret and secret.isalnum():  # as WordPress shows an application password
        written.add(" ".join(secret[start : start + 4] for start in range(0, len(secret), 4)))
    forms: set[str] = set()
    for form in written:
        forms.update((form, quote_plus(form), quote(form, safe=""), json.dumps(form)[1:-1]))
    return {form for form in forms if len(form) >= SHORTEST_LOOKED_FOR}


# The process's one: every caller reads it as ``redaction.SECRETS`` (a test gives itself a fresh one).
SECRETS = Redaction()
