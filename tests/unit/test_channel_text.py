"""The channels' shared helpers: text (``bridge.channels.text``) and the HTTP-error mapping (``http_errors``)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bridge.channels.http_errors import http_error, response_json, server_message, unreachable
from bridge.channels.text import (
    HtmlPolicy,
    plain_text,
    sanitize_html,
    strip_tags,
    without_surrogates,
    xml_text,
)
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import HttpRequest, HttpResponse, HttpTimeout

PARAGRAPHS = HtmlPolicy(tags=frozenset({"p", "a"}), attributes={"*": frozenset({"lang"}), "a": frozenset({"href"})})


def test_sanitize_keeps_only_the_policy() -> None:
    text = '<p lang="de" class="x">A <a href="https://x.example/" title="t">b</a> <em>c</em></p>'
    assert sanitize_html(text, PARAGRAPHS) == '<p lang="de">A <a href="https://x.example/">b</a> c</p>'


def test_sanitize_drops_unsafe_content_and_schemes() -> None:
    text = '<p>ok<script>alert(1)</script><style>p{}</style><iframe>f</iframe><a href="javascript:alert(2)">x</a></p>'
    assert sanitize_html(text, PARAGRAPHS) == "<p>ok<a>x</a></p>"
    mail = '<a href="mailto:desk@example.org">m</a><a href="tel:+1">t</a><a href="data:text/html,x">d</a>'
    assert sanitize_html(mail, PARAGRAPHS) == '<a href="mailto:desk@example.org">m</a><a href="tel:+1">t</a><a>d</a>'
    with pytest.raises(ValueError):  # nh3 refuses a policy that would keep what is always dropped
        sanitize_html("x", HtmlPolicy(tags=frozenset({"script"}), attributes={}))


def test_strip_tags_keeps_entities_escaped() -> None:
    assert strip_tags("<b>Tom</b> & Jerry <script>x()</script>") == "Tom &amp; Jerry "


def test_plain_text_decodes_collapses_and_filters_twice() -> None:
    assert plain_text("  a <b>b</b>\n&lt;c&gt; ") == "a b <c>"
    assert plain_text(None) == "" and plain_text("") == ""
    assert plain_text("a\ud800b") == "ab"
    # An entity may decode to a character XML cannot carry: ``keep`` runs after the decoding too.
    assert plain_text("x&#12;y\x01z", keep=xml_text) == "xyz"
    assert plain_text("x&#12;y") == "x y"  # without the XML filter, a form feed is whitespace


def test_character_filters() -> None:
    assert without_surrogates("a\ud800b\U0001f680") == "ab\U0001f680"
    assert xml_text("a\x00\x01\x0bb\tc\ufffe") == "ab\tc"


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> HttpResponse:
    request = HttpRequest("GET", URL("https://cms.example/x"), CIMultiDict(), None, 5.0)
    return HttpResponse(status, CIMultiDictProxy(CIMultiDict(headers or {})), body, request)


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_unavailable_with_retry_after(status: int) -> None:
    error = http_error(_response(status, headers={"Retry-After": "7"}), "cms", "create", refused="check token")
    assert isinstance(error, ChannelUnavailable) and error.retry_after == 7


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_rejected_naming_what_to_check(status: int) -> None:
    error = http_error(_response(status, b'{"message": "bad token"}'), "cms", "create", refused="check token")
    assert isinstance(error, ChannelRejected)
    assert str(error) == f"cms: create: HTTP {status} bad token — check token"


def test_other_answers_are_rejected_with_the_server_message() -> None:
    error = http_error(_response(422, b'{"code": "invalid", "message": "no title"}'), "cms", "create", refused="-")
    assert isinstance(error, ChannelRejected) and str(error) == "cms: create: HTTP 422 invalid: no title"
    moved = http_error(_response(301, headers={"Location": "https://new.example/"}), "cms", "get", refused="-")
    assert isinstance(moved, ChannelRejected) and "redirected to https://new.example/" in str(moved)
    assert server_message(_response(502, b"<html> Bad\n gateway </html>")) == "<html> Bad gateway </html>"


def test_no_answer_is_unavailable() -> None:
    error = unreachable("cms", "create", "https://cms.example/x", HttpTimeout(""))
    assert (
        isinstance(error, ChannelUnavailable)
        and str(error) == "cms: create: https://cms.example/x unreachable: HttpTimeout"
    )


def test_response_json() -> None:
    assert response_json(_response(200, b'{"id": 1}'), "cms", "create") == {"id": 1}
    assert response_json(_response(204), "cms", "delete") is None
    with pytest.raises(ChannelRejected, match="not JSON"):
        response_json(_response(200, b"<html>"), "cms", "create")
