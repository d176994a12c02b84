"""The v1 element model Kordiam's webhooks send, projected from the simulator's stored v2 element.

Seed 001 (Global Export) and seed 002 (Platform integration) show v1-shaped bodies, which Livingdocs reads as
the v1 "Get Element" model (reference 5.1): a publication's platform as a bare id, its schedule as
``single.start {date, time}`` and ``published.start``, its tasks as ``assignments`` (booleans positional to the
element's ``tasks``), an assignee as ``{id, name: e-mail, external_id}``, the external element as ``{id, link}``.
Global Export sends no task content; the Platform integration sends the one publication of its platform, the
title also as ``description``, the element status as a bare id and a task's text as a string with ``headline``
beside it. Fields the seeds do not name (custom field values, CMS links) go as the store holds them.

A value of a shape the projection does not expect (admin scenarios store odd elements on purpose) is passed on as
it is, so that the receiver meets the oddity the scenario meant.
"""

from __future__ import annotations

from typing import Any

# What the webhooks leave out: server bookkeeping of the v2 API that the seeds' bodies do not carry.
_NOT_SENT = frozenset({"version", "creationTime"})


def global_export_body(element: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST``/``PUT {url}/element`` (seed 001)."""
    tasks = element.get("tasks")
    body = _element(element)
    if isinstance(tasks, list):
        body["tasks"] = [_task(task, with_content=False) for task in tasks]
    publications = element.get("publications")
    if isinstance(publications, list):
        body["publications"] = [_publication(publication, tasks) for publication in publications]
    return body


def platform_body(element: dict[str, Any], publication: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST``/``PUT {url}/publication`` for one of the element's publications (seed 002)."""
    tasks = element.get("tasks")
    body = _element(element)
    body.pop("publications", None)
    if isinstance(element.get("title"), str):
        body["description"] = element["title"]
    status = element.get("elementStatus")
    if isinstance(status, dict) and "id" in status:
        body["elementStatus"] = status["id"]
    if isinstance(tasks, list):
        body["tasks"] = [_task(task, with_content=True) for task in tasks]
    body["publication"] = _publication(publication, tasks)
    return body


def _element(element: dict[str, Any]) -> dict[str, Any]:
    body = {key: value for key, value in element.items() if key not in _NOT_SENT}
    external = element.get("externalElement")
    if isinstance(external, dict):
        body["externalElement"] = {
            key: value
            for key, value in (("id", external.get("externalId")), ("link", external.get("link")))
            if value is not None
        }
    return body


def _task(task: Any, *, with_content: bool) -> Any:
    if not isinstance(task, dict):
        return task
    body = dict(task)
    user = body.pop("user", None)
    if isinstance(user, dict):
        assignee = {"id": user.get("id"), "name": user.get("email")}
        if user.get("externalId") is not None:
            assignee["external_id"] = user["externalId"]
        body["assignee"] = {key: value for key, value in assignee.items() if value is not None}
    elif user is not None:
        body["assignee"] = user
    content = body.pop("content", None)
    if with_content and isinstance(content, dict):
        body.update({key: content[key] for key in ("headline", "lead") if content.get(key) is not None})
        body["content"] = content.get("text")
    elif with_content and content is not None:
        body["content"] = content
    return body


def _publication(publication: Any, tasks: Any) -> Any:
    if not isinstance(publication, dict):
        return publication
    body = dict(publication)
    platform = body.get("platform")
    if isinstance(platform, dict) and "id" in platform:
        body["platform"] = platform["id"]
    schedule = body.pop("schedule", None)
    if isinstance(schedule, dict) and schedule.get("kind") == "recurring":
        body["recurring"] = schedule
    elif isinstance(schedule, dict):
        timing = schedule.get("timing")
        time = timing.get("time") if isinstance(timing, dict) else None
        start = {key: value for key, value in (("date", schedule.get("date")), ("time", time)) if value is not None}
        body["single"] = {"start": start}
    elif schedule is not None:
        body["schedule"] = schedule
    published = body.get("published")
    if isinstance(published, dict) and "start" not in published:
        body["published"] = {"start": published}
    assigned = body.pop("assignedTaskIds", None)
    if isinstance(assigned, list) and isinstance(tasks, list):
        body["assignments"] = [isinstance(task, dict) and task.get("id") in assigned for task in tasks]
    elif assigned is not None:
        body["assignedTaskIds"] = assigned
    return body
