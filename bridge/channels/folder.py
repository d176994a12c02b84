"""``folder``: each publication as a JSON document plus a readable HTML page in a directory.

Useful on its own (a hot folder, an archive, a static preview) and as the demo's channel. File names are
deterministic (``<element>-<publication>``), so a re-sent story replaces its files instead of adding new ones,
and every write goes to a temporary file first and is renamed into place, so readers never see half a file.
The story's HTML is sanitised (``ARTICLE_HTML``, ``bridge.channels.text``) in both files; the page shows headline
and lead as plain text, the JSON keeps Kordiam's values as sent.
"""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from bridge.channels.base import Channel, ChannelContext, ChannelResult
from bridge.channels.files import atomic_write, check_writable, os_error, sync_folder
from bridge.channels.text import ARTICLE_HTML, plain_text, sanitize_html
from bridge.config import ChannelSettings, path_text
from bridge.errors import ChannelRejected
from bridge.kordiam.models import Element, Publication


class FolderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path

    @field_validator("path", mode="before")
    @classmethod
    def _given(cls, value: object) -> object:
        # Path("") is ".": an empty template variable would have the worker write into its working directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return path_text(value) if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _usable(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value


class FolderChannel:
    """Writes files into ``path``. A write error that may heal (a full disk, an I/O error, a share briefly gone)
    is ``ChannelUnavailable`` and retried; only one that waiting cannot fix is ``ChannelRejected``. ``create``
    checks at start-up that the folder can be written, so a wrong ``path`` stops the worker, not every message.

    One item per publication: ``{element}-{publication}.json`` and ``.html``, replaced atomically, so an upsert
    again rewrites the same two files; deleting files that are gone is done.
    """

    element_scoped = False

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path.resolve()

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        stem = f"{element.id}-{publication.id}"
        document = json.dumps(_document(element, publication), ensure_ascii=False, indent=2)
        page = _page(element, publication)
        await asyncio.to_thread(self._write, stem, document, page)
        return ChannelResult(
            external_id=stem,
            edit_link=(self.path / f"{stem}.json").as_uri(),
            open_link=(self.path / f"{stem}.html").as_uri(),
            live=publication.is_published,
        )

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        await asyncio.to_thread(self._remove, external_id)

    async def aclose(self) -> None:
        return None

    def _write(self, stem: str, document: str, page: str) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path / f"{stem}.json", document.encode())
            atomic_write(self.path / f"{stem}.html", page.encode())
        except OSError as error:
            raise os_error(error, f"folder {self.path}: cannot write {stem}", self.path) from error

    def _remove(self, stem: str) -> None:
        # The external id is ours; refuse anything that could point outside the folder.
        if "/" in stem or stem.startswith("."):
            raise ChannelRejected(f"folder {self.path}: refusing to delete {stem!r}")
        try:
            for suffix in (".json", ".html"):
                (self.path / f"{stem}{suffix}").unlink(missing_ok=True)
            sync_folder(self.path)  # recorded as retracted once this returns: a power loss must not bring it back
        except OSError as error:
            raise os_error(error, f"folder {self.path}: cannot delete {stem}", self.path) from error


def _document(element: Element, publication: Publication) -> dict[str, Any]:
    text = element.text_task_for(publication)
    content = text.content if text else None
    scheduled = publication.scheduled_at()
    return {
        "element": {
            "id": element.id,
            "version": element.version,
            "title": element.title,
            "slug": element.slug,
            "note": element.note,
            "status": element.status.name if element.status else None,
            "modificationDate": element.modification_date.isoformat() if element.modification_date else None,
        },
        "publication": {
            "id": publication.id,
            "platform": publication.platform.id,
            "status": publication.status.name if publication.status else None,
            "category": publication.category.name if publication.category else None,
            "type": publication.type.name if publication.type else None,
            "date": publication.schedule.date.isoformat()
            if publication.schedule and publication.schedule.date
            else None,
            "scheduledAt": scheduled.isoformat() if scheduled else None,
        },
        "text": {
            "headline": content.headline if content else None,
            "lead": content.lead if content else None,
            "html": sanitize_html(content.text, ARTICLE_HTML) if content and content.text else None,
            "author": text.assignee.display_name if text and text.assignee else None,
        },
        "customFields": {str(field.id): field.as_text() for field in element.custom_fields},
    }


def _page(element: Element, publication: Publication) -> str:
    document = _document(element, publication)
    text, meta = document["text"], document["publication"]
    # Headline and lead read as the other channels read them (tags dropped, entities decoded), then escaped.
    headline = plain_text(text["headline"]) or plain_text(element.title) or plain_text(element.slug)
    title = html.escape(headline or f"Element {element.id}")
    lead_text = plain_text(text["lead"])
    facts = " · ".join(
        html.escape(str(value))
        for value in (meta["status"], meta["category"], meta["scheduledAt"] or meta["date"], text["author"])
        if value
    )
    lead = f'<p class="lead">{html.escape(lead_text)}</p>' if lead_text else ""
    return (
        '<!doctype html>\n<html lang="und"><head><meta charset="utf-8">'
        f"<title>{title}</title></head>\n<body>\n<article>\n<h1>{title}</h1>\n"
        f'<p class="meta">{facts}</p>\n{lead}\n{text["html"] or ""}\n</article>\n</body></html>\n'
    )


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, FolderOptions)
    check_writable(options.path, "path")  # start-up, before the worker takes a message: a moment's blocking I/O
    return FolderChannel(settings.name, options.path)
