"""NewsML-G2's namespaces, the standard version and the codes the ``newsml`` channel writes."""

from __future__ import annotations

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
