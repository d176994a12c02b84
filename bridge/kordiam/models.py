"""Tolerant pydantic models for the Kordiam element aggregate.

Kordiam's public docs leave many names unconfirmed (see ``../shared/reference/kordiam-api.md`` §3.7), and the
same element reaches us in two dialects: API v2 responses and the v1-shaped bodies of the Global Export and
Platform integrations (seeds 001 and 002). These models accept both, ignore unknown fields, and treat an empty
optional string as absent, so that an additive change on Kordiam's side never breaks the bridge.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.digits import ascii_digits
from bridge.kordiam import assumptions

# The largest id or version the state stores keep (SQLite's INTEGER is a signed 64-bit one): a larger one from
# Kordiam is an unexpected answer, refused here with its field named, not an overflow in the store's write.
MAX_ID = 2**63 - 1


def _blank_to_none(value: Any) -> Any:
    """Kordiam may omit an empty optional string or send ``""``; both mean absent."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _from_dialect(data: dict[str, Any], ours: str, theirs: str, convert: Callable[[Any], Any] | None = None) -> None:
    """Fill ``ours`` from the other dialect's name for it (``theirs``) when only that one has a value: the rule
    by which every model reads both API v2 and the v1-shaped bodies."""
    if data.get(ours) is None and data.get(theirs) is not None:
        data[ours] = data[theirs] if convert is None else convert(data[theirs])


class KordiamModel(BaseModel):
    # allow_inf_nan=False: NaN and Infinity are not JSON; refused here, none can reach a channel's body.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _blank_strings(cls, data: Any) -> Any:
        # Runs for every nested object of every element: copy only the rare object that has a blank string.
        if isinstance(data, dict):
            # A plain loop, not any() over a generator: this runs for some 15 objects of every element fetched.
            for value in data.values():
                if isinstance(value, str) and (not value or value.isspace()):
                    return {key: _blank_to_none(value) for key, value in data.items()}
        return data


