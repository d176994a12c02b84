"""Kordiam's v1 wire shapes (seeds 001 and 002), shared by both Kordiam protocol channels.

``kordiam-webhook`` (Global Export, element-level) and ``kordiam-platform`` (Platform integration, per
publication) send the same v1 task, publication and custom-field objects and read the same ``cms…`` link fields
from the receiver's answer; this module is their one home.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from bridge.kordiam.models import CustomFieldValue, DateTimeSlot, Person, Publication, Ref, Task
from bridge.ops.clock import utc_text


def v1_ref(ref: Ref | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return compact({"id": ref.id, "name": ref.name})


def v1_slot(slot: DateTimeSlot | None) -> dict[str, Any] | None:
    if slot is None or slot.date is None:
        return None
    return compact({"date": slot.date.isoformat(), "time": _hhmm(slot.time)})


def v1_person(person: Person | None) -> dict[str, Any] | None:
    if person is None:
        return None
    # v1 puts the e-mail address into `name`.
    return compact({"id": person.id, "name": person.email or person.name, "external_id": person.external_id}) or None


def v1_task(task: Task) -> dict[str, Any]:
    content = task.content
    return compact(
        {
            "id": task.id,
            "format": v1_ref(task.format),
            "status": v1_ref(task.status),
            "confirmationStatus": v1_ref(task.confirmation_status),
            "assignee": v1_person(task.assignee),
            "deadline": v1_slot(task.deadline),
            "note": task.note,
            "done": task.done,
            "content": content.text if content else None,
            "headline": content.headline if content else None,
        }
    )


def v1_publication(publication: Publication, tasks: Sequence[Task]) -> dict[str, Any]:
    schedule = publication.schedule
    single = None
    if schedule is not None and schedule.kind == "single" and schedule.date is not None:
        # In GMT, as Kordiam sends it: a time with an offset of its own moves to GMT, its date with it.
        instant = schedule.instant()
        day, at = (instant.date(), instant.time()) if instant is not None else (schedule.date, None)
        single = {"start": compact({"date": day.isoformat(), "time": _hhmm(at)})}
    published = v1_slot(publication.published)
    assigned = set(publication.assigned_task_ids)
    cms = publication.cms
    return compact(
        {
            "id": publication.id,
            "status": v1_ref(publication.status),
            "platform": publication.platform.id,
            "category": v1_ref(publication.category),
            "type": v1_ref(publication.type),
            "single": single,
            "published": {"start": published} if published else None,
            "assignments": [task.id in assigned for task in tasks] if assigned else None,
            "cms_id": publication.external_id,
            "url_to_content_in_cms": cms.edit_link if cms else None,
            "url_to_published_content": cms.open_link if cms else None,
        }
    )


def v1_custom_field(field: CustomFieldValue) -> dict[str, Any]:
    return compact({"customFieldId": field.id, "value": field.as_text()})


def compact(data: dict[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
    """Leave out what Kordiam would leave out: absent values (``None``) and empty objects and lists."""
    # Spelled out, not `value not in (None, {}, [])`: that builds the tuple, a dict and a list for every key, and
    # this runs for some 30 keys of every Global Export body.
    return {
        key: value
        for key, value in data.items()
        if (value is not None and (value or not isinstance(value, _CONTAINERS))) or key in keep
    }


_CONTAINERS = (dict, list)


def _hhmm(value: dt.time | None) -> str | None:
    return None if value is None else f"{value.hour:02d}:{value.minute:02d}"  # strftime costs 3x as much


def utc_timestamp(value: dt.datetime | None) -> str | None:
    return None if value is None else utc_text(value, microseconds=False)


def result_links(answer: Any, item_id: str, edit_template: str | None, open_template: str | None) -> dict[str, Any]:
    """Link fields for a ``ChannelResult``: the answer's ``cms…`` fields, else the templates."""
    fields = answer if isinstance(answer, dict) else {}

    def text(key: str) -> str | None:
        value = fields.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else None

    def filled(template: str | None) -> str | None:
        return template.replace("{id}", quote(item_id, safe="")) if template else None

    return {
        "edit_link": text("cmsEditLink") or filled(edit_template),
        "open_link": text("cmsOpenLink") or filled(open_template),
        "edit_link_title": text("cmsEditLinkTitle"),
        "open_link_title": text("cmsOpenLinkTitle"),
    }
