"""``newsml``: each publication as an IPTC NewsML-G2 ``newsItem`` in a print system's hot folder (S3 or local).

Print systems ingest through hot folders, and NewsML-G2 is the news industry's exchange format. For every
publication this channel writes one XML file, ``{file_prefix}{element}-{publication}.xml``, into ``target``: an
S3 prefix (``s3://bucket/prefix/``, one ``PutObject``, which is atomic) or a local folder (a hidden temporary file
``.NAME.*.tmp`` in the same folder, fsynced and renamed into place, so a watcher matching ``*.xml`` never sees half
a file). The name is deterministic, so a re-sent story replaces its file.

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``target`` (required): ``s3://bucket/prefix/`` or a folder path (``file:///…`` accepted). A prefix without a
  trailing ``/`` is taken as a folder all the same.
- ``endpoint_url`` (S3 only, optional): MinIO, LocalStack or moto; ``region`` (S3 only, optional: the AWS
  default chain's). S3 credentials come from the standard AWS chain (environment, profile, instance role), never
  from this file. They need ``s3:PutObject`` on the prefix, and should have ``s3:GetObject`` and
  ``s3:ListBucket`` so the channel can read its last item back (see "Versions"); without them it carries on
  with versions from Kordiam alone.
- ``provider`` = "kordiam-bridge": the item's provider, a QCode if it contains ``:`` (``nprov:EXAMPLE``), else a
  literal.
- ``guid_prefix`` = "urn:kordiam:": the guid is ``{guid_prefix}{element}:{publication}``. Changing it later gives
  every story a new identity in the print system.
- ``file_prefix`` = "kordiam-", ``language`` (optional BCP 47 tag: ``xml:lang`` and ``<language>``),
  ``timeout`` = 10 (S3 connect/read seconds).

Mapping, Kordiam → NewsML-G2 (standard version 2.35, ``conformance="power"``):

===========================  =====================================================================================
newsItem/@guid               ``{guid_prefix}{element id}:{publication id}``, stable for the publication's life
newsItem/@version            see "Versions" below
itemMeta/pubStatus           ``stat:usable``; ``stat:canceled`` when the publication is retracted (see "Delete")
itemMeta/versionCreated      the element's ``modificationDate`` (UTC), else the time of writing
itemMeta/fileName            the file's own name; ``generator`` = kordiam-bridge and its version
itemMeta/edNote              the element's note (plain text)
contentMeta/contentModified  the element's ``modificationDate``
contentMeta/creator, by      the text task's assignee (display name, else e-mail)
contentMeta/headline         the text task's headline, else the element title, else its slug (plain text)
contentMeta/slugline         the element's slug
contentMeta/description      the text task's lead, ``role="drol:summary"`` (plain text)
contentMeta/subject          the publication category: ``qcode="kdmcat:{id}"`` with its name
contentMetaExtProperty       ``kdm:plannedIssueDate`` (xs:date), ``kdm:plannedTime`` (xs:dateTime, UTC),
                             ``kdm:elementId``, ``kdm:publicationId``, ``kdm:platformId``, ``kdm:publicationStatus``,
                             ``kdm:pageElementType``, and one ``kdmfield:{id}`` per custom field with a value
contentSet/inlineXML         the text task's HTML as an XHTML document (``application/xhtml+xml``), with
                             ``wordcount``
===========================  =====================================================================================

The aliases ``kdm``, ``kdmcat`` and ``kdmfield`` are declared in an inline ``<catalog>`` (``urn:kordiam:…``);
``stat``, ``ninat``, ``drol`` come from the IPTC catalog referenced by ``catalogRef``.

Body: the story's HTML is sanitised with nh3 (no script/style with their content, no event handlers, no
``javascript:``/``data:`` URLs; keeps p, br, h2–h6, lists, tables, blockquote, a[href], img[src alt], b/strong,
i/em, u, s, sub, sup, …), then parsed again and written as XHTML elements, so the item is always well-formed
XML: HTML entities such as ``&nbsp;`` become characters, unclosed tags are closed, and characters XML 1.0
cannot carry (control characters, lone surrogates) are dropped.

Versions: a NewsML-G2 receiver keeps the highest ``version`` of a guid, so the version must grow with each
change and never go back. It is derived from Kordiam, never from the clock: the element's ``modificationDate``
as Unix seconds (else ``element.version``, else 1). Seconds are comparable with the clock, which lets a
cancellation (``delete()`` receives no element) outrank the last version sent even when the consumer has
already taken the file away. Before writing, the channel reads the item it wrote last (one GET/read); if that
already has this version or a higher one (two changes in one second, a re-added publication after a
cancellation, an item without ``modificationDate``), the new item gets that version + 1 — unless it is the same
item again (a re-send), which is then not written at all.

Delete: print systems need to learn about a cancellation, so the file is not removed: the item is written again
with ``pubStatus`` ``stat:canceled``, its version + 1 and an editorial note, keeping its content so the desk
sees what was withdrawn. Deleting an already canceled item changes nothing. If the file is gone (a consuming hot
folder), a minimal canceled item (guid, itemMeta) is written, versioned with the current Unix time — the one
case where the clock decides, because no earlier version is known.

Result: ``external_id`` = the guid, ``edit_link`` = ``open_link`` = the file's ``s3://…`` or ``file://…`` URI,
``live`` = False (print goes live when the paper is printed, which the bridge cannot see).

Errors: S3 ``AccessDenied``, ``NoSuchBucket``, bad credentials and other 4xx → ``ChannelRejected``; throttling,
5xx, timeouts and connection errors → ``ChannelUnavailable``; a folder that cannot be written →
``ChannelRejected``. botocore retries a blip in-process (standard mode, 3 attempts); beyond that the queue
retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge import __version__
from bridge.channels.base import Channel, ChannelContext, ChannelResult
from bridge.channels.files import atomic_write, os_error
from bridge.channels.text import HtmlPolicy, plain_text, sanitize_html, xml_text
from bridge.config import ChannelSettings
from bridge.errors import BridgeError, ChannelRejected, ChannelUnavailable
from bridge.kordiam.models import Element, Publication

log = structlog.get_logger(__name__)

NAR = "http://iptc.org/std/nar/2006-10-01/"
XHTML = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"
STANDARD_VERSION = "2.35"
IPTC_CATALOG = "http://www.iptc.org/std/catalog/catalog.IPTC-G2-Standards_41.xml"
MEDIA_TYPE = "application/vnd.iptc.g2.newsitem+xml"
USABLE = "stat:usable"
CANCELED = "stat:canceled"
SCHEMES = {
    "kdm": "urn:kordiam:property:",
    "kdmcat": "urn:kordiam:category:",
    "kdmfield": "urn:kordiam:customfield:",
}

# --- options -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class NewsMLOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(min_length=1)
    endpoint_url: str | None = None
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    provider: str = Field(default="kordiam-bridge", min_length=1, max_length=200)
    guid_prefix: str = Field(default="urn:kordiam:", pattern=r"^\S+$", max_length=200)
    file_prefix: str = Field(default="kordiam-", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$|^$")
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("s3://"):
            _parse_s3(value)  # raises ValueError with the reason
            return value
        path = _folder_path(value)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @model_validator(mode="after")
    def _s3_keys_need_s3(self) -> NewsMLOptions:
        if not self.is_s3 and (self.endpoint_url is not None or self.region is not None):
            raise ValueError("endpoint_url and region apply to an s3:// target only")
        return self

    @property
    def is_s3(self) -> bool:
        return self.target.startswith("s3://")

    @property
    def s3(self) -> S3Location:
        return _parse_s3(self.target)

    @property
    def folder(self) -> Path:
        return _folder_path(self.target)


def _parse_s3(target: str) -> S3Location:
    parsed = urlparse(target)
    bucket = parsed.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (write s3://bucket/prefix/)")
    if parsed.query or parsed.fragment:
        raise ValueError("an s3:// target takes no ?query or #fragment")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if "//" in prefix:
        raise ValueError("the S3 prefix must not contain empty path segments")
    return S3Location(bucket, prefix)


def _folder_path(target: str) -> Path:
    if target.startswith("file://"):
        parsed = urlparse(target)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError("a file:// target must be local (file:///path)")
        return Path(unquote(parsed.path))
    if "://" in target:
        raise ValueError("must be s3://bucket/prefix/ or a folder path")
    return Path(target).expanduser()


# --- the body's XHTML ---------------------------------------------------------------------------------------

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


def item_text(text: str | None) -> str:
    """A headline, lead or note as plain text an XML item can carry."""
    return plain_text(text, keep=xml_text)


class _XhtmlBuilder(HTMLParser):
    """Sanitised HTML → XHTML elements under ``parent``; entities decoded, every element closed."""

    def __init__(self, parent: ET.Element) -> None:
        super().__init__(convert_charrefs=True)
        self._stack = [parent]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=tag in VOID_TAGS)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, void=True)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], *, void: bool) -> None:
        if tag not in BODY_HTML.tags:  # nh3 has removed these already; never trust one layer alone
            return
        allowed = BODY_HTML.allowed_attributes(tag)
        attributes = {name: xml_text(value or "") for name, value in attrs if name in allowed}
        element = ET.SubElement(self._stack[-1], f"{{{XHTML}}}{tag}", attributes)
        if not void:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
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


# --- the item --------------------------------------------------------------------------------------------------


def guid_for(guid_prefix: str, element_id: int, publication_id: int) -> str:
    return f"{guid_prefix}{element_id}:{publication_id}"


def file_name(file_prefix: str, element_id: int, publication_id: int) -> str:
    return f"{file_prefix}{element_id}-{publication_id}.xml"


def derived_version(element: Element) -> int:
    """The version Kordiam's data gives: ``modificationDate`` in Unix seconds, else ``element.version``, else 1."""
    if element.modification_date is not None:
        return max(1, int(element.modification_date.timestamp()))
    if element.version is not None and element.version > 0:
        return element.version
    return 1


