"""An item as bytes and back: lxml writes it (default namespaces, escaping), the standard library reads it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from lxml import etree

from bridge.channels.newsml.g2 import NAR, USABLE, XML_NS
from bridge.channels.newsml.item import local_name
from bridge.digits import ascii_digits

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
            copied = _copy(child, target, namespace, None if local_name(child.tag) == "inlineXML" else inner)
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
    if not ascii_digits(version_text):
        raise ValueError(f"version {version_text!r} is not a positive integer")
    if root.find(f"{{{NAR}}}itemMeta") is None:
        raise ValueError("a newsItem without itemMeta (not one this channel wrote)")
    status = root.find(f"{{{NAR}}}itemMeta/{{{NAR}}}pubStatus")
    created = root.find(f"{{{NAR}}}itemMeta/{{{NAR}}}versionCreated")
    return StoredItem(
        root=root,
        version=int(version_text),
        pub_status=status.get("qcode") if status is not None else USABLE,
        version_created=created.text if created is not None else None,
    )
