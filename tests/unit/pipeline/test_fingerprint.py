"""A publication's fingerprint: what the channels are given, not what the bridge writes back to Kordiam."""

from bridge.kordiam.models import Element
from bridge.pipeline.fingerprint import PREFIX, _unprefixed, fingerprint, matches
from tests.unit.kordiam.test_models import V2_ELEMENT

# What the bridge before versioned digests stored for V2_ELEMENT's first publication.
FIRST_FORM_OF_V2_ELEMENT = "0754d2df1f0e3f4265966d9da0b6fc79"
# What the bridge stores for V2_ELEMENT's first publication, and for it with a title beyond ASCII.
CURRENT_FORM_OF_V2_ELEMENT = "2:c1e543653ae3eafe4e3d4a47b6c4e3f3"
CURRENT_FORM_OF_A_TITLE_BEYOND_ASCII = "2:fb70bdc2d94772242020d59120f9ae6c"


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
                {**V2_ELEMENT["publications"][0], "externalId": "99", "cms": {"editLink": "https://new"}},
                V2_ELEMENT["publications"][1],
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


def test_the_current_form_is_the_digest_stored_so_far() -> None:
    # Pinned: a change in how the digest is computed must not change it, or every channel would be rewritten.
    element = Element.model_validate(V2_ELEMENT)
    assert fingerprint(element, element.publications[0]) == CURRENT_FORM_OF_V2_ELEMENT
    titled = Element.model_validate({**V2_ELEMENT, "title": "Grüße — 東京 🎉"})
    assert fingerprint(titled, titled.publications[0]) == CURRENT_FORM_OF_A_TITLE_BEYOND_ASCII
