"""The story's HTML as the item's XHTML body: sanitised by nh3, then rebuilt as well-formed XHTML elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from bridge.channels.newsml.g2 import XHTML, XML_NS
from bridge.channels.text import HtmlPolicy, plain_text, sanitize_html, xml_text

BODY_HTML = HtmlPolicy(
    tags=frozenset(
        {
            "p", "br", "hr", "h2", "h3", "h4", "h5", "h6", "a", "strong", "b", "em", "i", "u", "s", "sub", "sup",
            "small", "mark", "code", "pre", "abbr", "cite", "q", "blockquote", "ul", "ol", "li", "dl", "dt", "dd",
            "figure", "figcaption", "img", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "span",
            "div",
        }
    ),
    attributes={
        "*": frozenset({"lang", "dir"}),
        "a": frozenset({"href", "title"}),
        "img": frozenset({"src", "alt", "title", "width", "height"}),
        "blockquote": frozenset({"cite"}),
        "q": frozenset({"cite"}),
        "abbr": frozenset({"title"}),
        "ol": frozenset({"start"}),
        "th": frozenset({"colspan", "rowspan", "scope"}),
        "td": frozenset({"colspan", "rowspan"}),
    },
)  # fmt: skip
"""What the body keeps of the story's HTML (then rebuilt as XHTML by ``_XhtmlBuilder``)."""
VOID_TAGS = frozenset({"br", "hr", "img"})
# Elements nested deeper in the body are left out, their text kept in the deepest one: libxml2, which most
# consumers parse with, refuses an item nested over 256 levels, and the item's serialiser recurses per level.
MAX_BODY_DEPTH = 100


def item_text(text: str | None) -> str:
    """A headline, lead or note as plain text an XML item can carry."""
    return plain_text(text, keep=xml_text)


class _XhtmlBuilder(HTMLParser):
    """Sanitised HTML → XHTML elements under ``parent``; entities decoded, every element closed, at most
    ``MAX_BODY_DEPTH`` levels deep."""

    def __init__(self, parent: ET.Element) -> None:
        super().__init__(convert_charrefs=True)
        self._stack = [parent]
        self._too_deep: list[str] = []  # tags left out for depth, still open in the source (nh3 closes each)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=tag in VOID_TAGS)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=True)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], *, void: bool) -> None:
        if tag not in BODY_HTML.tags:  # nh3 has removed these already; never trust one layer alone
            return
        if not void and len(self._stack) > MAX_BODY_DEPTH:
            self._too_deep.append(tag)
            return
        allowed = BODY_HTML.allowed_attributes(tag)
        attributes = {name: xml_text(value or "") for name, value in attrs if name in allowed}
        element = ET.SubElement(self._stack[-1], f"{{{XHTML}}}{tag}", attributes)
        if not void:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        if self._too_deep and self._too_deep[-1] == tag:
            self._too_deep.pop()
            return
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == f"{{{XHTML}}}{tag}":
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        data = xml_text(data)
        parent = self._stack[-1]
        if len(parent):
            last = parent[-1]
            last.tail = (last.tail or "") + data
        else:
            parent.text = (parent.text or "") + data


def xhtml_document(title: str, body_html: str | None, language: str | None) -> ET.Element:
    """A complete XHTML document (``html/head/title`` + ``body``) carrying the sanitised story HTML."""
    root = ET.Element(f"{{{XHTML}}}html")
    if language:
        root.set(f"{{{XML_NS}}}lang", language)
    head = ET.SubElement(root, f"{{{XHTML}}}head")
    ET.SubElement(head, f"{{{XHTML}}}title").text = title
    body = ET.SubElement(root, f"{{{XHTML}}}body")
    if body_html:
        builder = _XhtmlBuilder(body)
        builder.feed(sanitize_html(xml_text(body_html), BODY_HTML))
        builder.close()
    return root


def word_count(element: ET.Element) -> int:
    return len("".join(element.itertext()).split())
