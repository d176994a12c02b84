"""The NewsML-G2 mapping: item structure, hostile HTML, unicode, versions, cancellation, options, S3 errors.

No package on PyPI ships the NewsML-G2 XML schema (``newsmlg2`` ships the IPTC catalogs only), so items are
checked structurally by ``assert_valid_item``: the parts of the NewsML-G2 2.35 schema that this channel uses —
namespace, required attributes, the order of the itemMeta and contentMeta sequences, QCode aliases, and a
well-formed XHTML document inside inlineXML.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from lxml import etree
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge import __version__
from bridge.channels.newsml import (
    CANCELED,
    NAR,
    USABLE,
    XHTML,
    NewsMLChannel,
    NewsMLOptions,
    S3Target,
    build_item,
    cancel_item,
    canceled_stub,
    derived_version,
    item_text,
    parse_item,
    render,
    s3_error,
)
from bridge.channels.newsml.item import guid_for
from bridge.channels.newsml.xhtml import MAX_BODY_DEPTH
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Schedule
from tests.support import story

FIXTURES = Path(__file__).parents[2] / "fixtures"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
# A folder option that is only validated, never written: no path that may exist (a file at /tmp/x made the
# option checks fail for the wrong key).
UNUSED_FOLDER = "/nonexistent/kordiam-bridge-newsml"
MODIFIED = "2026-11-20T10:00:00Z"

# --- a structural NewsML-G2 check ------------------------------------------------------------------------------

ITEM_META_SEQUENCE = [
    "itemClass", "provider", "versionCreated", "firstCreated", "embargoed", "pubStatus", "role", "fileName",
    "generator", "profile", "service", "title", "edNote", "memberOf", "instanceOf", "signal", "altRep",
    "deliverableOf", "hash", "expires", "origRep", "incomingFeedId", "metadataCreator", "link",
    "itemMetaExtProperty",
]  # fmt: skip
CONTENT_META_ADMIN = [
    "icon", "urgency", "contentCreated", "contentModified", "located", "infoSource", "creator", "contributor",
    "audience", "exclAudience", "altId", "rating", "userInteraction",
]  # fmt: skip
CONTENT_META_DESCRIPTIVE = {
    "language", "keyword", "subject", "genre", "slugline", "headline", "dateline", "by", "creditline",
    "description", "contentMetaExtProperty",
}  # fmt: skip
NEWS_ITEM_SEQUENCE = ["catalogRef|catalog", "hopHistory", "rightsInfo", "itemMeta", "contentMeta", "contentSet"]
REQUIRED_ONCE = ("itemClass", "provider", "versionCreated")
IPTC_ALIASES = {"stat", "ninat", "drol", "nprov"}
QCODE = re.compile(r"^[^\s:]+:\S+$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def assert_in_sequence(children: list[ET.Element], sequence: list[str], where: str) -> None:
    positions = []
    for child in children:
        name = local(child.tag)
        index = next((i for i, names in enumerate(sequence) if name in names.split("|")), None)
        assert index is not None, f"{where}: {name} is not allowed here"
        positions.append(index)
    assert positions == sorted(positions), f"{where}: out of order: {[local(c.tag) for c in children]}"


def assert_valid_item(data: bytes) -> ET.Element:
    """Parse ``data`` and check it against the NewsML-G2 newsItem structure this channel produces."""
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(data)
    assert root.tag == f"{{{NAR}}}newsItem"
    assert root.get("guid"), "guid is required"
    assert root.get("standard") == "NewsML-G2"
    assert re.fullmatch(r"\d+\.\d+", root.get("standardversion", ""))
    assert root.get("conformance") in ("core", "power")
    version = root.get("version", "")
    assert version.isdigit() and int(version) >= 1, "version must be a positive integer"
    for child in root.iter():
        assert child.tag.startswith(f"{{{NAR}}}") or child.tag.startswith(f"{{{XHTML}}}"), child.tag

    children = list(root)
    assert_in_sequence(children, NEWS_ITEM_SEQUENCE, "newsItem")
    assert local(children[0].tag) == "catalogRef", "the IPTC catalog is referenced first"
    assert children[0].get("href", "").startswith("http://www.iptc.org/std/catalog/catalog.IPTC-G2-Standards_")
    declared = IPTC_ALIASES | {s.get("alias", "") for s in root.iterfind(f"{{{NAR}}}catalog/{{{NAR}}}scheme")}
    for scheme in root.iterfind(f"{{{NAR}}}catalog/{{{NAR}}}scheme"):
        assert scheme.get("alias") and scheme.get("uri"), "a scheme needs alias and uri"

    item_meta = root.find(f"{{{NAR}}}itemMeta")
    assert item_meta is not None, "itemMeta is required"
    assert_in_sequence(list(item_meta), ITEM_META_SEQUENCE, "itemMeta")
    for name in REQUIRED_ONCE:
        assert len(item_meta.findall(f"{{{NAR}}}{name}")) == 1, f"itemMeta/{name} exactly once"
    assert item_meta.find(f"{{{NAR}}}itemClass").get("qcode") == "ninat:text"  # type: ignore[union-attr]
    provider = item_meta.find(f"{{{NAR}}}provider")
    assert provider is not None and (provider.get("qcode") or provider.get("literal"))
    assert DATETIME.match(item_meta.findtext(f"{{{NAR}}}versionCreated") or "")
    status = item_meta.find(f"{{{NAR}}}pubStatus")
    assert status is not None and status.get("qcode") in (USABLE, CANCELED, "stat:withheld")

    content_meta = root.find(f"{{{NAR}}}contentMeta")
    if content_meta is not None:
        names = [local(child.tag) for child in content_meta]
        admin = [name for name in names if name not in CONTENT_META_DESCRIPTIVE]
        assert names[: len(admin)] == admin, f"contentMeta: administrative before descriptive: {names}"
        assert_in_sequence(
            [child for child in content_meta if local(child.tag) in CONTENT_META_ADMIN],
            CONTENT_META_ADMIN,
            "contentMeta",
        )
        assert set(names) - set(CONTENT_META_ADMIN) <= CONTENT_META_DESCRIPTIVE
        for prop in content_meta.iterfind(f"{{{NAR}}}contentMetaExtProperty"):
            assert prop.get("rel") and QCODE.match(prop.get("rel", "")), "ext property needs a QCode rel"
            if prop.get("valuedatatype") == "xs:dateTime":
                assert DATETIME.match(prop.get("value", "")), f"{prop.get('rel')}: not an xs:dateTime"
        modified = content_meta.findtext(f"{{{NAR}}}contentModified")
        assert modified is None or DATETIME.match(modified)

    for element in root.iter():
        for attribute in ("qcode", "rel", "role"):
            value = element.get(attribute)
            if value is not None and element.tag.startswith(f"{{{NAR}}}"):
                assert QCODE.match(value), f"{attribute}={value!r} is not a QCode"
                assert value.split(":", 1)[0] in declared, f"scheme alias of {value!r} is not declared"

    content_set = root.find(f"{{{NAR}}}contentSet")
    if content_set is not None:
        inline = content_set.findall(f"{{{NAR}}}inlineXML")
        assert len(inline) == 1 and inline[0].get("contenttype") == "application/xhtml+xml"
        assert not (inline[0].text or "").strip(), "inlineXML holds one element"
        documents = list(inline[0])
        assert len(documents) == 1 and documents[0].tag == f"{{{XHTML}}}html"
        html = documents[0]
        assert [local(c.tag) for c in html] == ["head", "body"]
        assert html.find(f"{{{XHTML}}}head/{{{XHTML}}}title") is not None, "XHTML needs head/title"
        for element in html.iter():
            assert element.tag.startswith(f"{{{XHTML}}}")
            assert local(element.tag) not in {"script", "style", "iframe", "object", "embed", "form"}
            for key, value in element.attrib.items():
                assert not key.startswith("on"), f"event handler {key} kept"
                if key in ("href", "src"):
                    assert not value.strip().lower().startswith(("javascript:", "data:", "vbscript:"))
        words = inline[0].get("wordcount")
        assert words is not None and words.isdigit()
    return root


# --- helpers -----------------------------------------------------------------------------------------------------


def element(title: str = "Council approves budget", *, text: str | None = None, **changes: Any) -> Element:
    data = story(title, platforms=(99004,))
    data.update(id=4711, version=7, modificationDate=MODIFIED)
    data["tasks"][0]["id"] = 31
    data["publications"][0]["id"] = 812
    data["customFields"] = [{"id": 5, "value": "Page 3"}, {"id": 6, "date": "2026-12-01"}, {"id": 7}]
    if text is not None:
        data["tasks"][0]["content"]["text"] = text
    data.update(changes)
    return Element.model_validate(data)


def item(value: Element, **options: Any) -> bytes:
    settings = NewsMLOptions(target=UNUSED_FOLDER, **options)
    root = build_item(value, value.publications[0], options=settings, version=derived_version(value), now=NOW)
    return render(root)


def find(root: ET.Element, path: str) -> ET.Element:
    found = root.find("/".join(f"{{{NAR}}}{part}" for part in path.split("/")))
    assert found is not None, path
    return found


def ext(root: ET.Element) -> dict[str, str]:
    return {p.get("rel", ""): p.get("value", "") for p in root.iter(f"{{{NAR}}}contentMetaExtProperty")}


def body(root: ET.Element) -> ET.Element:
    found = root.find(f".//{{{XHTML}}}body")
    assert found is not None
    return found


# --- mapping -------------------------------------------------------------------------------------------------------


def test_item_carries_the_story() -> None:
    root = assert_valid_item(item(element(), language="de", provider="nprov:EXAMPLE"))
    assert root.get("guid") == "urn:kordiam:4711:812"
    assert root.get("version") == str(int(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC).timestamp()))
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
    assert find(root, "itemMeta/pubStatus").get("qcode") == USABLE
    assert find(root, "itemMeta/provider").get("qcode") == "nprov:EXAMPLE"
    assert find(root, "itemMeta/versionCreated").text == "2026-11-20T10:00:00Z"
    assert find(root, "itemMeta/fileName").text == "kordiam-4711-812.xml"
    assert find(root, "itemMeta/edNote").text == "Check the figures with the finance desk."
    assert find(root, "contentMeta/headline").text == "Council approves budget"
    assert find(root, "contentMeta/slugline").text == "council-approves-budget"
    assert find(root, "contentMeta/by").text == "Anna Berg"
    assert find(root, "contentMeta/creator/name").text == "Anna Berg"
    assert find(root, "contentMeta/description").text == "The lead."
    assert find(root, "contentMeta/language").get("tag") == "de"
    subject = find(root, "contentMeta/subject")
    assert subject.get("qcode") == "kdmcat:90000" and find(subject, "name").text == "Politics"
    props = ext(root)
    assert props["kdm:plannedIssueDate"] == "2026-11-23"
    assert props["kdm:plannedTime"] == "2026-11-23T19:30:00Z"
    assert props["kdm:elementId"] == "4711" and props["kdm:publicationId"] == "812"
    assert props["kdm:platformId"] == "99004" and props["kdm:publicationStatus"] == "No Status"
    assert props["kdmfield:5"] == "Page 3" and props["kdmfield:6"] == "2026-12-01"
    assert "kdmfield:7" not in props, "a custom field without a value is left out"
    html = body(root)
    assert ET.tostring(html, encoding="unicode").count("<html:b>") == 1
    assert "".join(html.itertext()) == "Body text."
    assert find(root, "contentSet/inlineXML").get("wordcount") == "2"


def test_provider_literal_and_defaults() -> None:
    root = assert_valid_item(item(element()))
    assert find(root, "itemMeta/provider").get("literal") == "kordiam-bridge"
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") is None
    assert root.find(f"{{{NAR}}}contentMeta/{{{NAR}}}language") is None


HOSTILE = [
    "<script>alert(1)</script><p>after</p>",
    '<img src="x" onerror="alert(1)"><a href="javascript:alert(1)">j</a><a href="data:text/html,x">d</a>',
    "<p>a&nbsp;b &amp; &bogus; &lt;not a tag&gt; &#x1F600; &#0;</p>",
    "<b>unclosed <i>nested <p>para",
    "</p></div>stray end tags<br><br/><hr>",
    "<![CDATA[ ]]> ]]> <!-- comment --> <?php echo 1; ?>",
    '<p style="x" class="y" id="z" onclick="evil()">attributes</p><svg><script>1</script></svg>',
    "<iframe src='https://evil.example'></iframe><object data='x'></object><form><input></form>",
    "control \x00\x01\x08\x0b\x0c\x1f and \ud800 lone surrogate, \ufffe noncharacter",
    '<a href="https://example.org/?a=1&b=2" title="&quot;q&quot; <x>">link</a>',
    "<table><tr><td colspan=2>cell</td></tr></table><ul><li>one<li>two</ul>",
    "<math><mi>x</mi></math><style>p{}</style><template><p>t</p></template>",
    "plain text without any tags & an ampersand",
    "<p dir='rtl' lang='ar'>مرحبا</p><p>Grüße 😀 👩‍👩‍👧 𝔘𝔫𝔦𝔠𝔬𝔡𝔢</p>",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_html_becomes_well_formed_sanitised_xhtml(text: str) -> None:
    root = assert_valid_item(item(element(text=text)))
    serialised = ET.tostring(body(root), encoding="unicode")
    for forbidden in ("alert", "evil", "onerror", "onclick", "javascript", "<script", "style=", "php"):
        assert forbidden not in serialised


def test_entities_and_characters_survive_as_text() -> None:
    root = assert_valid_item(item(element(text=HOSTILE[2] + HOSTILE[8] + HOSTILE[13])))
    text = "".join(body(root).itertext())
    assert "a\u00a0b & &bogus; <not a tag> 😀" in text
    assert "\x00" not in text and "\x01" not in text and "\ufffe" not in text
    assert "مرحبا" in text and "Grüße 😀 👩‍👩‍👧 𝔘𝔫𝔦𝔠𝔬𝔡𝔢" in text
    rtl = next(p for p in body(root).iter(f"{{{XHTML}}}p") if p.get("dir"))
    assert rtl.get("dir") == "rtl" and rtl.get("lang") == "ar"


def test_links_tables_and_lists_keep_their_structure() -> None:
    root = assert_valid_item(item(element(text=HOSTILE[9] + HOSTILE[10])))
    link = next(body(root).iter(f"{{{XHTML}}}a"))
    assert link.get("href") == "https://example.org/?a=1&b=2" and link.get("title") == '"q" <x>'
    assert [li.text for li in body(root).iter(f"{{{XHTML}}}li")] == ["one", "two"]
    assert next(body(root).iter(f"{{{XHTML}}}td")).get("colspan") == "2"


def depth(element: ET.Element) -> int:
    """How many levels of elements ``element`` holds (itself included); no recursion, for deep trees."""
    deepest, level = 0, [(element, 1)]
    while level:
        node, at = level.pop()
        deepest = max(deepest, at)
        level.extend((child, at + 1) for child in node)
    return deepest


def test_html_nested_deeper_than_a_reader_parses_is_flattened_keeping_its_text() -> None:
    # 1,200 nested divs are legal HTML, 12 KB of it: the item was a RecursionError (an unknown error for the
    # channel's breaker, retried to the DLQ), and nested deeper than libxml2's 256 levels no print system reads it.
    nested = "<div>" * 1200 + "<b>deep</b> text" + "</div>" * 1200 + "<p>after</p>"
    data = item(element(text=nested))
    root = assert_valid_item(data)
    etree.fromstring(data)  # libxml2 with its default limits, as a consumer reads it
    story_body = body(root)
    assert depth(story_body) <= MAX_BODY_DEPTH + 1
    assert "".join(story_body.itertext()) == "deep textafter"
    assert [local(child.tag) for child in story_body] == ["div", "p"], "what follows the deep part stays beside it"


def test_hostile_metadata_is_plain_text() -> None:
    value = element(
        "Tom & Jerry <i>live</i> 😀",
        note="<script>x()</script>Call <b>desk</b>\x07",
        slug="tom-&-jerry",
        customFields=[{"id": 9, "value": 'a"b<c>&\x02d'}],
    )
    root = assert_valid_item(item(value))
    assert find(root, "contentMeta/headline").text == "Tom & Jerry live 😀"
    assert find(root, "itemMeta/edNote").text == "Call desk"
    assert find(root, "contentMeta/slugline").text == "tom-&-jerry"
    assert ext(root)["kdmfield:9"] == 'a"b<c>&d'
    title = root.find(f".//{{{XHTML}}}title")
    assert title is not None and title.text == "Tom & Jerry live 😀"


def test_headline_falls_back_to_title_slug_and_id() -> None:
    data = story("Only a title", platforms=(99004,))
    data.update(id=5, tasks=[])
    data["publications"][0]["id"] = 6
    root = assert_valid_item(item(Element.model_validate(data)))
    assert find(root, "contentMeta/headline").text == "Only a title"
    assert root.find(f"{{{NAR}}}contentMeta/{{{NAR}}}by") is None
    data.update(title=None)
    assert find(ET.fromstring(item(Element.model_validate(data))), "contentMeta/headline").text == "only-a-title"
    data.update(slug=None)
    assert find(ET.fromstring(item(Element.model_validate(data))), "contentMeta/headline").text == "Kordiam element 5"


@pytest.mark.parametrize("name", ["seed001_full.json", "seed002_full.json"])
def test_seed_examples_make_valid_items(name: str) -> None:
    value = Element.model_validate(json.loads((FIXTURES / name).read_text()))
    for publication in value.publications:
        settings = NewsMLOptions(target=UNUSED_FOLDER)
        root = build_item(value, publication, options=settings, version=derived_version(value), now=NOW)
        assert_valid_item(render(root))


def test_seed002_text_and_issue_date() -> None:
    value = Element.model_validate(json.loads((FIXTURES / "seed002_full.json").read_text()))
    root = assert_valid_item(item(value))
    assert find(root, "contentMeta/headline").text == "_headline_"
    assert "".join(body(root).itertext()) == "TEXT"
    assert ext(root)["kdm:plannedIssueDate"] == "2016-07-22"
    assert "kdm:plannedTime" not in ext(root), "a date without a time has no planned time"
    assert root.get("version") == "1", "no modificationDate and no version: 1"


# --- versions, rendering, cancellation ------------------------------------------------------------------------------


def test_version_comes_from_kordiam() -> None:
    assert derived_version(element()) == int(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC).timestamp())
    assert derived_version(element(modificationDate=None)) == 7
    assert derived_version(element(modificationDate=None, version=None)) == 1
    later = element(modificationDate="2026-11-20T10:00:01.900Z")
    assert derived_version(later) == derived_version(element()) + 1


def test_dates_before_the_year_1000_keep_four_digit_years() -> None:
    # xs:dateTime needs at least four year digits; strftime("%Y") writes year 999 as "999" on glibc.
    old = element(modificationDate="0999-06-01T08:00:00Z")
    schedule = Schedule(date=dt.date(1, 1, 1), time=dt.time(19, 30))
    old = old.model_copy(update={"publications": (old.publications[0].model_copy(update={"schedule": schedule}),)})
    root = assert_valid_item(item(old))
    assert find(root, "itemMeta/versionCreated").text == "0999-06-01T08:00:00Z"
    assert find(root, "contentMeta/contentModified").text == "0999-06-01T08:00:00Z"
    assert ext(root)["kdm:plannedTime"] == "0001-01-01T19:30:00Z"
    assert ext(root)["kdm:plannedIssueDate"] == "0001-01-01"


def test_render_writes_the_bytes_of_the_hand_written_serialiser() -> None:
    # tests/fixtures/newsml_item.xml was written by the serialiser lxml replaced: the same item, the same bytes.
    written = (FIXTURES / "newsml_item.xml").read_bytes()
    expected = written.replace(b'versioninfo="0.1.0"', f'versioninfo="{__version__}"'.encode())
    assert item(element(text="".join(HOSTILE)), language="de") == expected


def test_render_is_deterministic_and_round_trips() -> None:
    data = item(element(text=HOSTILE[3] + HOSTILE[13]))
    assert data == item(element(text=HOSTILE[3] + HOSTILE[13]))
    stored = parse_item(data)
    assert render(stored.root) == data
    assert stored.pub_status == USABLE and stored.version == derived_version(element())
    assert stored.version_created == "2026-11-20T10:00:00Z"


def test_cancel_keeps_the_content_and_grows_the_version() -> None:
    stored = parse_item(item(element()))
    cancel_item(stored.root, stored.version + 1, NOW)
    root = assert_valid_item(render(stored.root))
    assert root.get("version") == str(stored.version + 1)
    assert find(root, "itemMeta/pubStatus").get("qcode") == CANCELED
    assert find(root, "itemMeta/versionCreated").text == "2026-11-22T12:00:00Z"
    notes = [note.text for note in root.iter(f"{{{NAR}}}edNote")]
    assert notes[0] == "Check the figures with the finance desk." and notes[-1].startswith("Canceled")  # type: ignore[union-attr]
    assert find(root, "contentMeta/headline").text == "Council approves budget"


def test_canceled_stub_is_a_valid_item() -> None:
    root = canceled_stub("urn:kordiam:1:2", 1_800_000_000, options=NewsMLOptions(target=UNUSED_FOLDER), now=NOW)
    parsed = assert_valid_item(render(root))
    assert find(parsed, "itemMeta/pubStatus").get("qcode") == CANCELED
    assert parsed.find(f"{{{NAR}}}contentSet") is None


def test_parse_rejects_what_is_not_a_news_item() -> None:
    for data in (
        b"not xml",
        b"<newsItem/>",
        f'<newsItem xmlns="{NAR}" version="x"/>'.encode(),
        f'<newsItem xmlns="{NAR}" version="3"/>'.encode(),  # no itemMeta: it could not be canceled
    ):
        with pytest.raises(ValueError):
            parse_item(data)


def test_plain_text_collapses_and_cleans() -> None:
    assert item_text(" a \n <b>b</b>&amp;c\t ") == "a b&c"
    assert item_text(None) == "" and item_text("") == ""


# --- options -------------------------------------------------------------------------------------------------------


def test_s3_target_is_parsed() -> None:
    options = NewsMLOptions(target="s3://print-in/hot/folder", endpoint_url="http://127.0.0.1:4566")
    assert options.is_s3 and options.s3.bucket == "print-in" and options.s3.prefix == "hot/folder/"
    assert NewsMLOptions(target="s3://print-in").s3.prefix == ""
    assert NewsMLOptions(target="s3://print-in/a/").s3.prefix == "a/"


def test_folder_target_accepts_paths_and_file_uris(tmp_path: Path) -> None:
    assert NewsMLOptions(target=str(tmp_path)).folder == tmp_path
    assert NewsMLOptions(target=tmp_path.as_uri()).folder == tmp_path
    assert not NewsMLOptions(target=str(tmp_path)).is_s3


@pytest.mark.parametrize(
    "options",
    [
        {"target": "s3://Bad_Bucket/x"},
        {"target": "s3://ab/x"},
        {"target": "s3://bucket/x?y=1"},
        {"target": "ftp://host/x"},
        {"target": "file://remote-host/x"},
        {"target": UNUSED_FOLDER, "endpoint_url": "http://127.0.0.1:4566"},
        {"target": UNUSED_FOLDER, "region": "eu-central-1"},
        {"target": "s3://bucket/x", "endpoint_url": "localhost:4566"},
        {"target": UNUSED_FOLDER, "guid_prefix": "urn:with space:"},
        {"target": UNUSED_FOLDER, "file_prefix": "../escape"},
        {"target": UNUSED_FOLDER, "language": "not a tag"},
        {"target": UNUSED_FOLDER, "unknown": 1},
        {"target": ""},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NewsMLOptions.model_validate(options)


@pytest.mark.parametrize(
    ("key", "value"),
    [("provider", "nprov:EXAMPLE\x01"), ("provider", "Example\x00Press"), ("guid_prefix", "urn:\x1b:")],
)
def test_options_xml_cannot_carry_are_refused_at_start_naming_the_key(key: str, value: str) -> None:
    """Both are written into every item: a character XML 1.0 forbids would fail every message (lxml refuses to
    write it), so it is refused when the worker starts, naming the key (provider, a name, by the rule of every name:
    no control character)."""
    refused = "(contains a character XML 1.0 cannot carry|must not contain a line break or control character)"
    with pytest.raises(ValidationError, match=rf"{key}\n  Value error, {refused}"):
        NewsMLOptions.model_validate({"target": UNUSED_FOLDER, key: value})


@pytest.mark.parametrize("target", [" ", "file://", "file://localhost"])
def test_a_blank_folder_target_is_refused_not_read_as_the_working_directory(target: str) -> None:
    # Path("") is ".": an empty template variable would have the worker write its items where it was started, as
    # the folder channel's empty path would (it is refused there too).
    with pytest.raises(ValidationError, match="target\n  Value error, must not be empty"):
        NewsMLOptions(target=target)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("s3://[print-in]/hot/", "'[print-in]' is not a valid S3 bucket name (write s3://bucket/prefix/)"),
        ("s3://[print-in/hot/", "'[print-in' is not a valid S3 bucket name (write s3://bucket/prefix/)"),
        ("file://[::1/srv/print", "a file:// target must be local (file:///path)"),
    ],
)
def test_a_target_with_brackets_is_refused_in_the_channel_s_words(target: str, problem: str) -> None:
    # Before: urlparse's "'print-in' does not appear to be an IPv4 or IPv6 address", "Invalid IPv6 URL".
    with pytest.raises(ValidationError) as raised:
        NewsMLOptions(target=target)
    assert raised.value.errors()[0]["msg"] == f"Value error, {problem}"


def test_a_file_as_target_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        NewsMLOptions(target=str(file))


# --- S3 error classes ----------------------------------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code} message"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [("AccessDenied", 403), ("NoSuchBucket", 404), ("InvalidAccessKeyId", 403), ("InvalidArgument", 400)],
)
def test_s3_refusals_are_permanent(code: str, status: int) -> None:
    error = s3_error(client_error(code, status), "newsml channel 'print'", "writing s3://b/k")
    assert isinstance(error, ChannelRejected)
    assert "newsml channel 'print'" in str(error) and code in str(error)


@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("Throttling", 400), ("InternalError", 500), ("ServiceUnavailable", 503), ("", 502)],
)
def test_s3_throttling_and_outages_are_transient(code: str, status: int) -> None:
    assert isinstance(s3_error(client_error(code, status), "x", "y"), ChannelUnavailable)


def test_s3_connection_and_credential_errors() -> None:
    unreachable = s3_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "x", "y")
    assert isinstance(unreachable, ChannelUnavailable)
    assert isinstance(s3_error(NoCredentialsError(), "x", "y"), ChannelRejected)


class RefusingS3:
    """Stands in for the aiobotocore client: answers every GetObject with one error code."""

    def __init__(self, code: str, status: int) -> None:
        self.code, self.status = code, status

    async def get_object(self, **_: Any) -> Any:
        raise client_error(self.code, self.status)


@pytest.mark.parametrize(("code", "status"), [("NoSuchKey", 404), ("AccessDenied", 403)])
async def test_s3_read_back_that_is_missing_or_denied_is_no_item(code: str, status: int) -> None:
    target = S3Target("newsml channel 'print'", NewsMLOptions(target="s3://print-in/hot/"))
    target._client = RefusingS3(code, status)  # a write-only hot folder answers 403 for reads
    assert await target.read("kordiam-1-2.xml") is None


async def test_s3_read_back_other_errors_are_raised() -> None:
    target = S3Target("newsml channel 'print'", NewsMLOptions(target="s3://print-in/hot/"))
    target._client = RefusingS3("NoSuchBucket", 404)
    with pytest.raises(ChannelRejected, match="NoSuchBucket"):
        await target.read("kordiam-1-2.xml")
    target._client = RefusingS3("SlowDown", 503)
    with pytest.raises(ChannelUnavailable):
        await target.read("kordiam-1-2.xml")


class BrokenBody:
    """A GetObject body whose connection is reset mid-way (aiohttp's error, which aiobotocore passes on as is)."""

    async def __aenter__(self) -> BrokenBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read(self) -> bytes:
        raise aiohttp.ClientPayloadError("Response payload is not completed")


class ResettingS3:
    async def get_object(self, **_: Any) -> Any:
        return {"Body": BrokenBody()}


async def test_s3_read_back_cut_off_mid_body_is_unavailable() -> None:
    target = S3Target("newsml channel 'print'", NewsMLOptions(target="s3://print-in/hot/"))
    target._client = ResettingS3()
    with pytest.raises(ChannelUnavailable, match="S3 unreachable: Response payload is not completed"):
        await target.read("kordiam-1-2.xml")


# --- finding a deleted element's items (FindsItems) ----------------------------------------------------------------


async def test_find_items_lists_the_elements_items_not_canceled_yet_and_no_other_elements(tmp_path: Path) -> None:
    channel = NewsMLChannel("print", NewsMLOptions(target=str(tmp_path)))
    story_4711 = element()  # publication 812
    second = story_4711.publications[0].model_copy(update={"id": 813})
    story_47110 = element(id=47110)  # its names start "47110-": not element 4711's
    for value, publication in ((story_4711, story_4711.publications[0]), (story_4711, second)):
        await channel.upsert(value, publication, None)
    await channel.upsert(story_47110, story_47110.publications[0], None)
    (tmp_path / "4711-notes.txt").write_text("an editor's file beside the items")
    await channel.delete(4711, 813, "")  # canceled already: nothing left to retract
    found = await channel.find_items(4711)
    assert [(f.publication_id, f.external_id) for f in found] == [(812, guid_for("urn:kordiam:", 4711, 812))]
    assert await channel.find_items(4712) == []


class UnlistableS3(RefusingS3):
    """A write-only hot folder: S3 refuses ListObjectsV2 (no s3:ListBucket) as it does GetObject."""

    async def list_objects_v2(self, **_: Any) -> Any:
        raise client_error(self.code, self.status)


async def test_a_hot_folder_that_cannot_be_listed_is_not_searched_and_said_once() -> None:
    target = S3Target("newsml channel 'print'", NewsMLOptions(target="s3://print-in/hot/"))
    target._client = UnlistableS3("AccessDenied", 403)
    with capture_logs() as logs:
        assert await target.names("4711-") is None
        assert await target.names("4712-") is None
    assert [e["event"] for e in logs] == ["newsml.cannot_list"]
    target._client = UnlistableS3("SlowDown", 503)
    with pytest.raises(ChannelUnavailable):
        await target.names("4711-")


async def test_a_news_item_at_the_items_name_that_is_not_one_of_ours_is_replaced_when_canceled(
    tmp_path: Path,
) -> None:
    """A newsItem without itemMeta at the item's name (written there by something else) cannot be canceled in
    place; delete writes the canceled item over it, as over any other unreadable file, instead of failing with a
    bare ValueError on every retry."""
    channel = NewsMLChannel("print", NewsMLOptions(target=str(tmp_path)))
    (tmp_path / "kordiam-4711-813.xml").write_bytes(f'<newsItem xmlns="{NAR}" guid="other" version="3"/>'.encode())
    with capture_logs() as logs:
        await channel.delete(4711, 813, "urn:kordiam:4711:813")
    root = assert_valid_item((tmp_path / "kordiam-4711-813.xml").read_bytes())
    assert find(root, "itemMeta/pubStatus").get("qcode") == CANCELED
    assert root.get("guid") == "urn:kordiam:4711:813"
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["newsml.unreadable_item"]