def g2_datetime(moment: dt.datetime) -> str:
    """An ``xs:dateTime`` in UTC, to the second, with ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nar(parent: ET.Element, local: str, text: str | None = None, /, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NAR}}}{local}", attributes)
    if text is not None:
        element.text = text
    return element


def _provider(item_meta: ET.Element, provider: str) -> None:
    if ":" in provider:
        _nar(item_meta, "provider", qcode=provider)
    else:
        _nar(item_meta, "provider", literal=provider)


def _ext(content_meta: ET.Element, rel: str, value: str, datatype: str | None = None) -> None:
    attributes = {"rel": rel, "value": xml_text(value)}
    if datatype:
        attributes["valuedatatype"] = datatype
    _nar(content_meta, "contentMetaExtProperty", **attributes)


def _item_root(guid: str, version: int, language: str | None) -> ET.Element:
    root = ET.Element(
        f"{{{NAR}}}newsItem",
        {
            "guid": guid,
            "version": str(version),
            "standard": "NewsML-G2",
            "standardversion": STANDARD_VERSION,
            "conformance": "power",
        },
    )
    if language:
        root.set(f"{{{XML_NS}}}lang", language)
    _nar(root, "catalogRef", href=IPTC_CATALOG)
    catalog = _nar(root, "catalog")
    for alias, uri in SCHEMES.items():
        _nar(catalog, "scheme", alias=alias, uri=uri)
    return root


def build_item(
    element: Element,
    publication: Publication,
    *,
    options: NewsMLOptions,
    version: int,
    now: dt.datetime,
    pub_status: str = USABLE,
) -> ET.Element:
    """The ``newsItem`` for one publication (the mapping table in the module docstring)."""
    text = element.text_task_for(publication)
    content = text.content if text else None
    headline = item_text(content.headline if content else None) or item_text(element.title)
    headline = headline or item_text(element.slug) or f"Kordiam element {element.id}"
    author = text.assignee.display_name if text and text.assignee else None
    modified = element.modification_date
    name = file_name(options.file_prefix, element.id, publication.id)

    root = _item_root(guid_for(options.guid_prefix, element.id, publication.id), version, options.language)
    item_meta = _nar(root, "itemMeta")
    _nar(item_meta, "itemClass", qcode="ninat:text")
    _provider(item_meta, options.provider)
    _nar(item_meta, "versionCreated", g2_datetime(modified or now))
    _nar(item_meta, "pubStatus", qcode=pub_status)
    _nar(item_meta, "fileName", name)
    _nar(item_meta, "generator", "kordiam-bridge", versioninfo=__version__)
    note = item_text(element.note)
    if note:
        _nar(item_meta, "edNote", note)

    content_meta = _nar(root, "contentMeta")
    if modified is not None:
        _nar(content_meta, "contentModified", g2_datetime(modified))
    byline = item_text(author)
    if byline:
        creator = _nar(content_meta, "creator")
        _nar(creator, "name", byline)
    if options.language:
        _nar(content_meta, "language", tag=options.language)
    category = publication.category
    if category is not None:
        subject = _nar(content_meta, "subject", qcode=f"kdmcat:{category.id}")
        if category.name:
            _nar(subject, "name", item_text(category.name))
    slug = item_text(element.slug)
    if slug:
        _nar(content_meta, "slugline", slug)
    _nar(content_meta, "headline", headline)
    if byline:
        _nar(content_meta, "by", byline)
    lead = item_text(content.lead if content else None)
    if lead:
        _nar(content_meta, "description", lead, role="drol:summary")
    if publication.schedule is not None and publication.schedule.date is not None:
        _ext(content_meta, "kdm:plannedIssueDate", publication.schedule.date.isoformat(), "xs:date")
    scheduled = publication.scheduled_at()
    if scheduled is not None:
        _ext(content_meta, "kdm:plannedTime", g2_datetime(scheduled), "xs:dateTime")
    _ext(content_meta, "kdm:elementId", str(element.id), "xs:integer")
    _ext(content_meta, "kdm:publicationId", str(publication.id), "xs:integer")
    _ext(content_meta, "kdm:platformId", str(publication.platform.id), "xs:integer")
    if publication.status is not None and publication.status.name:
        _ext(content_meta, "kdm:publicationStatus", item_text(publication.status.name))
    if publication.type is not None and publication.type.name:
        _ext(content_meta, "kdm:pageElementType", item_text(publication.type.name))
    for field in element.custom_fields:
        value = field.as_text()
        if value is None:
            continue
        datatype = "xs:date" if field.date is not None and field.value is None else None
        _ext(content_meta, f"kdmfield:{field.id}", value, datatype)

    document = xhtml_document(headline, content.text if content else None, options.language)
    content_set = _nar(root, "contentSet")
    inline = _nar(content_set, "inlineXML", contenttype="application/xhtml+xml")
    body = document.find(f"{{{XHTML}}}body")
    inline.set("wordcount", str(word_count(body if body is not None else document)))
    inline.append(document)
    return root


def canceled_stub(guid: str, version: int, *, options: NewsMLOptions, now: dt.datetime) -> ET.Element:
    """A minimal canceled item, for a retraction whose earlier file is no longer there."""
    root = _item_root(guid, version, options.language)
    item_meta = _nar(root, "itemMeta")
    _nar(item_meta, "itemClass", qcode="ninat:text")
    _provider(item_meta, options.provider)
    _nar(item_meta, "versionCreated", g2_datetime(now))
    _nar(item_meta, "pubStatus", qcode=CANCELED)
    _nar(item_meta, "generator", "kordiam-bridge", versioninfo=__version__)
    _nar(item_meta, "edNote", CANCEL_NOTE)
    return root


CANCEL_NOTE = "Canceled: this publication was withdrawn in Kordiam."
_ITEM_META_ORDER = (
    "itemClass", "provider", "versionCreated", "firstCreated", "embargoed", "pubStatus", "role", "fileName",
    "generator", "profile", "service", "title", "edNote",
)  # fmt: skip


def cancel_item(root: ET.Element, version: int, now: dt.datetime) -> None:
    """Turn a parsed item into its canceled next version (in place): pubStatus, version, versionCreated, edNote."""
    root.set("version", str(version))
    item_meta = root.find(f"{{{NAR}}}itemMeta")
    if item_meta is None:
        raise ValueError("the item has no itemMeta")
    _set_child(item_meta, "versionCreated", now=now)
    status = item_meta.find(f"{{{NAR}}}pubStatus")
    if status is None:
        status = ET.Element(f"{{{NAR}}}pubStatus")
        _insert_in_order(item_meta, status)
    status.attrib.clear()
    status.set("qcode", CANCELED)
    note = ET.Element(f"{{{NAR}}}edNote")
    note.text = CANCEL_NOTE
    _insert_in_order(item_meta, note)


def _set_child(item_meta: ET.Element, tag: str, *, now: dt.datetime) -> None:
    child = item_meta.find(f"{{{NAR}}}{tag}")
    if child is None:
        child = ET.Element(f"{{{NAR}}}{tag}")
        _insert_in_order(item_meta, child)
    child.text = g2_datetime(now)


def _insert_in_order(item_meta: ET.Element, new: ET.Element) -> None:
    """Insert ``new`` after the last sibling that the schema's sequence puts before or beside it."""
    rank = _ITEM_META_ORDER.index(_local(new.tag))
    position = 0
    for index, child in enumerate(item_meta):
        name = _local(child.tag)
        if name in _ITEM_META_ORDER and _ITEM_META_ORDER.index(name) <= rank:
            position = index + 1
    item_meta.insert(position, new)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --- serialisation ----------------------------------------------------------------------------------------------


XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, local = tag[1:].split("}", 1)
        return namespace, local
    return None, tag


def _copy(
    source: ET.Element, parent: etree._Element | None, parent_ns: str | None, indent: str | None
) -> etree._Element:
    """``source`` as an lxml element under ``parent``, declaring its namespace as the default where it changes.

    NewsML metadata is element-only content, indented here for people; XHTML is mixed content and kept verbatim.
    """
    namespace = _split(source.tag)[0]
    nsmap = {None: namespace} if namespace is not None and namespace != parent_ns else None
    target = (
        etree.Element(source.tag, nsmap=nsmap) if parent is None else etree.SubElement(parent, source.tag, nsmap=nsmap)
    )
    for key, value in source.attrib.items():
        key_ns, _ = _split(key)
        if key_ns in (None, XML_NS):  # only our own attributes are written; foreign ones are not kept
            target.set(key, value)
    children = list(source)
    pretty = indent is not None and namespace == NAR and children and not (source.text or "").strip()
    if pretty:
        assert indent is not None
        inner = indent + "  "
        target.text = "\n" + inner
        for child in children:
            copied = _copy(child, target, namespace, None if _local(child.tag) == "inlineXML" else inner)
            copied.tail = "\n" + inner
        copied.tail = "\n" + indent
    else:
        target.text = source.text or None
        for child in children:
            _copy(child, target, namespace, None).tail = child.tail or None
    return target


