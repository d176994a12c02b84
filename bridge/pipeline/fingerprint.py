"""A digest of what a channel receives, to skip writes whose content the channel already has."""

from __future__ import annotations

import hashlib
import json

from bridge.kordiam.models import Element, Publication

# Fields the bridge itself writes back (feedback) or that change with every write; leaving them out means our
# own write-back never counts as a change, so it cannot start an endless update loop.
ELEMENT_VOLATILE = frozenset({"version", "modification_date", "external_element", "publications"})
PUBLICATION_VOLATILE = frozenset({"external_id", "cms"})


def fingerprint(element: Element, publication: Publication) -> str:
    content = {
        "element": element.model_dump(mode="json", exclude=set(ELEMENT_VOLATILE)),
        "publication": publication.model_dump(mode="json", exclude=set(PUBLICATION_VOLATILE)),
    }
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()
