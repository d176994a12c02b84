"""Text from outside (a server's error page, a broker's frame, a dead letter's reason or body) as it reaches an
operator's terminal: in a one-line error, a command's table, a console log line.

A control character in it, printed raw, is an instruction to the terminal: ESC starts an escape sequence (clear the
screen, rename the window, colour what follows), CR returns to the start of the line, a line break forges a line of
its own. ``visible`` writes each as ``repr`` does (``\\x1b``, ``\\r``), at the edge where the text is printed; JSON
output needs none of it (JSON escapes them itself).
"""

from __future__ import annotations

import functools

# C0, DEL and C1 (an 8-bit CSI, \x9b, is ESC [ to some terminals): Unicode's category Cc.
_CONTROLS = (*range(0x20), *range(0x7F, 0xA0))


@functools.cache
def _escapes(keep: str) -> dict[int, str]:
    return {code: repr(chr(code))[1:-1] for code in _CONTROLS if chr(code) not in keep}


def visible(text: str, *, keep: str = "") -> str:
    """``text`` with every control character but those in ``keep`` (a body's line breaks and tabs, a traceback's
    line breaks) written out as ``repr`` writes it: ESC as the four characters ``\\x1b``. The rest is unchanged, a
    backslash too: a peer that writes ``\\x1b`` itself shows the same four characters, which do nothing."""
    return text.translate(_escapes(keep))
