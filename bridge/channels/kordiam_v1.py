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

# The builders below write each object key by key, leaving out what ``compact`` would (``None``, and the empty
# object or list), in the same order: a dict literal filtered by ``compact`` cost twice as much, and they run for
# some ten objects of every Global Export body.


def v1_ref(ref: Ref | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"id": ref.id} if ref.name is None else {"id": ref.id, "name": ref.name}


def v1_slot(slot: DateTimeSlot | None) -> dict[str, Any] | None:
    if slot is None or slot.date is None:
        return None
    day = slot.date.isoformat()
    return {"date": day} if slot.time is None else {"date": day, "time": _hhmm(slot.time)}


def v1_person(person: Person | None) -> dict[str, Any] | None:
    if person is None:
        return None
    body: dict[str, Any] = {}
    if person.id is not None:
        body["id"] = person.id
    # v1 puts the e-mail address into `name`.
    if (name := person.email or person.name) is not None:
        body["name"] = name
    if person.external_id is not None:
        body["external_id"] = person.external_id
    return body or None


def v1_task(task: Task) -> dict[str, Any]:
    body: dict[str, Any] = {"id": task.id}
    if task.format is not None:
        body["format"] = v1_ref(task.format)
    if task.status is not None:
        body["status"] = v1_ref(task.status)
    if task.confirmation_status is not None:
        body["confirmationStatus"] = v1_ref(task.confirmation_status)
    if (assignee := v1_person(task.assignee)) is not None:
        body["assignee"] = assignee
    if (deadline := v1_slot(task.deadline)) is not None:
        body["deadline"] = deadline
    if task.note is not None:
        body["note"] = task.note
    if task.done is not None:
        body["done"] = task.done
    content = task.content
    if content is not None:
        if content.text is not None:
            body["content"] = content.text
        if content.headline is not None:
            body["headline"] = content.headline
    return body


def v1_publication(publication: Publication, tasks: Sequence[Task]) -> dict[str, Any]:
    body: dict[str, Any] = {"id": publication.id}
    if publication.status is not None:
        body["status"] = v1_ref(publication.status)
    body["platform"] = publication.platform.id
    if publication.category is not None:
        body["category"] = v1_ref(publication.category)
    if publication.type is not None:
        body["type"] = v1_ref(publication.type)
    schedule = publication.schedule
    if schedule is not None and schedule.kind == "single" and schedule.date is not None:
        # In GMT, as Kordiam sends it: a time with an offset of its own moves to GMT, its date with it.
        instant = schedule.instant()
        if instant is None:
            body["single"] = {"start": {"date": schedule.date.isoformat()}}
        else:
            body["single"] = {"start": {"date": instant.date().isoformat(), "time": _hhmm(instant.time())}}
    if (published := v1_slot(publication.published)) is not None:
        body["published"] = {"start": published}
    if publication.assigned_task_ids and tasks:
        assigned = set(publication.assigned_task_ids)
        body["assignments"] = [task.id in assigned for task in tasks]
    if publication.external_id is not None:
        body["cms_id"] = publication.external_id
    cms = publication.cms
    if cms is not None:
        if cms.edit_link is not None:
            body["url_to_content_in_cms"] = cms.edit_link
        if cms.open_link is not None:
            body["url_to_published_content"] = cms.open_link
    return body


def v1_custom_field(field: CustomFieldValue) -> dict[str, Any]:
    value = field.as_text()
    return {"customFieldId": field.id} if value is None else {"customFieldId": field.id, "value": value}


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
