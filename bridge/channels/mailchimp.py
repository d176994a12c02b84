"""``mailchimp``: each publication on a newsletter platform as a Mailchimp campaign (Marketing API v3).

One regular campaign per publication, sent to one audience (``list_id``): created as a draft, its subject, preview
text and HTML taken from the story, and scheduled for the publication's date and time. Authentication is HTTP
Basic auth with any user name and the API key, on every request, through the process's shared HTTP client. The
API lives at ``https://{dc}.api.mailchimp.com/3.0``, where ``dc`` is the key's suffix (``…-us21`` → ``us21``).

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``api_key`` (required, a secret; ``BRIDGE_CHANNELS__…`` or the config file), ``list_id`` (required: the
  audience id, Audience → Settings → "Audience name and defaults")
- ``base_url`` (optional): overrides the data-centre URL derived from the key (a proxy, a test server)
- ``from_name``, ``reply_to`` (optional): the sender name and reply-to address; default: the audience's campaign
  defaults, read once from ``GET /lists/{list_id}``. Mailchimp schedules nothing without both.
- ``folder_id`` (optional): the campaign folder new campaigns are filed in
- ``footer_html``: appended to every campaign; the default carries ``*|UNSUB|*`` and ``*|UPDATE_PROFILE|*``,
  which Mailchimp requires in custom HTML. Trusted configuration: not sanitised.
- ``delete_mode`` = "delete" | "unschedule": what retracting a publication does to its campaign
- ``sent_edits`` = "reject" | "ignore": what an edit to a story whose campaign was already sent does (below)
- ``timeout``: seconds per request (default: ``kordiam.timeout``, the shared client's)

Mapping, Kordiam → Mailchimp:

==========================  ====================================================================================
settings.subject_line       the text task's headline, else the element title, else its slug (plain text, at most
                            150 characters: longer ones are cut with "…")
settings.preview_text       the text task's lead (plain text, at most 150 characters)
settings.title              the subject plus ``[Kordiam {element}/{publication}]``, so people can find it
settings.from_name/reply_to ``from_name``/``reply_to``, else the audience's defaults
recipients.list_id          ``list_id``
content (``html``)          a small HTML e-mail: the headline, the byline, the lead, the text task's HTML through
                            nh3 (no script/style/iframe/forms, no event handlers, only http/https/mailto/tel
                            links), then ``footer_html``
merge tags                  the story's own ``*|…|*`` are not expanded: in its HTML every ``*`` and ``|`` is a
                            character reference (``&#42;``, ``&#124;``); in the subject and preview, plain text,
                            an invisible zero-width non-joiner parts each ``*|``. ``footer_html``'s tags work.
schedule_time               ``publication.scheduled_at()`` rounded UP to the next quarter hour (Mailchimp sends
                            only at :00, :15, :30 and :45), as ISO 8601 UTC. No date and time, a time that has
                            passed, one less than a minute away once rounded, or one more than a year ahead
                            (Mailchimp's limit): the campaign stays an unscheduled draft.
==========================  ====================================================================================

Upsert: with an external id the campaign is read first. A campaign deleted by hand (404) is created again and
the new id returned. A scheduled campaign cannot be edited, so it is unscheduled, edited (``PATCH``, content
``PUT``) and scheduled again; a story that lost its date leaves an unscheduled draft. If a step fails after the
unschedule, the campaign stays an unscheduled draft until a retry succeeds: it is never sent with stale content.
A campaign that Mailchimp is sending or has sent (status ``sending``/``sent``/``canceling``/``canceled``) cannot
be changed: with ``sent_edits = "reject"`` (default) the edit fails with ``ChannelRejected`` naming the campaign
and its send time, which dead-letters the message with that reason instead of retrying it; with ``"ignore"`` the
edit is skipped with a warning and the result reports the campaign as live. If Mailchimp refuses a step for any
other reason (e.g. sending began between our read and our write) its ``detail`` is in the ``ChannelRejected``.

Delete: the campaign is unscheduled and deleted (``delete_mode = "unschedule"``: only unscheduled, kept as a
draft). A campaign already gone (404) counts as deleted, on Mailchimp's word only (``http_errors.item_gone``: its
problem JSON); a 404 from a proxy in front of it or a wrong path is ``ChannelUnavailable`` and retried, on the
read, the update and the delete alike. A campaign that was sent is left alone — an e-mail cannot
be recalled, and deleting it would only destroy its report — and the delete counts as done, with a warning.

Result: ``external_id`` = the campaign id, ``edit_link`` = ``https://{dc}.admin.mailchimp.com/campaigns/edit?id=
{web_id}`` (when the data centre is known), ``open_link`` = the campaign's ``archive_url``, ``live`` = Mailchimp
reports it ``sending`` or ``sent``. A scheduled campaign is not live: the newsletter has not gone out, and
"published" in Kordiam would claim it had. Mailchimp sends on its own later, so ``live`` is seen only by an
upsert after the send (``sent_edits = "ignore"``).

Errors (Mailchimp answers problem JSON: ``type, title, status, detail, instance`` and, for 400, ``errors``):
401/403 → ``ChannelRejected`` naming the channel and the key; 400 and other 4xx → ``ChannelRejected`` with
Mailchimp's ``title``/``detail``/``errors``; 408, 409, 425, 429, 5xx, timeouts and connection errors →
``ChannelUnavailable`` (with ``Retry-After``). Nothing is retried in-process: the queue retries.

Never two campaigns for one publication: the Marketing API has no idempotency key, and a campaign is made in
steps (create, content, schedule), any of which may fail or lose its answer after Mailchimp did it. Each
campaign's title ends with ``[Kordiam {element id}/{publication id}]``; before creating one, the adapter lists the
audience's ``MARK_SEARCH`` (1,000) newest campaigns and carries on with the oldest that ends with that mark, as
with a campaign it knew (scheduled: unscheduled, edited, scheduled again; sent: left alone). So a retry after a
lost schedule answer does not schedule a second campaign: both would have been sent. It costs one list call per
creation, never per update. An editor who renames the campaign gives that up. If the story is deleted in Kordiam
before that retry, the bridge has no delivery to retract; so for a deleted element the channel lists the same
campaigns once for marks of the element (``find_items``, the ``FindsItems`` capability) and the engine deletes
what it finds as ``delete`` does. A campaign already sending or sent is left alone, with the same warning.

Why one module of ~600 lines: about 70 are this mapping, for the operator; the rest is the options, the pure
campaign mapping and one adapter class whose steps (read, unschedule, edit, schedule) share its state.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from bridge.channels.base import Channel, ChannelContext, ChannelResult, FoundItem
from bridge.channels.http_errors import answered_gone, http_error, response_json, unreachable
from bridge.channels.text import HtmlPolicy, plain_text, sanitize_html, without_surrogates
from bridge.config import ChannelSettings, ChannelTimeout, NonBlank, http_url, secret_problem
from bridge.errors import BridgeError, ChannelRejected
from bridge.http import BasicAuth, HttpClient, HttpResponse, HttpTransportError
from bridge.kordiam.models import Element, Publication

log = structlog.get_logger(__name__)

DEFAULT_FOOTER = (
    '<hr><p style="font-size:12px;color:#666666">'
    '<a href="*|UPDATE_PROFILE|*">Update your preferences</a> · <a href="*|UNSUB|*">Unsubscribe</a></p>'
)
SUBJECT_MAX = 150
PREVIEW_MAX = 150
TITLE_MAX = 100
MIN_LEAD = dt.timedelta(minutes=1)  # closer than this, Mailchimp's clock may already call the time past
MAX_AHEAD = dt.timedelta(days=365)  # Mailchimp schedules at most a year ahead
SENT_STATES = frozenset({"sending", "sent", "canceling", "canceled"})
LIVE_STATES = frozenset({"sending", "sent"})
CAMPAIGN_FIELDS = "id,web_id,status,archive_url,long_archive_url,send_time"
MARK_SEARCH = 1000  # the audience's most recent campaigns searched for a publication's mark (Mailchimp's page limit)

_DC = re.compile(r"^[a-z]+[0-9]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# --- options -------------------------------------------------------------------------------------------------


class MailchimpOptions(BaseModel):
    # Never echo a value in a validation error: one of them is the API key.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # base_url comes before api_key so that the key's check can see it.
    base_url: str | None = None
    api_key: SecretStr
    list_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    from_name: NonBlank | None = Field(default=None, max_length=100)
    reply_to: str | None = None
    folder_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,64}$")
    footer_html: str = DEFAULT_FOOTER
    delete_mode: Literal["delete", "unschedule"] = "delete"
    sent_edits: Literal["reject", "ignore"] = "reject"
    timeout: ChannelTimeout = None  # seconds per request (bridge.config.ChannelTimeout)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return http_url(value).rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        key = value.get_secret_value().strip()
        if problem := secret_problem(key):
            raise ValueError(problem)
        if any(character.isspace() or ord(character) < 32 for character in key):
            raise ValueError("must be a Mailchimp API key (no spaces)")
        if info.data.get("base_url") is None and _data_centre(key) is None:
            raise ValueError("has no data-centre suffix (like -us21): use the whole key, or set base_url")
        return SecretStr(key)

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value.strip()):
            raise ValueError("must be an e-mail address")
        return value.strip() if value else value

    @property
    def data_centre(self) -> str | None:
        return _data_centre(self.api_key.get_secret_value())

    @property
    def api_url(self) -> str:
        return self.base_url or f"https://{self.data_centre}.api.mailchimp.com/3.0"


def _data_centre(key: str) -> str | None:
    _, dash, suffix = key.rpartition("-")
    return suffix if dash and _DC.match(suffix) else None


# --- pure mapping --------------------------------------------------------------------------------------------

BODY_HTML = HtmlPolicy(
    tags=frozenset(
        {
            "p", "br", "hr", "h2", "h3", "h4", "h5", "h6", "a", "strong", "b", "em", "i", "u", "s", "sub", "sup",
            "small", "code", "pre", "cite", "q", "blockquote", "ul", "ol", "li", "figure", "figcaption", "img",
            "table", "thead", "tbody", "tr", "th", "td", "caption", "span", "div",
        }
    ),
    attributes={
        "*": frozenset({"lang", "dir"}),
        "a": frozenset({"href", "title"}),
        "img": frozenset({"src", "alt", "width", "height"}),
        "th": frozenset({"colspan", "rowspan"}),
        "td": frozenset({"colspan", "rowspan"}),
    },
)  # fmt: skip
"""What an e-mail body keeps of the story's HTML."""


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def quarter_hour_ceil(moment: dt.datetime) -> dt.datetime:
    """The first quarter hour (:00, :15, :30, :45 UTC) at or after ``moment``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    floor = moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)
    return floor if floor == moment else floor + dt.timedelta(minutes=15)


def plan_schedule(scheduled: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """When to send: the planned time rounded up to a quarter hour, or None (leave an unscheduled draft)."""
    if scheduled is None or scheduled <= now or scheduled - now > MAX_AHEAD:
        return None  # beyond the year before rounding too: the last quarter hour of 9999 has no next one
    send_at = quarter_hour_ceil(scheduled)
    if send_at - now < MIN_LEAD or send_at - now > MAX_AHEAD:
        return None
    return send_at


def mailchimp_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """What one publication becomes, before the parts that need Mailchimp (sender defaults)."""

    settings: dict[str, str]
    html: str
    send_at: dt.datetime | None


def literal_html(fragment: str) -> str:
    """The story's HTML with every ``*`` and ``|`` written as a character reference.

    Mailchimp expands a merge tag (``*|FNAME|*``, ``*|UNSUB|*``, ``*|IF:…|*``; in links also ``*%7CFNAME%7C*``)
    wherever its source holds one, at send time. A story writing that syntax must reach the reader as written,
    so its source holds neither character; a mail client decodes ``&#42;``/``&#124;`` back, in text and in
    attribute values alike. Only for the story's parts: the operator's ``footer_html`` keeps its tags.
    """
    return fragment.replace("*", "&#42;").replace("|", "&#124;")


_MERGE_OPENER = re.compile(r"\*(?=\||%7c)", re.IGNORECASE)


def literal_text(text: str) -> str:
    """Plain text (subject, preview) with each merge-tag opener parted by a zero-width non-joiner: ``*‌|``.

    Plain text has no character references. The non-joiner is invisible (mail senders pad preview text with it),
    so the reader sees ``*|FNAME|*`` as written, and Mailchimp no longer finds an opener to expand.
    """
    return _MERGE_OPENER.sub("*\u200c", text)


def map_campaign(element: Element, publication: Publication, *, footer_html: str, now: dt.datetime) -> CampaignPlan:
    text = element.text_task_for(publication)
    content = text.content if text else None
    headline = plain_text(content.headline if content else None) or plain_text(element.title)
    headline = headline or plain_text(element.slug) or f"Kordiam element {element.id}"
    lead = plain_text(content.lead if content else None)
    subject = shorten(headline, SUBJECT_MAX)
    marker = " " + campaign_mark(element.id, publication.id)
    settings = {
        # Parted before they are cut, so the cut keeps them within Mailchimp's limit.
        "subject_line": shorten(literal_text(headline), SUBJECT_MAX),
        "preview_text": shorten(literal_text(lead), PREVIEW_MAX),
        # Only the operator sees the title (Mailchimp expands nothing in it), and its mark is searched for as is.
        "title": shorten(subject, TITLE_MAX - len(marker)) + marker,
    }
    author = plain_text(text.assignee.display_name if text and text.assignee else None)
    story = [f"<h1>{html.escape(headline)}</h1>\n"]
    if author:
        story.append(f'<p style="color:#666666">{html.escape(author)}</p>\n')
    if lead:
        story.append(f"<p><strong>{html.escape(lead)}</strong></p>\n")
    if content and content.text:
        story.append(sanitize_html(without_surrogates(content.text), BODY_HTML) + "\n")
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{literal_html(html.escape(subject))}</title></head>\n"
        '<body style="font-family:Georgia,serif;max-width:640px;margin:0 auto;padding:16px">\n'
        + literal_html("".join(story))
        + footer_html
        + "\n</body></html>\n"
    )
    return CampaignPlan(settings, page, plan_schedule(publication.scheduled_at(), now))


def campaign_mark(element_id: int, publication_id: int) -> str:
    """The end of each campaign's title that names its Kordiam publication (see "Never two campaigns")."""
    return f"[Kordiam {element_id}/{publication_id}]"