class Ref(KordiamModel):
    """A reference to reference data: ``{"id": 1, "name": "…"}`` in reads, a bare id in v1 writes."""

    id: int
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_bare_id(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("a reference is an id or an object, not a boolean")
        if isinstance(data, int | str) and ascii_digits(str(data).strip().lstrip("-")):
            return {"id": int(data)}
        return data

    def matches(self, selector: int | str) -> bool:
        """True if ``selector`` is this reference's id, or its name (case-insensitive)."""
        if isinstance(selector, int):
            return selector == self.id
        if ascii_digits(selector.strip()):
            return int(selector) == self.id
        return self.name is not None and self.name.casefold() == selector.strip().casefold()


class Person(KordiamModel):
    """A task assignee: v2 ``user`` ({id, email, firstName, …}) or v1 ``assignee`` ({id, name=email})."""

    id: int | None = None
    email: str | None = None
    first_name: str | None = Field(default=None, alias="firstName")
    last_name: str | None = Field(default=None, alias="lastName")
    name: str | None = None
    external_id: str | None = Field(default=None, alias="externalId")

    @model_validator(mode="before")
    @classmethod
    def _v1_fields(cls, data: Any) -> Any:
        if isinstance(data, int):
            return {"id": data}
        if isinstance(data, dict):
            data = dict(data)
            if "externalId" not in data and "external_id" in data:
                data["externalId"] = data["external_id"]
            # v1 puts the e-mail address into `name`.
            name = data.get("name")
            if not data.get("email") and isinstance(name, str) and "@" in name:
                data["email"] = name
        return data

    @property
    def display_name(self) -> str | None:
        full = " ".join(part for part in (self.first_name, self.last_name) if part)
        if full:
            return full
        if self.name and self.name != self.email:
            return self.name
        return self.email


class DateTimeSlot(KordiamModel):
    """``{"date": "yyyy-MM-dd", "time": "HH:mm"}``, as used by deadlines, v1 schedules and ``published``."""

    date: dt.date | None = None
    time: dt.time | None = None


class TaskContent(KordiamModel):
    headline: str | None = None
    lead: str | None = None
    text: str | None = None


class Task(KordiamModel):
    id: int
    format: Ref | None = None
    status: Ref | None = None
    confirmation_status: Ref | None = Field(default=None, alias="confirmationStatus")
    assignee: Person | None = None
    deadline: DateTimeSlot | None = None
    note: str | None = None
    content: TaskContent | None = None
    done: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        _from_dialect(data, "format", "formatId")
        _from_dialect(data, "status", "statusId")
        # v2 calls the assignee `user`; v1 and the webhooks call it `assignee`.
        _from_dialect(data, "assignee", "user")
        # v1 (seed 002) carries the text as a string in `content` with `headline` beside it.
        content = data.get("content")
        if content is None or isinstance(content, str):
            data["content"] = {"text": content, "headline": data.get("headline"), "lead": data.get("lead")}
        _from_dialect(data, "done", "is_done")
        return data

    @property
    def is_text(self) -> bool:
        name = (self.format.name or "").strip("_ ").casefold() if self.format else ""
        return name == "text" or (name == "" and self.content is not None and self.content.text is not None)


class Schedule(KordiamModel):
    """When a publication is planned: a date and, where known, a time of day (UTC, as Kordiam sends GMT; a time
    with an offset of its own is at that offset)."""

    kind: Literal["single", "recurring"] = "single"
    date: dt.date | None = None
    time: dt.time | None = None

    @model_validator(mode="after")
    def _has_utc_instant(self) -> Schedule:
        # Channels write the instant in UTC: refused here, named, rather than an OverflowError in a channel.
        try:
            self.instant()
        except OverflowError:
            raise ValueError(f"{self.date}T{self.time} has no UTC time within the years 1 to 9999") from None
        return self

    def instant(self) -> dt.datetime | None:
        """The planned instant in UTC, if there is a date and a time."""
        if self.date is None or self.time is None:
            return None
        zone = self.time.tzinfo or assumptions.KORDIAM_TZ
        return dt.datetime.combine(self.date, self.time.replace(tzinfo=None), tzinfo=zone).astimezone(dt.UTC)


class CmsLinks(KordiamModel):
    """The publication's ``cms`` object. Its inner names are an assumption: see ``assumptions.CMS_FIELDS``."""

    edit_link: str | None = None
    open_link: str | None = None
    edit_link_title: str | None = None
    open_link_title: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        wire_names = set(assumptions.CMS_FIELDS.values())
        if isinstance(data, dict) and wire_names & data.keys() and not set(assumptions.CMS_FIELDS) & data.keys():
            return {ours: data.get(theirs) for ours, theirs in assumptions.CMS_FIELDS.items()}
        return data


class Publication(KordiamModel):
    id: int = Field(le=MAX_ID)
    platform: Ref
    status: Ref | None = None
    category: Ref | None = None
    type: Ref | None = None
    schedule: Schedule | None = None
    published: DateTimeSlot | None = None
    assigned_task_ids: tuple[int, ...] = Field(default=(), alias="assignedTaskIds")
    external_id: str | None = Field(default=None, alias="externalId")
    cms: CmsLinks | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for ref in ("platform", "status", "category", "type"):
            _from_dialect(data, ref, f"{ref}Id")
        data["schedule"] = _schedule_from(data)
        if isinstance(data.get("published"), dict) and "start" in data["published"]:
            data["published"] = data["published"]["start"]
        # v1 links tasks by a boolean list positional to the element's tasks; resolved in Element.
        _from_dialect(data, "externalId", "cms_id", str)
        if data.get("cms") is None and (data.get("url_to_content_in_cms") or data.get("url_to_published_content")):
            data["cms"] = {
                assumptions.CMS_FIELDS["edit_link"]: data.get("url_to_content_in_cms"),
                assumptions.CMS_FIELDS["open_link"]: data.get("url_to_published_content"),
            }
        return data

    @field_validator("external_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def is_published(self) -> bool:
        return self.published is not None and self.published.date is not None

    def scheduled_at(self) -> dt.datetime | None:
        """The planned instant in UTC, if the publication has both a date and a time."""
        return self.schedule.instant() if self.schedule is not None else None


def _schedule_from(data: dict[str, Any]) -> Any:
    """Normalise v2 ``schedule`` and v1 ``single.start`` to one shape.

    Seed 001: a cross-day time slot is already sent as "selected day + 1", so the date is used as given.
    """
    schedule = data.get("schedule")
    if isinstance(schedule, dict):
        timing = schedule.get("timing") or {}
        slot_time = timing.get(assumptions.SCHEDULE_TIMING_TIME_KEY) if isinstance(timing, dict) else None
        return {"kind": schedule.get("kind") or "single", "date": schedule.get("date"), "time": slot_time}
    single = data.get("single")
    if isinstance(single, dict):
        start = single.get("start") or {}
        if not isinstance(start, dict):  # a ValueError here is pydantic's ValidationError, as for any odd field
            raise ValueError(f"single.start is a {type(start).__name__}, not an object")
        return {"kind": "single", "date": start.get("date"), "time": start.get("time")}
    if data.get("recurring"):
        return {"kind": "recurring"}
    return schedule


class ExternalElement(KordiamModel):
    """The element's link to an external system (v2 ``externalId``; v1 and Global Export ``id``)."""

    external_id: str | None = Field(default=None, alias="externalId")
    link: str | None = None
    system_url: str | None = Field(default=None, alias="systemUrl")

    @model_validator(mode="before")
    @classmethod
    def _v1_id(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            _from_dialect(data, "externalId", "id", str)
        return data


class CustomFieldValue(KordiamModel):
    """``{"id": fieldId, <one of> value | selectedOptionIds | date | number}``; v1 ``selectedOption``."""

    id: int
    value: str | None = None
    selected_option_ids: tuple[int, ...] = Field(default=(), alias="selectedOptionIds")
    date: dt.date | None = None
    # A float, as it always was: the delivery fingerprints digest this model's JSON, so an int here would
    # change every stored one with a number field and rewrite its channels.
    number: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _v1_option(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "customFieldId" in data and "id" in data:
                data["id"] = data["customFieldId"]
            option = data.get("selectedOption")
            if data.get("selectedOptionIds") is None and option is not None:
                # An object without an id is left for the field's validation to refuse (as a ValidationError).
                data["selectedOptionIds"] = [option.get("id") if isinstance(option, dict) else option]
            if isinstance(data.get("value"), int | float) and not isinstance(data.get("value"), bool):
                data["value"] = str(data["value"])
        return data

    def as_text(self) -> str | None:
        if self.value is not None:
            return self.value
        if self.selected_option_ids:
            return ",".join(str(option) for option in self.selected_option_ids)
        if self.date is not None:
            return self.date.isoformat()
        if self.number is not None:
            return _number_text(self.number)
        return None


def _number_text(number: float) -> str:
    """A number with every digit Kordiam sent: 1234567, not ``:g``'s 1.23457e+06; 4.0 as 4."""
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return str(number)  # the shortest text that reads back as the same number


class Element(KordiamModel):
    """A Kordiam story or event with its tasks and publications."""

    id: int = Field(gt=0, le=MAX_ID)
    version: int | None = Field(default=None, le=MAX_ID)
    title: str | None = None
    slug: str | None = None
    note: str | None = None
    status: Ref | None = Field(default=None, alias="elementStatus")
    modification_date: dt.datetime | None = Field(default=None, alias="modificationDate")
    groups: tuple[Ref, ...] = ()
    custom_fields: tuple[CustomFieldValue, ...] = Field(default=(), alias="customFields")
    external_element: ExternalElement | None = Field(default=None, alias="externalElement")
    tasks: tuple[Task, ...] = ()
    publications: tuple[Publication, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        # Seed 002 (Platform integration) calls the title `description` and sends one `publication`.
        if data.get("title") is None and isinstance(data.get("description"), str):
            data["title"] = data["description"]
        if data.get("publications") is None and isinstance(data.get("publication"), dict):
            data["publications"] = [data["publication"]]
        for key in ("groups", "customFields", "tasks", "publications"):
            if data.get(key) is None:
                data.pop(key, None)
        publications, tasks = data.get("publications") or [], data.get("tasks") or []
        if isinstance(publications, list):  # anything else is left for the field's validation to refuse
            data["publications"] = _resolve_v1_assignments(publications, tasks if isinstance(tasks, list) else [])
        return data

    @field_validator("modification_date")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=assumptions.KORDIAM_TZ)
        # Channels and stores write it in UTC: one whose UTC time falls outside the years 1-9999 would be an
        # OverflowError there (counted against the channel's breaker), so it is refused here, named.
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError(f"{value.isoformat()} has no UTC time within the years 1 to 9999") from None
        return value

    @property
    def text_task(self) -> Task | None:
        """The story's main text: the first text task, preferring one linked to a publication."""
        texts = [task for task in self.tasks if task.is_text]
        return texts[0] if texts else None

    def text_task_for(self, publication: Publication) -> Task | None:
        linked = [t for t in self.tasks if t.id in publication.assigned_task_ids and t.is_text]
        return linked[0] if linked else self.text_task

    def publication(self, publication_id: int) -> Publication | None:
        return next((p for p in self.publications if p.id == publication_id), None)


def _resolve_v1_assignments(publications: list[Any], tasks: list[Any]) -> list[Any]:
    """v1 ``assignments`` is a list of booleans positional to ``tasks``; turn it into task ids."""
    resolved = []
    for publication in publications:
        flags = publication.get("assignments") if isinstance(publication, dict) else None
        if isinstance(flags, list) and "assignedTaskIds" not in publication:
            ids = [
                task.get("id")
                for flag, task in zip(flags, tasks, strict=False)
                if flag is True and isinstance(task, dict)
            ]
            resolved.append({**publication, "assignedTaskIds": [i for i in ids if i is not None]})
        else:
            resolved.append(publication)
    return resolved


class Token(KordiamModel):
    # Visible ASCII only (RFC 6750's b64token is a subset): a control character or a space would break the
    # Authorization header of every request, or change what it says.
    access_token: str = Field(repr=False, pattern=r"^[\x21-\x7e]+$")
    token_type: str = "Bearer"
    expires_in: int = Field(default=3600, gt=0)
    scope: str | None = None
    refresh_token: str | None = Field(default=None, repr=False)


def _seconds(value: Any) -> float | None:
    """A ``retryAfter`` as a wait in seconds: ``None`` for what is not a finite number; a negative one asks for no
    wait, so the back-off decides (``KordiamClient._pause_or_raise``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class ProblemDetails(KordiamModel):
    """RFC 9457 Problem Details, as Kordiam API v2 returns them (``application/problem+json``)."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None
    trace_id: str | None = Field(default=None, alias="traceId")
    retry_after: float | None = Field(default=None, alias="retryAfter")
    errors: tuple[dict[str, Any], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _tolerant(cls, data: Any) -> Any:
        # Read member by member: a Java serialiser writes absent members as null (`"errors": null`), a trace id may
        # be a number. One odd member must not cost the answer its `type`, which tells a deletion (404
        # resource-not-found) from an unrouted path, or its `retryAfter`.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("type", "title", "detail", "instance", "traceId"):
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                data[name] = str(value)
            elif value is not None and not isinstance(value, str):
                data[name] = None
        if not (isinstance(data.get("status"), int) and not isinstance(data.get("status"), bool)):
            data["status"] = None
        data["retryAfter"] = _seconds(data.get("retryAfter"))
        errors = data.get("errors")
        data["errors"] = [item for item in errors if isinstance(item, dict)] if isinstance(errors, list) else []
        return data

    @property
    def slug(self) -> str | None:
        """The last path segment of ``type``, e.g. ``validation-failed``."""
        return self.type.rstrip("/").rsplit("/", 1)[-1] if self.type else None

    def summary(self) -> str:
        parts = [p for p in (self.title, self.detail) if p]
        for error in self.errors[:3]:
            parts.append(f"{error.get('path') or error.get('scope')}: {error.get('message')}")
        if self.trace_id:
            parts.append(f"traceId={self.trace_id}")
        return "; ".join(parts) or "no details"
