"""The channels' shared text helpers (``bridge.channels.text``): sanitising and plain text."""

from __future__ import annotations

import pytest

from bridge.channels.text import HtmlPolicy, plain_text, sanitize_html, strip_tags, without_surrogates, xml_text

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
