"""A publication's fingerprint: what the channels are given, not what the bridge writes back to Kordiam."""

from bridge.kordiam.models import Element
from bridge.pipeline.fingerprint import PREFIX, _unprefixed, fingerprint, matches
from tests.unit.kordiam.test_models import V2_ELEMENT

# What the bridge before versioned digests stored for V2_ELEMENT's first publication.
FIRST_FORM_OF_V2_ELEMENT = "0754d2df1f0e3f4265966d9da0b6fc79"


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


def test_a_digest_stored_in_the_first_form_still_matches_unchanged_content() -> None:
    element = Element.model_validate(V2_ELEMENT)
    publication = element.publications[0]
    digest = fingerprint(element, publication)
    first_form = _unprefixed(element, publication)
    assert digest.startswith(PREFIX) and not first_form.startswith(PREFIX)
    assert matches(first_form, digest, element, publication)
    assert matches(digest, digest, element, publication)
    retitled = Element.model_validate({**V2_ELEMENT, "title": "New title"})
    new_digest = fingerprint(retitled, retitled.publications[0])
    assert not matches(first_form, new_digest, retitled, retitled.publications[0])
    assert not matches(digest, new_digest, retitled, retitled.publications[0])


def test_the_first_form_is_the_sorted_json_digest_earlier_bridges_stored() -> None:
    # Pinned: a digest stored by an earlier bridge must keep matching after an upgrade.
    element = Element.model_validate(V2_ELEMENT)
    assert _unprefixed(element, element.publications[0]) == FIRST_FORM_OF_V2_ELEMENT
