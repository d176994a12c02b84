"""The NewsML-G2 ``newsItem``: built from a Kordiam element, its versions, its cancellation."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from bridge import __version__
from bridge.channels.newsml.g2 import CANCELED, IPTC_CATALOG, NAR, SCHEMES, STANDARD_VERSION, USABLE, XHTML, XML_NS
from bridge.channels.newsml.options import NewsMLOptions
from bridge.channels.newsml.xhtml import item_text, word_count, xhtml_document
from bridge.channels.text import xml_text
from bridge.kordiam.models import Element, Publication


def guid_for(guid_prefix: str, element_id: int, publication_id: int) -> str:
    return f"{guid_prefix}{element_id}:{publication_id}"


def file_name(file_prefix: str, element_id: int, publication_id: int) -> str:
    return f"{element_file_prefix(file_prefix, element_id)}{publication_id}.xml"


def element_file_prefix(file_prefix: str, element_id: int) -> str:
    """What every item name of the element starts with (and no other element's: the id ends at the dash)."""
    return f"{file_prefix}{element_id}-"


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
    # isoformat, not strftime: "%Y" writes the year 999 as "999" (glibc), which is no xs:dateTime.
    return moment.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


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
    rank = _ITEM_META_ORDER.index(local_name(new.tag))
    position = 0
    for index, child in enumerate(item_meta):
        name = local_name(child.tag)
        if name in _ITEM_META_ORDER and _ITEM_META_ORDER.index(name) <= rank:
            position = index + 1
    item_meta.insert(position, new)


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
