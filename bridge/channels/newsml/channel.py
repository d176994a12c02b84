"""The ``newsml`` adapter: one item per publication, written again as canceled on delete."""

from __future__ import annotations

import datetime as dt
import re
import time

import structlog
from pydantic import BaseModel

from bridge.channels.base import Channel, ChannelContext, ChannelResult, FoundItem
from bridge.channels.newsml.document import StoredItem, parse_item, render
from bridge.channels.newsml.g2 import CANCELED, NAR, USABLE
from bridge.channels.newsml.item import (
    build_item,
    cancel_item,
    canceled_stub,
    derived_version,
    element_file_prefix,
    file_name,
    guid_for,
)
from bridge.channels.newsml.options import NewsMLOptions
from bridge.channels.newsml.targets import FolderTarget, S3Target, Target
from bridge.config import ChannelSettings
from bridge.kordiam.models import Element, Publication

log = structlog.get_logger("bridge.channels.newsml")


class NewsMLChannel:
    """One NewsML-G2 file per publication (in a folder or an S3 bucket), its name the external id.

    Upsert reads the item written last and writes the next version unless it is the same item again (a re-send
    writes nothing); delete writes the item again as ``stat:canceled`` (a missing file gets a minimal canceled
    item), so a retried delete changes nothing. Raises ``ChannelRejected`` (S3 4xx and bad credentials, a folder
    that cannot be written) and ``ChannelUnavailable`` (throttling, 5xx, unreachable, a full disk).
    """

    element_scoped = False

    def __init__(self, name: str, options: NewsMLOptions) -> None:
        self.name = name
        self.options = options
        self._label = f"newsml channel {name!r}"
        self._target: Target = (
            S3Target(self._label, options) if options.is_s3 else FolderTarget(self._label, options.folder)
        )

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        name = file_name(self.options.file_prefix, element.id, publication.id)
        guid = guid_for(self.options.guid_prefix, element.id, publication.id)
        now = dt.datetime.now(dt.UTC)
        stored = self._parse(await self._target.read(name), name)
        version = derived_version(element)
        unchanged = False
        if stored is not None and stored.version >= version:
            # The last item already has this version (or a higher one): the same item again is not rewritten,
            # anything else becomes the next version, so versions never go back.
            unchanged = stored.pub_status == USABLE and self._same(element, publication, stored, now)
            version = stored.version if unchanged else stored.version + 1
        if unchanged:
            log.debug("newsml.unchanged", channel=self.name, guid=guid, version=version)
        else:
            data = render(build_item(element, publication, options=self.options, version=version, now=now))
            await self._target.write(name, data, _metadata(element.id, publication.id, version, USABLE))
            log.info("newsml.written", channel=self.name, guid=guid, version=version, uri=self._target.uri(name))
        uri = self._target.uri(name)
        return ChannelResult(
            external_id=guid,
            edit_link=uri,
            open_link=uri,
            live=False,
            edit_link_title="NewsML-G2 item",
            open_link_title="NewsML-G2 item",
        )

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        """Write the item again as ``stat:canceled`` (version + 1); the file stays so print learns of it."""
        name = file_name(self.options.file_prefix, element_id, publication_id)
        now = dt.datetime.now(dt.UTC)
        stored = self._parse(await self._target.read(name), name)
        if stored is not None and stored.pub_status == CANCELED:
            return  # already canceled: a repeated delete changes nothing
        if stored is not None:
            version = stored.version + 1
            root = stored.root
            cancel_item(root, version, now)
        else:
            guid = external_id.strip()
            if not guid or any(character.isspace() for character in guid):
                guid = guid_for(self.options.guid_prefix, element_id, publication_id)
            version = max(1, int(time.time()))
            root = canceled_stub(guid, version, options=self.options, now=now)
        await self._target.write(name, render(root), _metadata(element_id, publication_id, version, CANCELED))
        log.info("newsml.canceled", channel=self.name, guid=root.get("guid"), version=version)

    async def find_items(self, element_id: int) -> list[FoundItem]:
        """The element's items not canceled yet (``FindsItems``): one listing of the names made for it, and a read
        of each. A target that does not allow listing (a write-only hot folder) is not searched: nothing found."""
        prefix = element_file_prefix(self.options.file_prefix, element_id)
        names = await self._target.names(prefix)
        found = []
        for name in names or []:
            publication = re.fullmatch(rf"{re.escape(prefix)}([0-9]+)\.xml", name)
            if publication is None:
                continue
            publication_id = int(publication[1])
            stored = self._parse(await self._target.read(name), name)
            if stored is not None and stored.pub_status == CANCELED:
                continue
            guid = stored.root.get("guid") if stored is not None else None
            found.append(
                FoundItem(publication_id, guid or guid_for(self.options.guid_prefix, element_id, publication_id))
            )
        return found

    async def aclose(self) -> None:
        await self._target.aclose()

    def _same(self, element: Element, publication: Publication, stored: StoredItem, now: dt.datetime) -> bool:
        again = build_item(element, publication, options=self.options, version=stored.version, now=now)
        created = again.find(f"{{{NAR}}}itemMeta/{{{NAR}}}versionCreated")
        if created is not None and stored.version_created:
            created.text = stored.version_created
        return render(again) == render(stored.root)

    def _parse(self, data: bytes | None, name: str) -> StoredItem | None:
        if data is None:
            return None
        try:
            return parse_item(data)
        except ValueError as error:
            # Not ours to keep: it is replaced with a proper item (versions start again from Kordiam's).
            log.warning("newsml.unreadable_item", channel=self.name, file=name, problem=str(error))
            return None


def _metadata(element_id: int, publication_id: int, version: int, status: str) -> dict[str, str]:
    return {
        "kordiam-element": str(element_id),
        "kordiam-publication": str(publication_id),
        "newsml-version": str(version),
        "newsml-pubstatus": status,
    }


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, NewsMLOptions)
    return NewsMLChannel(settings.name, options)
