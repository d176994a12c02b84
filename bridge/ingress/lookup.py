"""Map the ids Kordiam sends in a webhook's path back to Kordiam elements and to what the bridge delivered.

Kordiam puts "the REST ID provided by the external system" in ``PUT``/``DELETE`` paths (seeds 001 and 002): either
the id the ingress answered itself (the element id for Global Export, the publication id for the Platform
integration, until the worker links the real CMS item) or the CMS item's id that the worker's feedback linked
later, which the state store holds as a delivery's ``external_id``. The state store is asked first, so a CMS id
that happens to equal another element's id still resolves to the element it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.digits import ascii_digits
from bridge.pipeline.notification import MAX_ELEMENT_ID
from bridge.state import Delivery, StateStore

# Kordiam sends the literal text "null" when it never received an id (seed 001).
NO_ID = frozenset({"", "null", "undefined"})
# The route segment of the id in a PUT or DELETE path, as ``match_info["id"]``: empty too, as "an empty (null)
# value" (seed 001) may leave it (``…/element/``); a 404 would drop that call, Kordiam retrying it in vain.
ID_SEGMENT = "id:[^/]*"
_MAX_ID_DIGITS = len(str(MAX_ELEMENT_ID))


@dataclass(frozen=True, slots=True)
class ElementLookup:
    state: StateStore
    main_channel: str

    async def deliveries(self, element_id: int) -> list[Delivery]:
        return await self.state.deliveries(element_id)

    async def element_for_external_id(self, external_id: str) -> int | None:
        """The element whose delivery (main channel preferred) carries ``external_id``."""
        found = await self.state.deliveries_with_external_id(external_id)
        main = [d for d in found if d.channel == self.main_channel]
        chosen = (main or found)[:1]
        return chosen[0].element_id if chosen else None

    async def element_for_publication(self, publication_id: int) -> int | None:
        found = await self.state.deliveries_of_publication(publication_id)
        return found[0].element_id if found else None


def distinct_elements(*element_ids: int | None) -> list[int]:
    """The element ids found, in order, each once."""
    return list(dict.fromkeys(e for e in element_ids if e is not None))


def id_answer(text: str) -> int | str:
    """An id as Kordiam reads it back: a number where it is one (Kordiam sent or stores it so), else the text."""
    number = positive_int(text)
    return text if number is None else number


def positive_int(text: str) -> int | None:
    """A positive id the state stores and the worker take (at most ``MAX_ELEMENT_ID``); None for anything else, so
    that a larger number is unmapped here rather than enqueued as a message the worker can only dead-letter."""
    stripped = text.strip()
    # Counted before int(), which refuses more than 4300 digits with a ValueError (the caller's state-store guard
    # would take it for a failing store).
    if not ascii_digits(stripped) or len(stripped.lstrip("0")) > _MAX_ID_DIGITS:
        return None
    number = int(stripped)
    return number if 0 < number <= MAX_ELEMENT_ID else None
