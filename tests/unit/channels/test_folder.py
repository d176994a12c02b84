"""The folder channel's content: the JSON document and the HTML page carry the story as the other channels do."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from bridge.channels.folder import FolderChannel
from bridge.kordiam.models import Element
from tests.support import story

HOSTILE = (
    '<p onclick="steal()">Body <a href="https://example.org/a">ok</a> <a href="ftp://example.org/f">ftp</a> '
    '<a href="ssh://example.org">ssh</a> <a href="javascript:alert(1)">js</a></p>'
    "<script>alert(1)</script><style>p{}</style><iframe src=x><b>framed</b></iframe>"
    "<noscript><p>fallback</p></noscript><object><embed src=x>plugin</object><template><p>tpl</p></template>"
)


def element(
    *, headline: str = "Council approves budget", text: str = "<p>Body</p>", lead: str = "The lead."
) -> Element:
    data = story(platforms=(99003,))
    data.update(id=4711, version=7)
    data["tasks"][0].update(id=31)
    data["tasks"][0]["content"] = {"headline": headline, "lead": lead, "text": text}
    data["publications"][0]["id"] = 812
    return Element.model_validate(data)


async def written(tmp_path: Path, value: Element) -> tuple[dict[str, Any], str]:
    result = await FolderChannel("web", tmp_path).upsert(value, value.publications[0], None)
    document = json.loads((tmp_path / f"{result.external_id}.json").read_text(encoding="utf-8"))
    return document, (tmp_path / f"{result.external_id}.html").read_text(encoding="utf-8")


class _Page(HTMLParser):
    """The page's elements with their attributes, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


async def test_hostile_html_is_sanitised_as_every_channel_does(tmp_path: Path) -> None:
    # bridge.channels.text: script, style and embedded documents go with their content, event handlers go, and
    # only http, https, mailto and tel links stay: the same for the folder's page and document as for the others.
    document, page = await written(tmp_path, element(text=HOSTILE))
    for html in (document["text"]["html"], page):
        shown = parsed(html)
        text = "".join(shown.text)
        for hidden in ("alert", "p{}", "framed", "fallback", "plugin", "tpl"):
            assert hidden not in text, (hidden, html)
        names = {tag for tag, _ in shown.tags}
        assert not names & {"script", "style", "iframe", "noscript", "object", "embed", "template"}, names
        links = [attributes.get("href") for tag, attributes in shown.tags if tag == "a"]
        assert links == ["https://example.org/a", None, None, None], links
        assert not any(name.startswith("on") for _, attributes in shown.tags for name in attributes)
    assert "<p>Body" in document["text"]["html"]


@pytest.mark.parametrize(
    ("headline", "shown"),
    [
        ("AT&amp;T <b>wins</b>", "AT&T wins"),  # as WordPress, NewsML and Mailchimp read a headline
        ("<script>alert(1)</script>Budget", "Budget"),
        ("Tom &lt;3 Jerry", "Tom <3 Jerry"),
    ],
)
async def test_the_page_shows_the_headline_and_lead_as_plain_text(tmp_path: Path, headline: str, shown: str) -> None:
    _, page = await written(tmp_path, element(headline=headline, lead=headline))
    parser = parsed(page)
    texts = [text.strip() for text in parser.text if text.strip()]
    assert texts.count(shown) == 3, texts  # the title, the h1 and the lead
    assert [tag for tag, _ in parser.tags if tag in ("b", "script")] == []
