"""A publication's fingerprint: what the channels are given, not what the bridge writes back to Kordiam."""

from bridge.kordiam.models import Element
from bridge.pipeline.fingerprint import fingerprint
from tests.unit.kordiam.test_models import V2_ELEMENT


def test_fingerprint_ignores_what_the_bridge_writes_back() -> None:
    element = Element.model_validate(V2_ELEMENT)
    publication = element.publications[0]
    echoed = Element.model_validate(
        {
            **V2_ELEMENT,
            "version": 9,
            "modificationDate": "2026-11-22T11:00:00Z",
            "externalElement": {"externalId": "other", "link": "https://x"},
            "publications": [
                {**V2_ELEMENT["publications"][0], "externalId": "99", "cms": {"editLink": "https://new"}},  # type: ignore[dict-item]
                V2_ELEMENT["publications"][1],  # type: ignore[index]
            ],
        }
    )
    assert fingerprint(element, publication) == fingerprint(echoed, echoed.publications[0])
    retitled = Element.model_validate({**V2_ELEMENT, "title": "New title"})
    assert fingerprint(element, publication) != fingerprint(retitled, retitled.publications[0])
