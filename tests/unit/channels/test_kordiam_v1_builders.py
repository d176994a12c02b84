"""The v1 wire builders write the same bytes as the ``compact``-filtered literals they replaced (for speed).

The reference below is that earlier code: every key in order, then ``compact``. The elements vary every optional
part of a Global Export body (absent, null, blank, empty, present), one at a time and all at once, so a builder
that keeps a value ``compact`` drops, drops one it keeps, or moves a key fails here; the bytes are compared, so
the keys' order counts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from bridge import jsontext
from bridge.channels.kordiam_v1 import compact, utc_timestamp, v1_custom_field, v1_publication, v1_task
from bridge.channels.kordiam_webhook import global_export_body
from bridge.kordiam.models import CustomFieldValue, DateTimeSlot, Element, Person, Publication, Ref, Task
from tests.fixtures import load


def _ref(ref: Ref | None) -> dict[str, Any] | None:
    return None if ref is None else compact({"id": ref.id, "name": ref.name})


def _slot(slot: DateTimeSlot | None) -> dict[str, Any] | None:
    if slot is None or slot.date is None:
        return None
    at = slot.time
    return compact({"date": slot.date.isoformat(), "time": None if at is None else f"{at.hour:02d}:{at.minute:02d}"})


def _person(person: Person | None) -> dict[str, Any] | None:
    if person is None:
        return None
    return compact({"id": person.id, "name": person.email or person.name, "external_id": person.external_id}) or None


def _task(task: Task) -> dict[str, Any]:
    content = task.content
    return compact(
        {
            "id": task.id,
            "format": _ref(task.format),
            "status": _ref(task.status),
            "confirmationStatus": _ref(task.confirmation_status),
            "assignee": _person(task.assignee),
            "deadline": _slot(task.deadline),
            "note": task.note,
            "done": task.done,
            "content": content.text if content else None,
            "headline": content.headline if content else None,
        }
    )


def _publication(publication: Publication, tasks: Sequence[Task]) -> dict[str, Any]:
    schedule = publication.schedule
    single = None
    if schedule is not None and schedule.kind == "single" and schedule.date is not None:
        instant = schedule.instant()
        day, at = (instant.date(), instant.time()) if instant is not None else (schedule.date, None)
        hhmm = None if at is None else f"{at.hour:02d}:{at.minute:02d}"
        single = {"start": compact({"date": day.isoformat(), "time": hhmm})}
    published = _slot(publication.published)
    assigned = set(publication.assigned_task_ids)
    cms = publication.cms
    return compact(
        {
            "id": publication.id,
            "status": _ref(publication.status),
            "platform": publication.platform.id,
            "category": _ref(publication.category),
            "type": _ref(publication.type),
            "single": single,
            "published": {"start": published} if published else None,
            "assignments": [task.id in assigned for task in tasks] if assigned else None,
            "cms_id": publication.external_id,
            "url_to_content_in_cms": cms.edit_link if cms else None,
            "url_to_published_content": cms.open_link if cms else None,
        }
    )


def _custom_field(field: CustomFieldValue) -> dict[str, Any]:
    return compact({"customFieldId": field.id, "value": field.as_text()})


def _body(element: Element) -> dict[str, Any]:
    external = element.external_element
    return compact(
        {
            "id": element.id,
            "title": element.title,
            "slug": element.slug,
            "note": element.note,
            "elementStatus": _ref(element.status),
            "modificationDate": utc_timestamp(element.modification_date),
            "customFields": [_custom_field(f) for f in element.custom_fields] or None,
            "externalElement": compact({"id": external.external_id, "link": external.link}) if external else None,
            "tasks": [_task(task) for task in element.tasks],
            "publications": [_publication(p, element.tasks) for p in element.publications],
            "groups": [_ref(group) for group in element.groups],
        },
        keep=("tasks", "publications", "groups"),
    )


FULL: dict[str, Any] = {
    "id": 1001,
    "version": 3,
    "title": "Council approves budget",
    "slug": "council-approves-budget",
    "note": "Check the figures.",
    "elementStatus": {"id": 2, "name": "Accepted"},
    "modificationDate": "2026-11-22T13:36:11.250+01:00",
    "externalElement": {"externalId": "cms-9", "link": "https://cms.example/9"},
    "groups": [{"id": 4, "name": "Desk"}, {"id": 5}],
    "customFields": [{"id": 77, "value": "breaking"}, {"id": 78, "selectedOptionIds": [1, 2]}, {"id": 79}],
    "tasks": [
        {
            "id": 5001,
            "format": {"id": 1, "name": "Text"},
            "status": {"id": 2, "name": "Received"},
            "confirmationStatus": {"id": 3, "name": "Confirmed"},
            "user": {"id": 3, "email": "anna@example.org", "externalId": "u-3"},
            "deadline": {"date": "2026-11-23", "time": "18:00"},
            "note": "Call back.",
            "done": False,
            "content": {"headline": "Budget passes", "text": "<p>Body</p>"},
        },
        {"id": 5002, "user": {"name": "Ben"}, "deadline": {"date": "2026-11-24"}, "done": True},
    ],
    "publications": [
        {
            "id": 7001,
            "platform": {"id": 99003},
            "status": {"id": 1, "name": "No Status"},
            "category": {"id": 90000, "name": "Politics"},
            "type": {"id": 6, "name": "Story"},
            "schedule": {"kind": "single", "date": "2026-11-23", "timing": {"type": "time", "time": "19:30"}},
            "published": {"date": "2026-11-23", "time": "19:31"},
            "assignedTaskIds": [5002],
            "externalId": "cms-9",
            "cms": {"cmsEditLink": "https://cms.example/9/edit", "cmsOpenLink": "https://example.org/9"},
        },
        {"id": 7002, "platform": {"id": 99004}, "schedule": {"kind": "single", "date": "2026-11-25"}},
        {"id": 7003, "platform": {"id": 99005}, "schedule": {"kind": "recurring"}, "published": {"time": "10:00"}},
    ],
}

# Each optional part of FULL (a path of keys and list positions), to be left out, set to null or to a blank.
PARTS: list[tuple[Any, ...]] = [
    ("title",),
    ("slug",),
    ("note",),
    ("elementStatus",),
    ("elementStatus", "name"),
    ("modificationDate",),
    ("externalElement",),
    ("externalElement", "externalId"),
    ("externalElement", "link"),
    ("groups",),
    ("groups", 0, "name"),
    ("customFields",),
    ("customFields", 0, "value"),
    ("tasks",),
    ("tasks", 0, "format"),
    ("tasks", 0, "format", "name"),
    ("tasks", 0, "status"),
    ("tasks", 0, "confirmationStatus"),
    ("tasks", 0, "user"),
    ("tasks", 0, "user", "email"),
    ("tasks", 0, "user", "id"),
    ("tasks", 0, "user", "externalId"),
    ("tasks", 0, "deadline"),
    ("tasks", 0, "deadline", "time"),
    ("tasks", 0, "deadline", "date"),
    ("tasks", 0, "note"),
    ("tasks", 0, "done"),
    ("tasks", 0, "content"),
    ("tasks", 0, "content", "text"),
    ("tasks", 0, "content", "headline"),
    ("publications",),
    ("publications", 0, "status"),
    ("publications", 0, "category"),
    ("publications", 0, "type"),
    ("publications", 0, "schedule"),
    ("publications", 0, "schedule", "timing"),
    ("publications", 0, "published"),
    ("publications", 0, "published", "time"),
    ("publications", 0, "assignedTaskIds"),
    ("publications", 0, "externalId"),
    ("publications", 0, "cms"),
    ("publications", 0, "cms", "cmsEditLink"),
    ("publications", 0, "cms", "cmsOpenLink"),
]


def _changed(data: dict[str, Any], path: tuple[Any, ...], how: str) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    parent: Any = changed
    for key in path[:-1]:
        parent = parent[key]
    if how == "absent":
        del parent[path[-1]]
    elif how == "null":
        parent[path[-1]] = None
    else:  # blank: the element's models read a blank string as absent; an empty list or object stays empty
        value = parent[path[-1]]
        parent[path[-1]] = "" if isinstance(value, str) else type(value)()
    return changed


def _variants() -> list[Element]:
    """Every variant the element's models accept (a null where they want a list is refused, say)."""
    variants = [FULL, {"id": 1}, {"id": 2, "tasks": [], "publications": [{"id": 3, "platform": 4}]}]
    for path in PARTS:
        variants.extend(_changed(FULL, path, how) for how in ("absent", "null", "blank"))
    bare = FULL
    for path in reversed(PARTS):  # every part gone at once, the deepest first
        bare = _changed(bare, path, "absent")
    variants.append(bare)
    accepted = []
    for data in variants:
        try:
            accepted.append(Element.model_validate(data))
        except ValidationError:
            continue
    assert len(accepted) > 100
    return accepted


@pytest.mark.parametrize("element", _variants())
def test_the_global_export_body_is_the_compacted_one(element: Element) -> None:
    assert jsontext.encode(global_export_body(element)) == jsontext.encode(_body(element))
    for task in element.tasks:
        assert jsontext.encode(v1_task(task)) == jsontext.encode(_task(task))
    for publication in element.publications:
        assert jsontext.encode(v1_publication(publication, element.tasks)) == jsontext.encode(
            _publication(publication, element.tasks)
        )
    for field in element.custom_fields:
        assert jsontext.encode(v1_custom_field(field)) == jsontext.encode(_custom_field(field))


@pytest.mark.parametrize("name", ["seed001_full", "seed001_create", "seed001_update"])
def test_the_seed_bodies_are_the_compacted_ones(name: str) -> None:
    element = Element.model_validate(load(name))
    assert jsontext.encode(global_export_body(element)) == jsontext.encode(_body(element))
