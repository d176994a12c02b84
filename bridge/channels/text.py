"""Story text for channels: HTML sanitising and plain text, one home for every adapter.

Each target allows its own tags (an ``HtmlPolicy`` in its adapter module); what is dropped is the same for all:
script, style and embedded documents with their content, event handlers, and URLs other than http, https,
mailto and tel. Sanitising is nh3 (ammonia); never a hand-written filter.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nh3

# Dropped together with their content, not just unwrapped: their text is code or another document.
UNSAFE_CONTENT_TAGS = frozenset({"script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math"})
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})

# Characters XML 1.0 cannot carry (and lone surrogates, which cannot even be encoded as UTF-8).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class HtmlPolicy:
    """The tags a target accepts, and each tag's attributes (``"*"``: on every tag)."""

    tags: frozenset[str]
    attributes: Mapping[str, frozenset[str]]

    def allowed_attributes(self, tag: str) -> frozenset[str]:
        return self.attributes.get(tag, frozenset()) | self.attributes.get("*", frozenset())


def without_surrogates(text: str) -> str:
    """``text`` without lone surrogates, which cannot be encoded as UTF-8 (JSON bodies, e-mail)."""
    return text.encode("utf-8", "ignore").decode("utf-8")


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids."""
    return _NOT_XML.sub("", text)


def sanitize_html(text: str, policy: HtmlPolicy) -> str:
    """The story's HTML with only ``policy``'s tags and attributes (HTML5 serialisation, as nh3 writes it)."""
    return nh3.clean(
        text,
        tags=set(policy.tags),
        clean_content_tags=set(UNSAFE_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in policy.attributes.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=None,
    )


def strip_tags(text: str) -> str:
    """``text`` with every tag dropped (script and style with their content); entities stay escaped."""
    return nh3.clean(text, tags=set(), clean_content_tags={"script", "style"})


def plain_text(text: str | None, *, keep: Callable[[str], str] = without_surrogates) -> str:
    """A headline, lead or note as plain text: tags dropped, entities decoded, whitespace collapsed.

    ``keep`` filters the characters the target can carry, before the tags are dropped and again after the
    entities are decoded (an entity may name a character the target cannot carry).
    """
    if not text:
        return ""
    return " ".join(keep(html.unescape(strip_tags(keep(text)))).split())


ARTICLE_HTML = HtmlPolicy(
    tags=frozenset(
        {
            "p", "br", "hr", "h2", "h3", "h4", "h5", "h6", "a", "strong", "b", "em", "i", "u", "s", "sub", "sup",
            "small", "mark", "code", "pre", "kbd", "abbr", "cite", "q", "blockquote", "ul", "ol", "li", "dl", "dt",
            "dd", "figure", "figcaption", "img", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption",
            "span", "div",
        }
    ),
    attributes={
        "*": frozenset({"lang", "dir"}),
        "a": frozenset({"href", "title", "hreflang"}),
        "img": frozenset({"src", "alt", "title", "width", "height"}),
        "blockquote": frozenset({"cite"}),
        "q": frozenset({"cite"}),
        "abbr": frozenset({"title"}),
        "ol": frozenset({"start", "reversed"}),
        "th": frozenset({"colspan", "rowspan", "scope"}),
        "td": frozenset({"colspan", "rowspan"}),
    },
)  # fmt: skip
"""An article's markup, for targets that show it as a page (WordPress's content, the folder channel's page):
text structure, links, images, tables and code; no script, style, form or embed."""
