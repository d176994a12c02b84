"""The one test for "this text is a whole number" that every reader of ids, counts and versions uses.

``str.isdigit`` alone is not it: it also takes "²" (which ``int`` refuses: a ValueError where a clear answer
belongs) and "٣" (which ``int`` reads as 3: the wrong element or post). Ids and numbers reach the bridge as text
from Kordiam, the channels' answers, queue messages and the state stores; each is read only after this test.
"""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits (0-9) and nothing else: no sign, space or underscore."""
    return text.isascii() and text.isdigit()