def render(root: ET.Element) -> bytes:
    """The item as UTF-8 XML, serialised by lxml: a default namespace declared where it changes, no prefixes.

    The item is built, read back and edited as a standard-library tree; it is copied into lxml only to be written.
    """
    document = _copy(root, None, None, "")
    return XML_DECLARATION + etree.tostring(document, encoding="UTF-8", xml_declaration=False) + b"\n"


@dataclass(frozen=True, slots=True)
class StoredItem:
    root: ET.Element
    version: int
    pub_status: str | None
    version_created: str | None


def parse_item(data: bytes) -> StoredItem:
    """An item this channel wrote before; ``ValueError`` if it is not a NewsML-G2 newsItem."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"not well-formed XML: {error}") from None
    if root.tag != f"{{{NAR}}}newsItem":
        raise ValueError(f"not a NewsML-G2 newsItem but {root.tag!r}")
    version_text = root.get("version", "1")
    if not version_text.isdigit():
        raise ValueError(f"version {version_text!r} is not a positive integer")
    status = root.find(f"{{{NAR}}}itemMeta/{{{NAR}}}pubStatus")
    created = root.find(f"{{{NAR}}}itemMeta/{{{NAR}}}versionCreated")
    return StoredItem(
        root=root,
        version=int(version_text),
        pub_status=status.get("qcode") if status is not None else USABLE,
        version_created=created.text if created is not None else None,
    )


# --- targets ----------------------------------------------------------------------------------------------------


class _Target(Protocol):
    def uri(self, name: str) -> str: ...

    async def read(self, name: str) -> bytes | None: ...

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None: ...

    async def aclose(self) -> None: ...


class FolderTarget:
    def __init__(self, label: str, path: Path) -> None:
        self._label = label
        self.path = path.resolve()

    def uri(self, name: str) -> str:
        return (self.path / name).as_uri()

    async def read(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self._read, name)

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        await asyncio.to_thread(self._write, name, data)

    async def aclose(self) -> None:
        return None

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise os_error(error, f"{self._label}: cannot read {self.path / name}") from error

    def _write(self, name: str, data: bytes) -> None:
        target = self.path / name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Readable by the print system, which usually runs as another user.
            atomic_write(target, data)
        except OSError as error:
            raise os_error(error, f"{self._label}: cannot write {target}") from error


# S3 error codes that retrying cannot fix; everything else 4xx is rejected too, 5xx and these are transient.
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
        "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "OperationAborted",
    }
)  # fmt: skip
_S3_HINTS = {
    "AccessDenied": "the credentials may not do this (s3:PutObject on the prefix is needed)",
    "NoSuchBucket": "the bucket does not exist (check target and region/endpoint_url)",
    "InvalidAccessKeyId": "the AWS access key is not known",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "PermanentRedirect": "the bucket is in another region (set region)",
    "AuthorizationHeaderMalformed": "the bucket is in another region (set region)",
}


def s3_error(error: Exception, label: str, action: str) -> BridgeError:
    """A botocore error as the bridge's taxonomy."""
    if isinstance(error, ClientError):
        response: dict[str, Any] = error.response if isinstance(error.response, dict) else {}
        code = str(response.get("Error", {}).get("Code") or "")
        message = str(response.get("Error", {}).get("Message") or "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else int(code) if code.isdigit() else 0
        said = (code or f"HTTP {status}") + (f": {message}" if message else "")
        if code in _S3_TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return ChannelUnavailable(f"{label}: {action}: {said}")
        hint = _S3_HINTS.get(code)
        return ChannelRejected(f"{label}: {action}: {said}" + (f" — {hint}" if hint else ""))
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return ChannelRejected(f"{label}: {action}: no usable AWS credentials ({error})")
    reason = str(error) or type(error).__name__
    return ChannelUnavailable(f"{label}: {action}: S3 unreachable: {reason}")


class S3Target:
    """One long-lived aiobotocore client per channel, created on first use and closed by ``aclose()``."""

    def __init__(self, label: str, options: NewsMLOptions) -> None:
        self._label = label
        self._options = options
        self.location = options.s3
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._read_denied_logged = False

    def key(self, name: str) -> str:
        return f"{self.location.prefix}{name}"

    def uri(self, name: str) -> str:
        return f"s3://{self.location.bucket}/{self.key(name)}"

    async def _ensure_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            config = AioConfig(
                connect_timeout=self._options.timeout,
                read_timeout=self._options.timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=20,
            )
            stack = AsyncExitStack()
            creator = get_session().create_client(
                "s3", region_name=self._options.region, endpoint_url=self._options.endpoint_url, config=config
            )
            try:
                self._client = await stack.enter_async_context(creator)
            except (BotoCoreError, ClientError) as error:
                await stack.aclose()
                raise s3_error(error, self._label, "creating the S3 client") from error
            self._stack = stack
            return self._client

    async def read(self, name: str) -> bytes | None:
        client = await self._ensure_client()
        action = f"reading {self.uri(name)}"
        try:
            response = await client.get_object(Bucket=self.location.bucket, Key=self.key(name))
            async with response["Body"] as stream:
                data: bytes = await stream.read()
                return data
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "AccessDenied":
                # A write-only hot folder, or no s3:ListBucket (then S3 answers 403 for a missing key): carry on
                # without the last item; the PUT shows whether the credentials are wrong altogether.
                if not self._read_denied_logged:
                    self._read_denied_logged = True
                    log.warning("newsml.cannot_read_back", channel=self._label, uri=self.uri(name))
                return None
            raise s3_error(error, self._label, action) from error
        except (BotoCoreError, OSError, TimeoutError) as error:
            raise s3_error(error, self._label, action) from error

    async def write(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        client = await self._ensure_client()
        try:
            await client.put_object(
                Bucket=self.location.bucket,
                Key=self.key(name),
                Body=data,
                ContentType=f"{MEDIA_TYPE}; charset=utf-8",
                Metadata=metadata,
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as error:
            raise s3_error(error, self._label, f"writing {self.uri(name)}") from error

    async def aclose(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


# --- the adapter ------------------------------------------------------------------------------------------------


class NewsMLChannel:
    """One NewsML-G2 file per publication (in a folder or an S3 bucket), its name the external id.

    Upsert reads the item written last and writes the next version unless it is the same item again (a re-send
    writes nothing); delete writes the item again as ``stat:canceled`` (a missing file gets a minimal canceled
    item), so a retried delete changes nothing. Raises ``ChannelRejected`` (S3 4xx and bad credentials, a folder
    that cannot be written) and ``ChannelUnavailable`` (throttling, 5xx, unreachable, a full disk).
    """

    element_scoped = False

    def __init__(self, name: str, options: NewsMLOptions) -> None:
        self.name = name
        self.options = options
        self._label = f"newsml channel {name!r}"
        self._target: _Target = (
            S3Target(self._label, options) if options.is_s3 else FolderTarget(self._label, options.folder)
        )

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        name = file_name(self.options.file_prefix, element.id, publication.id)
        guid = guid_for(self.options.guid_prefix, element.id, publication.id)
        now = dt.datetime.now(dt.UTC)
        stored = self._parse(await self._target.read(name), name)
        version = derived_version(element)
        unchanged = False
        if stored is not None and stored.version >= version:
            # The last item already has this version (or a higher one): the same item again is not rewritten,
            # anything else becomes the next version, so versions never go back.
            unchanged = stored.pub_status == USABLE and self._same(element, publication, stored, now)
            version = stored.version if unchanged else stored.version + 1
        if unchanged:
            log.debug("newsml.unchanged", channel=self.name, guid=guid, version=version)
        else:
            data = render(build_item(element, publication, options=self.options, version=version, now=now))
            await self._target.write(name, data, _metadata(element.id, publication.id, version, USABLE))
            log.info("newsml.written", channel=self.name, guid=guid, version=version, uri=self._target.uri(name))
        uri = self._target.uri(name)
        return ChannelResult(
            external_id=guid,
            edit_link=uri,
            open_link=uri,
            live=False,
            edit_link_title="NewsML-G2 item",
            open_link_title="NewsML-G2 item",
        )

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        """Write the item again as ``stat:canceled`` (version + 1); the file stays so print learns of it."""
        name = file_name(self.options.file_prefix, element_id, publication_id)
        now = dt.datetime.now(dt.UTC)
        stored = self._parse(await self._target.read(name), name)
        if stored is not None and stored.pub_status == CANCELED:
            return  # already canceled: a repeated delete changes nothing
        if stored is not None:
            version = stored.version + 1
            root = stored.root
            cancel_item(root, version, now)
        else:
            guid = external_id.strip()
            if not guid or any(character.isspace() for character in guid):
                guid = guid_for(self.options.guid_prefix, element_id, publication_id)
            version = max(1, int(time.time()))
            root = canceled_stub(guid, version, options=self.options, now=now)
        await self._target.write(name, render(root), _metadata(element_id, publication_id, version, CANCELED))
        log.info("newsml.canceled", channel=self.name, guid=root.get("guid"), version=version)

    async def aclose(self) -> None:
        await self._target.aclose()

    def _same(self, element: Element, publication: Publication, stored: StoredItem, now: dt.datetime) -> bool:
        again = build_item(element, publication, options=self.options, version=stored.version, now=now)
        created = again.find(f"{{{NAR}}}itemMeta/{{{NAR}}}versionCreated")
        if created is not None and stored.version_created:
            created.text = stored.version_created
        return render(again) == render(stored.root)

    def _parse(self, data: bytes | None, name: str) -> StoredItem | None:
        if data is None:
            return None
        try:
            return parse_item(data)
        except ValueError as error:
            # Not ours to keep: it is replaced with a proper item (versions start again from Kordiam's).
            log.warning("newsml.unreadable_item", channel=self.name, file=name, problem=str(error))
            return None


def _metadata(element_id: int, publication_id: int, version: int, status: str) -> dict[str, str]:
    return {
        "kordiam-element": str(element_id),
        "kordiam-publication": str(publication_id),
        "newsml-version": str(version),
        "newsml-pubstatus": status,
    }


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, NewsMLOptions)
    return NewsMLChannel(settings.name, options)
