"""Every Kordiam wire shape that the public documentation leaves unclear, in one place.

Each constant below is a working assumption, not a documented fact (reference: ``kordiam-api.md`` §3.7–3.9 and
§6 "Open questions"). When Kordiam's OpenAPI document confirms or corrects a name, change it here and nowhere
else; the models, the client and the simulator all read these constants.
"""

from __future__ import annotations

from datetime import UTC
from typing import Final

# All Kordiam dates and times are GMT (seed 001, "What time zone is used?").
KORDIAM_TZ: Final = UTC

# The field of a v2 schedule's `timing` object that holds a time of day ("HH:mm", or with an offset). The docs show
# one timing only, `{"type": "timeSlot", "timeSlotId": 10}` (time slots come from the platform's `timeSlots[]`,
# whose shape is not visible); the bridge does not resolve slot ids, so such a publication is planned for its date
# alone. A timing carrying a time of day under this name, whatever its type, gives the publication that time.
SCHEDULE_TIMING_TIME_KEY: Final = "time"

# Inner names of a publication's `cms` object (PATCH /elements/{id}/publications/{pid}). The docs show only that
# the object exists ("CMS-related publication metadata and links"); these names follow the Platform integration
# response (seed 002: cmsEditLink, cmsOpenLink, …) without its `cms` prefix, as v2 names nested fields.
# Keys: our attribute name → the JSON name on the wire.
CMS_FIELDS: Final[dict[str, str]] = {
    "edit_link": "editLink",
    "open_link": "openLink",
    "edit_link_title": "editLinkTitle",
    "open_link_title": "openLinkTitle",
}

# POST /elements/{id}/external-element/link: the docs say the body is "an element representation in the external
# system" with at least one of `externalId` or `link`, plus an optional `systemUrl`, but do not show whether
# these sit at the top level or under a wrapper. We send them at the top level.
LINK_BODY_WRAPPER: Final[str | None] = None

# Which `systemUrl` to send when linking: none, so Kordiam resolves the target from the organisation's settings.
LINK_SYSTEM_URL: Final[str | None] = None

# Name of the publication status that `POST …/publish` sets. Status ids are account-specific, so the bridge
# never compares ids; it asks whether `published` is set on the publication instead.
PUBLISHED_STATUS_NAME: Final = "Published"

# The notification body Kordiam puts on SQS is undocumented (§2.2). The decoder accepts every shape listed in
# bridge/pipeline/notification.py; these are the keys it reads the element id and event from.
NOTIFICATION_ID_KEYS: Final = ("id", "elementId")
NOTIFICATION_EVENT_KEYS: Final = ("event", "eventType", "action")