# --- the adapter ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Campaign:
    id: str
    web_id: int | None
    status: str
    archive_url: str | None
    send_time: str | None


class MailchimpChannel:
    """One Mailchimp campaign per publication, its id the external id; scheduled for the publication's date.

    Upsert reads the campaign first: gone (404) → created again; scheduled → unscheduled, edited, scheduled again;
    already sent → left alone (``sent_edits``). Before creating, it looks for the campaign carrying the
    publication's ``[Kordiam e/p]`` title mark, so a create (or a schedule) whose answer was lost is not repeated.
    Delete of a missing or sent campaign is done. ``find_items`` (``FindsItems``) lists the campaigns carrying a
    mark of a deleted element, so one whose answer was lost is deleted too. Raises ``ChannelRejected`` (401/403
    naming ``api_key``, other 4xx with Mailchimp's detail) and ``ChannelUnavailable`` (408/409/425/429, 5xx,
    unreachable).
    """

    element_scoped = False

    def __init__(self, name: str, options: MailchimpOptions, http: HttpClient) -> None:
        self.name = name
        self.options = options
        self._http = http
        self._auth = BasicAuth("kordiam-bridge", options.api_key.get_secret_value())
        self._sender: tuple[str, str] | None = None

    @property
    def _label(self) -> str:
        return f"mailchimp channel {self.name!r}"

    # --- Channel Protocol ---

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        plan = map_campaign(element, publication, footer_html=self.options.footer_html, now=dt.datetime.now(dt.UTC))
        from_name, reply_to = await self._sender_for()
        body: dict[str, Any] = {
            "recipients": {"list_id": self.options.list_id},
            "settings": {**plan.settings, "from_name": from_name, "reply_to": reply_to},
        }
        if self.options.folder_id:
            body["settings"]["folder_id"] = self.options.folder_id

        campaign_id = _campaign_id(external_id)
        campaign = await self._get(campaign_id) if campaign_id else None
        if campaign is None:
            if campaign_id:
                log.info("mailchimp.campaign_gone", channel=self.name, campaign=campaign_id, element=element.id)
            # A campaign whose creation answer was lost, or whose next step failed (a lost schedule answer too),
            # carries the publication's mark: carry on with it, or both campaigns would be sent.
            campaign = await self._marked_campaign(campaign_mark(element.id, publication.id))
            if campaign is not None:
                log.warning("mailchimp.campaign_recovered", channel=self.name, campaign=campaign.id, element=element.id)
        if campaign is not None and campaign.status in SENT_STATES:
            return self._already_sent(campaign)
        if campaign is not None:
            if campaign.status == "schedule":
                await self._action(campaign.id, "unschedule")
            campaign = await self._update(campaign.id, body)
        if campaign is None:
            campaign = await self._create(body)

        action = f"setting the content of campaign {campaign.id}"
        response = await self._request("PUT", f"/campaigns/{campaign.id}/content", action, {"html": plan.html})
        self._json_object(response, action)
        status = campaign.status
        if plan.send_at is not None:
            await self._action(campaign.id, "schedule", {"schedule_time": mailchimp_time(plan.send_at)})
            status = "schedule"
        elif publication.scheduled_at() is not None:
            log.info(
                "mailchimp.not_scheduled",
                channel=self.name,
                campaign=campaign.id,
                planned=publication.scheduled_at(),
                reason="the planned time has passed, is too close or more than a year ahead",
            )
        return self._result(campaign, status)

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        campaign_id = _campaign_id(external_id)
        if campaign_id is None:
            return  # not a Mailchimp campaign id: nothing of ours to delete
        campaign = await self._get(campaign_id)
        if campaign is None:
            return
        if campaign.status in SENT_STATES:
            self._sent_kept(campaign, "the newsletter went out already; it cannot be recalled and its report is kept")
            return
        if campaign.status == "schedule":
            await self._action(campaign.id, "unschedule")
        if self.options.delete_mode == "unschedule":
            return
        action = f"deleting campaign {campaign.id}"
        response = await self._request("DELETE", f"/campaigns/{campaign.id}", action)
        if response.is_success or self._gone(response, action):
            return
        raise self._error(response, action)

    async def aclose(self) -> None:
        self._sender = None

    # --- FindsItems ---

    async def find_items(self, element_id: int) -> list[FoundItem]:
        """The campaigns, among the audience's ``MARK_SEARCH`` newest, whose title carries a mark of ``element_id``
        and that ``delete`` would still change. A sent one cannot be recalled: it is logged and left out."""
        action = f"looking for the campaigns of deleted element {element_id}"
        mark = re.compile(rf"\[Kordiam {element_id}/([0-9]+)\]$")
        found = []
        for title, item in await self._titled_campaigns(action):
            marked = mark.search(title)
            if marked is None:
                continue
            campaign = self._campaign_of(item, action)
            if campaign.status in SENT_STATES:
                self._sent_kept(
                    campaign,
                    "the story was deleted in Kordiam, but its newsletter went out already; it cannot be recalled",
                    element=element_id,
                )
            elif self.options.delete_mode == "delete" or campaign.status == "schedule":
                found.append(FoundItem(int(marked[1]), campaign.id))
        return found

    # --- steps ---

    def _sent_kept(self, campaign: _Campaign, hint: str, **context: object) -> None:
        """A campaign that is sending or sent cannot be retracted: say so, and leave it."""
        log.warning(
            "mailchimp.sent_campaign_kept",
            channel=self.name,
            campaign=campaign.id,
            status=campaign.status,
            send_time=campaign.send_time,
            **context,
            hint=hint,
        )

    def _already_sent(self, campaign: _Campaign) -> ChannelResult:
        sent = f"{campaign.status}" + (f" at {campaign.send_time}" if campaign.send_time else "")
        if self.options.sent_edits == "reject":
            raise ChannelRejected(
                f"{self._label}: campaign {campaign.id} was already {sent}; Mailchimp cannot change a sent "
                'campaign, so this edit was not applied (sent_edits = "ignore" skips such edits)'
            )
        log.warning("mailchimp.sent_campaign_not_updated", channel=self.name, campaign=campaign.id, status=sent)
        return self._result(campaign, campaign.status)

    def _result(self, campaign: _Campaign, status: str) -> ChannelResult:
        data_centre = self.options.data_centre
        edit_link = (
            f"https://{data_centre}.admin.mailchimp.com/campaigns/edit?id={campaign.web_id}"
            if data_centre and campaign.web_id is not None
            else None
        )
        return ChannelResult(
            external_id=campaign.id,
            edit_link=edit_link,
            open_link=campaign.archive_url,
            live=status in LIVE_STATES,
            edit_link_title="Edit in Mailchimp" if edit_link else None,
            open_link_title="Newsletter archive page" if campaign.archive_url else None,
        )

    async def _sender_for(self) -> tuple[str, str]:
        """``from_name`` and ``reply_to``: configured, else the audience's campaign defaults (read once)."""
        if self.options.from_name and self.options.reply_to:
            return self.options.from_name, self.options.reply_to
        if self._sender is None:
            action = f"reading audience {self.options.list_id}"
            response = await self._request(
                "GET", f"/lists/{self.options.list_id}", action, params={"fields": "id,name,campaign_defaults"}
            )
            if response.status_code == 404:
                raise ChannelRejected(
                    f"{self._label}: audience list_id {self.options.list_id!r} does not exist in this Mailchimp "
                    "account (Audience → Settings → Audience name and defaults shows the id)"
                )
            data = self._json_object(response, action)
            defaults = data.get("campaign_defaults") if isinstance(data.get("campaign_defaults"), dict) else {}
            assert isinstance(defaults, dict)
            self._sender = (str(defaults.get("from_name") or ""), str(defaults.get("from_email") or ""))
        from_name = self.options.from_name or self._sender[0]
        reply_to = self.options.reply_to or self._sender[1]
        if not from_name or not reply_to:
            raise ChannelRejected(
                f"{self._label}: the audience has no default sender name and address; set from_name and reply_to"
            )
        return from_name, reply_to

    async def _get(self, campaign_id: str) -> _Campaign | None:
        action = f"reading campaign {campaign_id}"
        response = await self._request("GET", f"/campaigns/{campaign_id}", action, params={"fields": CAMPAIGN_FIELDS})
        if self._gone(response, action):
            return None
        return self._campaign(response, action)

    async def _marked_campaign(self, mark: str) -> _Campaign | None:
        """The oldest of the audience's ``MARK_SEARCH`` newest campaigns whose title ends with ``mark``, if any."""
        action = "looking for a campaign made before"
        found = [item for title, item in await self._titled_campaigns(action) if title.endswith(mark)]
        if not found:
            return None
        if len(found) > 1:
            ids = [item.get("id") for item in reversed(found)]
            log.warning("mailchimp.duplicate_campaigns", channel=self.name, campaigns=ids, kept=ids[0])
        return self._campaign_of(found[-1], action)

    async def _titled_campaigns(self, action: str) -> list[tuple[str, dict[str, Any]]]:
        """The audience's ``MARK_SEARCH`` newest campaigns, newest first, each with its title (one list call)."""
        fields = [f"campaigns.{name}" for name in (*CAMPAIGN_FIELDS.split(","), "settings.title")]
        params = {
            "list_id": self.options.list_id,
            "sort_field": "create_time",
            "sort_dir": "DESC",
            "count": str(MARK_SEARCH),
            "fields": ",".join(fields),
        }
        listed = self._json_object(await self._request("GET", "/campaigns", action, params=params), action)
        items = listed.get("campaigns")
        return [
            (str(item["settings"].get("title") or ""), item)
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict) and isinstance(item.get("settings"), dict)
        ]

    async def _create(self, body: dict[str, Any]) -> _Campaign:
        action = "creating a campaign"
        response = await self._request("POST", "/campaigns", action, {"type": "regular", **body})
        campaign = self._campaign(response, action)
        log.info("mailchimp.campaign_created", channel=self.name, campaign=campaign.id)
        return campaign

    async def _update(self, campaign_id: str, body: dict[str, Any]) -> _Campaign | None:
        action = f"updating campaign {campaign_id}"
        response = await self._request("PATCH", f"/campaigns/{campaign_id}", action, body)
        if self._gone(response, action):
            return None  # deleted between our read and our write: created again
        return self._campaign(response, action)

    async def _action(self, campaign_id: str, name: str, body: dict[str, Any] | None = None) -> None:
        action = f"{name.replace('_', ' ')} campaign {campaign_id}"
        response = await self._request("POST", f"/campaigns/{campaign_id}/actions/{name}", action, body)
        if not response.is_success:
            raise self._error(response, action)

    # --- HTTP plumbing ---

    def _gone(self, response: HttpResponse, action: str) -> bool:
        """Mailchimp said the campaign does not exist (its problem JSON); a 404 from a proxy in front of it
        (``base_url``) or a wrong path is ``ChannelUnavailable``: taken for "gone", a delete would leave a scheduled
        newsletter about a deleted story to go out, and an update would make a second campaign."""
        return answered_gone(response, self._label, action)

    async def _request(
        self,
        method: str,
        path: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
    ) -> HttpResponse:
        url = f"{self.options.api_url}{path}"
        try:
            response = await self._http.request(
                method, url, json=body, params=params, auth=self._auth, timeout_seconds=self.options.timeout
            )
        except HttpTransportError as error:
            raise unreachable(self._label, action, self.options.api_url, error) from error
        # Refusals of the key and transient answers mean the same for every step; the rest is the caller's.
        if response.status_code in (401, 403, 408, 409, 425, 429) or response.status_code >= 500:
            raise self._error(response, action)
        return response

    def _json_object(self, response: HttpResponse, action: str) -> dict[str, Any]:
        if not response.is_success:
            raise self._error(response, action)
        data = response_json(response, self._label, action)
        if not isinstance(data, dict):
            said = response.redact(str(data))[:80]
            raise ChannelRejected(f"{self._label}: {action}: unexpected answer {said!r}")
        return data

    def _campaign(self, response: HttpResponse, action: str) -> _Campaign:
        return self._campaign_of(self._json_object(response, action), action)

    def _campaign_of(self, data: dict[str, Any], action: str) -> _Campaign:
        campaign_id, status = data.get("id"), data.get("status")
        if not isinstance(campaign_id, str) or not campaign_id or not isinstance(status, str):
            raise ChannelRejected(f"{self._label}: {action}: the answer has no campaign id and status")
        web_id = data.get("web_id")
        archive = data.get("archive_url") or data.get("long_archive_url")
        send_time = data.get("send_time")
        return _Campaign(
            id=campaign_id,
            web_id=web_id if isinstance(web_id, int) and not isinstance(web_id, bool) else None,
            status=status,
            archive_url=archive if isinstance(archive, str) and archive else None,
            send_time=send_time if isinstance(send_time, str) and send_time else None,
        )

    def _error(self, response: HttpResponse, action: str) -> BridgeError:
        return http_error(
            response,
            self._label,
            action,
            refused="check api_key (and that its -dc suffix or base_url points at its data centre)",
            redirect="check base_url",
            said=problem_summary(response),
        )


def problem_summary(response: HttpResponse) -> str:
    """Mailchimp's problem JSON as one line: title, detail and the field errors of a 400."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no details"
    if not isinstance(body, dict):
        return response.reason_phrase or "no details"
    parts = [str(body[key]) for key in ("title", "detail") if isinstance(body.get(key), str) and body[key]]
    errors = body.get("errors")
    if isinstance(errors, list):
        for item in errors[:5]:
            if isinstance(item, dict):
                parts.append(f"{item.get('field') or '?'}: {item.get('message') or '?'}")
    if isinstance(body.get("instance"), str) and body["instance"]:
        parts.append(f"instance {body['instance']}")
    return "; ".join(parts) or response.reason_phrase or "no details"


def _campaign_id(external_id: str | None) -> str | None:
    if external_id is None:
        return None
    text = external_id.strip()
    return text if re.fullmatch(r"[A-Za-z0-9]{1,64}", text) else None


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, MailchimpOptions)
    return MailchimpChannel(settings.name, options, context.http)
