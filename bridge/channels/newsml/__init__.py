"""``newsml``: each publication as an IPTC NewsML-G2 ``newsItem`` in a print system's hot folder (S3 or local).

Print systems ingest through hot folders, and NewsML-G2 is the news industry's exchange format. For every
publication this channel writes one XML file, ``{file_prefix}{element}-{publication}.xml``, into ``target``: an
S3 prefix (``s3://bucket/prefix/``, one ``PutObject``, which is atomic) or a local folder (a hidden temporary file
``.NAME.*.tmp`` in the same folder, fsynced and renamed into place, so a watcher matching ``*.xml`` never sees half
a file; the folder is fsynced after, so the rename survives a power loss). The name is deterministic, so a
re-sent story replaces its file.

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``target`` (required): ``s3://bucket/prefix/`` or a folder path (``file:///…`` accepted). A prefix without a
  trailing ``/`` is taken as a folder all the same.
- ``endpoint_url`` (S3 only, optional): MinIO, LocalStack or moto; ``region`` (S3 only, optional: the AWS
  default chain's). S3 credentials come from the standard AWS chain (environment, profile, instance role), never
  from this file. They need ``s3:PutObject`` on the prefix, and should have ``s3:GetObject`` and
  ``s3:ListBucket`` so the channel can read its last item back (see "Versions"); without them it carries on
  with versions from Kordiam alone.
- ``provider`` = "kordiam-bridge": the item's provider, a QCode if it contains ``:`` (``nprov:EXAMPLE``), else a
  literal.
- ``guid_prefix`` = "urn:kordiam:": the guid is ``{guid_prefix}{element}:{publication}``. Changing it later gives
  every story a new identity in the print system.
- ``file_prefix`` = "kordiam-", ``language`` (optional BCP 47 tag: ``xml:lang`` and ``<language>``),
  ``timeout`` = 10 (seconds each S3 call may take, botocore's retries included).

Mapping, Kordiam → NewsML-G2 (standard version 2.35, ``conformance="power"``):

===========================  =====================================================================================
newsItem/@guid               ``{guid_prefix}{element id}:{publication id}``, stable for the publication's life
newsItem/@version            see "Versions" below
itemMeta/pubStatus           ``stat:usable``; ``stat:canceled`` when the publication is retracted (see "Delete")
itemMeta/versionCreated      the element's ``modificationDate`` (UTC), else the time of writing
itemMeta/fileName            the file's own name; ``generator`` = kordiam-bridge and its version
itemMeta/edNote              the element's note (plain text)
contentMeta/contentModified  the element's ``modificationDate``
contentMeta/creator, by      the text task's assignee (display name, else e-mail)
contentMeta/headline         the text task's headline, else the element title, else its slug (plain text)
contentMeta/slugline         the element's slug
contentMeta/description      the text task's lead, ``role="drol:summary"`` (plain text)
contentMeta/subject          the publication category: ``qcode="kdmcat:{id}"`` with its name
contentMetaExtProperty       ``kdm:plannedIssueDate`` (xs:date), ``kdm:plannedTime`` (xs:dateTime, UTC),
                             ``kdm:elementId``, ``kdm:publicationId``, ``kdm:platformId``, ``kdm:publicationStatus``,
                             ``kdm:pageElementType``, and one ``kdmfield:{id}`` per custom field with a value
contentSet/inlineXML         the text task's HTML as an XHTML document (``application/xhtml+xml``), with
                             ``wordcount``
===========================  =====================================================================================

The aliases ``kdm``, ``kdmcat`` and ``kdmfield`` are declared in an inline ``<catalog>`` (``urn:kordiam:…``);
``stat``, ``ninat``, ``drol`` come from the IPTC catalog referenced by ``catalogRef``.

Body: the story's HTML is sanitised with nh3 (no script/style with their content, no event handlers, no
``javascript:``/``data:`` URLs; keeps p, br, h2–h6, lists, tables, blockquote, a[href], img[src alt], b/strong,
i/em, u, s, sub, sup, …), then parsed again and written as XHTML elements, so the item is always well-formed
XML: HTML entities such as ``&nbsp;`` become characters, unclosed tags are closed, and characters XML 1.0
cannot carry (control characters, lone surrogates) are dropped. Elements nested more than 100 levels deep
(``MAX_BODY_DEPTH``) are left out, their text kept, so that libxml2 (which refuses 256) reads every item.

Versions: a NewsML-G2 receiver keeps the highest ``version`` of a guid, so the version must grow with each
change and never go back. It is derived from Kordiam, never from the clock: the element's ``modificationDate``
as Unix seconds (else ``element.version``, else 1). Seconds are comparable with the clock, which lets a
cancellation (``delete()`` receives no element) outrank the last version sent even when the consumer has
already taken the file away. Before writing, the channel reads the item it wrote last (one GET/read); if that
already has this version or a higher one (two changes in one second, a re-added publication after a
cancellation, an item without ``modificationDate``), the new item gets that version + 1 — unless it is the same
item again (a re-send), which is then not written at all.

Delete: print systems need to learn about a cancellation, so the file is not removed: the item is written again
with ``pubStatus`` ``stat:canceled``, its version + 1 and an editorial note, keeping its content so the desk
sees what was withdrawn. Deleting an already canceled item changes nothing. If the file is gone (a consuming hot
folder), a minimal canceled item (guid, itemMeta) is written, versioned with the current Unix time — the one
case where the clock decides, because no earlier version is known. For a deleted element the channel also
lists the names made for it (``find_items``, ``FindsItems``) and reports each item not canceled yet, so one whose
write answer was lost is canceled too; a target that cannot be listed (S3 without ``s3:ListBucket``) is not
searched.

Result: ``external_id`` = the guid, ``edit_link`` = ``open_link`` = the file's ``s3://…`` or ``file://…`` URI,
``live`` = False (print goes live when the paper is printed, which the bridge cannot see).

Errors: S3 ``AccessDenied``, ``NoSuchBucket``, bad credentials and other 4xx → ``ChannelRejected``; throttling,
5xx, timeouts and connection errors → ``ChannelUnavailable``; a folder that cannot be written →
``ChannelRejected``. botocore retries a blip in-process (standard mode, 3 attempts); beyond that the queue
retries.

Modules: ``options`` (the keys), ``xhtml`` (the body), ``item`` (building, versions, cancellation), ``document``
(bytes and back), ``targets`` (folder, S3), ``channel`` (the adapter); ``g2`` holds the standard's names.
"""

from __future__ import annotations

from bridge.channels.newsml.channel import NewsMLChannel, create
from bridge.channels.newsml.document import parse_item, render
from bridge.channels.newsml.g2 import CANCELED, NAR, USABLE, XHTML
from bridge.channels.newsml.item import build_item, cancel_item, canceled_stub, derived_version
from bridge.channels.newsml.options import NewsMLOptions
from bridge.channels.newsml.targets import FolderTarget, S3Target, s3_error
from bridge.channels.newsml.xhtml import item_text

__all__ = [
    "CANCELED",
    "NAR",
    "USABLE",
    "XHTML",
    "FolderTarget",
    "NewsMLChannel",
    "NewsMLOptions",
    "S3Target",
    "build_item",
    "cancel_item",
    "canceled_stub",
    "create",
    "derived_version",
    "item_text",
    "parse_item",
    "render",
    "s3_error",
]
