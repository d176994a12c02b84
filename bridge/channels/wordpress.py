"""``wordpress``: each publication as a WordPress post (or page, or custom post type) over the REST API.

Authentication is an Application Password (WordPress ≥ 5.6) sent as HTTP Basic auth on every request, through
the process's shared HTTP client. The REST API is reached at ``{url}/wp-json/…`` or, on sites without pretty
permalinks, ``{url}/?rest_route=/…``; ``rest_route = "auto"`` asks the first, falls back to the second when the
first answers a 404 that is not WordPress's, and remembers which one worked. That first request reads the post
type (``/wp/v2/types/{post_type}``), so a wrong ``url``, password or ``post_type`` shows at once and the REST
base comes from WordPress itself (the fallback rule: ``post`` → ``posts``, ``page`` → ``pages``, else the name).

Options (``[[channels]]`` keys besides name/type/platforms/statuses/main):

- ``url`` (the site's address), ``username``, ``app_password`` (an Application Password; spaces optional)
- ``post_type`` = "post" (or "page", or a custom type shown in REST)
- ``status_map`` = {Kordiam publication status id or name = "draft" | "pending" | "publish" | "private"}
- ``category_map`` = {Kordiam category id or name = WordPress category id (digits) or name}
- ``create_missing_categories`` = false, ``default_author`` = WordPress user id (optional)
- ``delete_mode`` = "trash" | "force", ``rest_route`` = "auto" | "pretty" (/wp-json/) | "query" (?rest_route=)
- ``timeout``: seconds per request (default: ``kordiam.timeout``, the shared client's)

Mapping, Kordiam → WordPress:

==============  ==================================================================================================
WordPress       Kordiam
==============  ==================================================================================================
title           the publication's text task headline, else the element title, else its slug: the first with text
                once tags are removed; as plain text (``&``/``<`` escaped as WordPress itself stores them)
content         the text task's HTML through nh3: no script/style (with their content), no event handlers, no
                ``javascript:``/``data:`` URLs; keeps p, br, h2–h6, a[href], strong/b, em/i, lists, blockquote,
                figure/figcaption, img[src alt], tables, code/pre and ``lang``/``dir`` on any element; then the
                publication's marker comment (see "Never two posts" below). Text emptied in Kordiam empties the
                post's content on the next update (the marker stays); a story whose text Kordiam does not hold
                (a text task without content, or none: written in WordPress) leaves the post's content alone
excerpt         the text task's lead, as plain text; an emptied lead of a text Kordiam holds empties the excerpt
                (WordPress then shows its own excerpt of the content)
slug            the element's slug (WordPress makes it unique and URL-safe); a story that loses its slug keeps
                the post's, so the post's address does not change
status, date    the publication status (id or name) through ``status_map``, with ``publication.scheduled_at()``:

                ==========================  ================  ==============  ================================
                status_map gives            scheduled_at()    status sent     date_gmt sent
                ==========================  ================  ==============  ================================
                nothing (status unmapped)   none              draft (²)       —
                nothing (status unmapped)   any               draft (²)       the schedule
                publish                     none              publish         — (¹)
                publish                     in the future     future          the schedule
                publish                     now or past       publish         the schedule (back-dated)
                draft / pending / private   none              as mapped       —
                draft / pending / private   any               as mapped       the schedule
                ==========================  ================  ==============  ================================

                An unmapped status never publishes: the newsroom did not say it may. WordPress itself publishes a
                ``future`` post less than 60 s ahead at once, and a scheduled post goes live on the first request
                after its time (WP-cron). (¹) If WordPress keeps the post ``future`` because an earlier schedule
                left a date ahead, the adapter sends ``date_gmt`` = now, so "publish" means now. (²) For a new post;
                an existing post keeps its status (no status is sent): nor does an unmapped status unpublish, as
                Kordiam's own Published status would, after the bridge's publish write, where only "Ready" is mapped.
categories      the publication category through ``category_map`` (Kordiam id or name → WordPress id, checked
                once to exist, or name looked up); an unmapped category is looked up by its Kordiam name, and
                created if missing, only with ``create_missing_categories``; otherwise the post's categories are
                left as they are (WordPress gives a new post its default category). Only for post types with
                categories.
author          the text task assignee's e-mail → the WordPress user with that e-mail (``users?search=…&
                context=edit``, which needs the ``list_users`` capability), else ``default_author``, else unset
                (WordPress keeps the current author; a new post gets the API user)
==============  ==================================================================================================

Upsert: with an external id, ``POST /wp/v2/{base}/{id}``; a post deleted in WordPress (404) is created again and
the new id returned; a post moved to the trash by hand comes back out of it (Kordiam is the source of truth).
Delete: ``DELETE /wp/v2/{base}/{id}``, to the trash or, with ``delete_mode = "force"``, for good; a post that is
already gone (404) or already in the trash (410) counts as deleted. A 404 ``rest_no_route`` says the post type's
routes are gone (the plugin that registers it deactivated), not the post: ``ChannelUnavailable``, never "deleted".

Result: ``external_id`` = the post id, ``edit_link`` = ``{url}/wp-admin/post.php?post={id}&action=edit``,
``open_link`` = the post's ``link``, ``live`` = WordPress answered status ``publish``.

Errors: 401/403 and other 4xx → ``ChannelRejected`` with WordPress's ``code`` and ``message``; 408, 409, 425, 429,
5xx, timeouts and connection errors → ``ChannelUnavailable`` (with ``Retry-After``); an answer that is not
JSON → ``ChannelRejected``. Nothing is retried in-process: the queue retries.

Never two posts for one publication: WordPress has no idempotency key, and if it creates a post but its answer
is lost (a timeout), the bridge never learns the post's id. So each post's content ends with an HTML comment that
names the publication, ``<!-- kordiam-{element id}-{publication id} -->`` (invisible on the site; a post without
text gets the comment alone). Before creating a post, the adapter searches the post type for that word (``status
= any``, so drafts and scheduled posts too) and updates the oldest post that carries it instead. It costs one
search per creation, never per update. An editor who removes the comment, or trashes the post, gives that up.
If the story is deleted in Kordiam before that retry, the bridge has no delivery to retract; so for a deleted
element the channel searches once for ``kordiam-{element id}-`` (``find_items``, the ``FindsItems`` capability)
and the engine deletes every post carrying one of the element's markers as ``delete`` does.

Why one module of ~730 lines: about 85 are this mapping, for the operator; the rest is one adapter class whose
parts (REST route discovery, category and author look-ups with their caches, the marker search) share its state.
Options and the pure mapping would split off cleanly, but each is small and read together with the adapter.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.channels.base import Channel, ChannelContext, ChannelResult, FoundItem
from bridge.channels.http_errors import http_error, unreachable
from bridge.channels.text import ARTICLE_HTML, plain_text, sanitize_html, strip_tags
from bridge.config import Bool, ChannelSettings, ChannelTimeout, Int, NonBlank, NotBoolean, http_url, plausible_secret
from bridge.digits import ascii_digits
from bridge.errors import BridgeError, ChannelCredentialsRefused, ChannelRejected, ChannelUnavailable
from bridge.http import BasicAuth, HttpClient, HttpResponse, HttpTransportError
from bridge.kordiam.models import Element, Publication, Ref

log = structlog.get_logger(__name__)

WordPressStatus = Literal["draft", "pending", "publish", "private"]

T = TypeVar("T")

# --- options -----------------------------------------------------------------------------------------------


def _selector_key(key: object) -> str:
    """A map key as the adapter looks it up: an id as its digits, a name case-folded."""
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise ValueError(f"key {key!r} must be a Kordiam id or name")
    text = str(key).strip()
    if not text:
        raise ValueError("keys must not be empty")
    return str(int(text)) if ascii_digits(text.lstrip("-")) else text.casefold()


def _by_selector(value: Mapping[Any, Any]) -> dict[str, Any]:
    """``value`` keyed as the adapter looks it up; ``ValueError`` for two keys that are one to it (the second would
    silently replace the first)."""
    keyed: dict[str, Any] = {}
    written: dict[str, object] = {}
    for key, item in value.items():
        selector = _selector_key(key)
        if selector in written:
            raise ValueError(
                f"{written[selector]!r} and {key!r} are one key (ids by their digits, names without case): keep one"
            )
        written[selector] = key
        keyed[selector] = item
    return keyed


class WordPressOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    username: NonBlank
    app_password: SecretStr
    post_type: str = Field(default="post", pattern=r"^[a-z0-9_-]{1,20}$")
    status_map: dict[str, WordPressStatus] = Field(default_factory=dict)
    category_map: dict[str, Annotated[int | str, NotBoolean]] = Field(default_factory=dict)
    create_missing_categories: Bool = False
    default_author: Int | None = Field(default=None, gt=0)
    delete_mode: Literal["trash", "force"] = "trash"
    rest_route: Literal["auto", "pretty", "query"] = "auto"
    timeout: ChannelTimeout = None  # seconds per request (bridge.config.ChannelTimeout)

    @field_validator("url")
    @classmethod
    def _site_url(cls, value: str) -> str:
        return http_url(value).rstrip("/")

    _app_password = field_validator("app_password")(plausible_secret)

    @field_validator("status_map", mode="before")
    @classmethod
    def _status_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            key: status.strip().lower() if isinstance(status, str) else status
            for key, status in _by_selector(value).items()
        }

    @field_validator("category_map", mode="before")
    @classmethod
    def _category_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        # A value of digits is an id even when it comes as text (environment overrides are always text).
        return {
            key: int(target.strip()) if isinstance(target, str) and ascii_digits(target.strip()) else target
            for key, target in _by_selector(value).items()
        }

    @field_validator("category_map")
    @classmethod
    def _category_targets(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for key, target in value.items():
            if isinstance(target, int) and target <= 0:
                raise ValueError(f"{key}: a WordPress category id must be positive")
            if isinstance(target, str) and not target.strip():
                raise ValueError(f"{key}: a WordPress category name must not be empty")
        return {key: target.strip() if isinstance(target, str) else target for key, target in value.items()}


def lookup(mapping: Mapping[str, T], ref: Ref | None) -> T | None:
    """The value for a Kordiam reference in a ``status_map``/``category_map``: by id first, then by name."""
    if ref is None:
        return None
    hit = mapping.get(str(ref.id))
    if hit is None and ref.name:
        hit = mapping.get(ref.name.strip().casefold())
    return hit


# --- pure mapping --------------------------------------------------------------------------------------------

# The story's HTML, safe to store in WordPress (where the API user usually may post unfiltered HTML).
CONTENT_HTML = ARTICLE_HTML


def title_text(text: str) -> str:
    """Text for a title or excerpt: tags dropped, ``&``/``<``/``>`` as entities (how WordPress stores them)."""
    return strip_tags(text).strip()


def wordpress_date(moment: datetime) -> str:
    """``date_gmt`` as WordPress wants it: ISO 8601 in UTC, seconds, no offset suffix."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def plan_status(
    mapped: WordPressStatus | None, scheduled: datetime | None, now: datetime
) -> tuple[str, datetime | None]:
    """The WordPress ``status`` and GMT date for a mapped status and a schedule (the table in the docstring)."""
    if mapped is None:
        return "draft", scheduled
    if mapped == "publish" and scheduled is not None and scheduled > now:
        return "future", scheduled
    return mapped, scheduled


@dataclass(frozen=True, slots=True)
class PostPlan:
    """What one publication becomes, before the parts that need WordPress (category and author ids)."""

    fields: dict[str, Any]
    category: Ref | None
    author_email: str | None
    # The publication's status is in no ``status_map``: a new post is a draft, an existing one keeps its status.
    status_unmapped: bool = False


def map_post(
    element: Element, publication: Publication, status_map: Mapping[str, WordPressStatus], now: datetime
) -> PostPlan:
    text = element.text_task_for(publication)
    content = text.content if text else None
    # The first with text as NewsML and Mailchimp read it: a headline of markup alone (an empty paragraph, a
    # non-breaking space) is no title.
    candidates = (content.headline if content else None, element.title, element.slug)
    title = title_text(next((text for text in candidates if text and plain_text(text)), ""))
    mapped = lookup(status_map, publication.status)
    status, date = plan_status(mapped, publication.scheduled_at(), now)
    fields: dict[str, Any] = {"title": title, "status": status}
    if content is not None and content.text is not None:
        # Kordiam holds the text (even an emptied one): the post mirrors it, so text or a lead emptied in Kordiam
        # empties the post's rather than leave the old text online.
        fields["content"] = sanitize_html(content.text, CONTENT_HTML) if content.text else ""
        fields["excerpt"] = title_text(content.lead) if content.lead else ""
    elif content is not None and content.lead:
        # No text in Kordiam (a text task planned without one, or none at all: the story is written in WordPress):
        # the body is not Kordiam's, and an update must not blank what the editors wrote there.
        fields["excerpt"] = title_text(content.lead)
    if element.slug:
        fields["slug"] = element.slug
    if date is not None:
        fields["date_gmt"] = wordpress_date(date)
    email = text.assignee.email if text and text.assignee and text.assignee.email else None
    return PostPlan(fields=fields, category=publication.category, author_email=email, status_unmapped=mapped is None)


# --- the adapter ---------------------------------------------------------------------------------------------

POST_FIELDS = "id,status,link,slug,date_gmt"
AUTHOR_MISS_TTL = 300.0  # seconds a "no WordPress user has this e-mail" answer is remembered


@dataclass(frozen=True, slots=True)
class _Route:
    style: Literal["pretty", "query"]
    rest_base: str
    has_categories: bool


class WordPressChannel:
    """One WordPress post (of the configured type) per publication, its id the external id.

    Upsert updates the post it names (a post deleted there, 404, is created again); before creating, it looks for
    the post carrying the publication's ``<!-- kordiam-e-p -->`` marker, so a create whose answer was lost is not
    repeated. Delete trashes (or force-deletes) the post; 404/410 is done. ``find_items`` (``FindsItems``)
    searches for a deleted element's markers, so a post whose creation answer was lost is deleted too. Raises
    ``ChannelRejected`` (401/403 and other 4xx with WordPress's code, an answer that is not JSON) and
    ``ChannelUnavailable`` (408/409/425/429, 5xx, unreachable).
    """

    element_scoped = False

    def __init__(self, name: str, options: WordPressOptions, http: HttpClient) -> None:
        self.name = name
        self.options = options
        self._http = http
        self._auth = BasicAuth(options.username, options.app_password.get_secret_value())
        self._route: _Route | None = None
        self._route_lock = asyncio.Lock()
        self._categories: dict[str, int] = {}
        self._category_ids: set[int] = set()
        self._authors: dict[str, int] = {}
        self._author_misses: dict[str, float] = {}
        self._can_list_users = True

    @property
    def _label(self) -> str:
        return f"wordpress channel {self.name!r}"

    # --- Channel Protocol ---

    async def upsert(self, element: Element, publication: Publication, external_id: str | None) -> ChannelResult:
        route = await self._resolve_route()
        plan = map_post(element, publication, self.options.status_map, datetime.now(UTC))
        body = dict(plan.fields)
        if route.has_categories:
            category = await self._category_for(plan.category)
            if category is not None:
                body["categories"] = [category]
        author = await self._author_for(plan.author_email)
        if author is not None:
            body["author"] = author

        marker = publication_marker(element.id, publication.id)
        if "content" in body:
            body["content"] += marker

        # An update with an unmapped status leaves the post's status alone: "never publishes" must not become
        # "unpublishes" when Kordiam moves a live story on to a status nobody mapped (its own Published, after the
        # bridge's publish write, is one). A new post is a draft.
        update = {k: v for k, v in body.items() if k != "status"} if plan.status_unmapped else body
        post: dict[str, Any] | None = None
        post_id = _post_id(external_id)
        if post_id is not None:
            action = f"updating post {post_id}"
            response = await self._call(route, "POST", f"{post_id}", action, {"_fields": POST_FIELDS}, update)
            if response.status_code in (404, 410) and _wordpress_error(response) is not None:
                log.info("wordpress.post_gone", channel=self.name, post=post_id, element=element.id)
            else:
                post = self._post(response, action)
        if post is None:
            # A post whose creation answer was lost (or whose record the bridge lost) carries the marker: update
            # it rather than create a second one.
            found = await self._marked_post(route, marker)
            if found is not None:
                log.warning("wordpress.post_recovered", channel=self.name, post=found, element=element.id)
                action = f"updating post {found} (found by its marker)"
                response = await self._call(route, "POST", f"{found}", action, {"_fields": POST_FIELDS}, update)
                post = self._post(response, action)
            else:
                created = body if "content" in body else {**body, "content": marker}
                response = await self._call(route, "POST", "", "creating a post", {"_fields": POST_FIELDS}, created)
                post = self._post(response, "creating a post")
        if body["status"] == "publish" and "date_gmt" not in body and post["status"] == "future":
            # An earlier schedule left the post's date ahead, so WordPress kept it scheduled: publish now.
            action = f"publishing post {post['id']} now"
            fix = {"status": "publish", "date_gmt": wordpress_date(datetime.now(UTC))}
            response = await self._call(route, "POST", str(post["id"]), action, {"_fields": POST_FIELDS}, fix)
            post = self._post(response, action)
        return ChannelResult(
            external_id=str(post["id"]),
            edit_link=f"{self.options.url}/wp-admin/post.php?post={post['id']}&action=edit",
            open_link=post["link"],
            live=post["status"] == "publish",
            edit_link_title="Edit in WordPress",
            open_link_title="View in WordPress",
        )

    async def _marked_post(self, route: _Route, marker: str) -> int | None:
        """The oldest post (any status but trash) whose content carries ``marker``, if any."""
        posts = await self._posts_with(route, marker_token(marker), "looking for a post made before", per_page=20)
        found = [post_id for post_id, raw in posts if marker in raw]
        if len(found) > 1:
            log.warning("wordpress.duplicate_posts", channel=self.name, posts=found, kept=found[0])
        return found[0] if found else None

    async def _posts_with(self, route: _Route, word: str, action: str, *, per_page: int) -> list[tuple[int, str]]:
        """``(id, raw content)`` of the posts (any status but trash) WordPress's search finds for ``word``, oldest
        first; one request. The search matches parts of words in title, excerpt and content: the caller checks."""
        params = {
            "search": word,
            "status": "any",
            "context": "edit",
            "_fields": "id,content",
            "orderby": "id",
            "order": "asc",
            "per_page": str(per_page),
        }
        response = await self._call(route, "GET", "", action, params)
        if not response.is_success:
            error = _wordpress_error(response)
            if response.status_code == 400 and error is not None and "status" in error[3].get("params", {}):
                # WordPress treats a request whose credentials it did not apply (a web server that drops the
                # Authorization header) as a visitor's, who may not see drafts: the bridge's credentials, not the story.
                raise ChannelCredentialsRefused(
                    f"{self._label}: {action}: HTTP 400 {error[0]}: {error[1]} — WordPress answered as to a "
                    "visitor: check username and app_password, and that the user may edit posts"
                )
            raise self._error(response, action)
        posts = self._json(response, action)
        return [
            (post["id"], str(post["content"].get("raw", "")))
            for post in (posts if isinstance(posts, list) else [])
            if isinstance(post, dict) and isinstance(post.get("id"), int) and isinstance(post.get("content"), dict)
        ]

    async def delete(self, element_id: int, publication_id: int, external_id: str) -> None:
        post_id = _post_id(external_id)
        if post_id is None:
            return  # not a WordPress post id: nothing of ours to delete
        route = await self._resolve_route()
        params = {"force": "true"} if self.options.delete_mode == "force" else {}
        action = f"deleting post {post_id}"
        response = await self._call(route, "DELETE", str(post_id), action, params)
        if response.is_success:
            return
        error = _wordpress_error(response)
        if response.status_code in (404, 410) and error is not None:
            return  # already deleted, or already in the trash
        if error is not None and error[0] == "rest_trash_not_supported":
            raise ChannelRejected(
                f"{self._label}: {action}: this post type cannot be trashed ({error[1]}); "
                'set delete_mode = "force" to delete for good'
            )
        raise self._error(response, action)

    async def find_items(self, element_id: int) -> list[FoundItem]:
        """The posts (any status but trash: a trashed post is retracted already) whose content carries a
        publication marker of ``element_id``; one search, of at most 100 posts."""
        route = await self._resolve_route()
        action = f"looking for the posts of deleted element {element_id}"
        markers = element_markers(element_id)
        found = []
        for post_id, raw in await self._posts_with(route, element_token(element_id), action, per_page=100):
            marked = markers.search(raw)
            if marked is not None:
                found.append(FoundItem(int(marked[1]), str(post_id)))
        return found

    async def aclose(self) -> None:
        self._categories.clear()
        self._category_ids.clear()
        self._authors.clear()
        self._author_misses.clear()

    # --- REST plumbing ---

    def _url(self, style: Literal["pretty", "query"], route: str, params: dict[str, str]) -> tuple[str, dict[str, str]]:
        if style == "pretty":
            return f"{self.options.url}/wp-json/{route}", params
        return f"{self.options.url}/", {"rest_route": f"/{route}", **params}

    async def _send(
        self,
        style: Literal["pretty", "query"],
        method: str,
        route: str,
        action: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> HttpResponse:
        url, query = self._url(style, route, params or {})
        try:
            return await self._http.request(
                method, url, params=query, json=body, auth=self._auth, timeout_seconds=self.options.timeout
            )
        except HttpTransportError as error:
            raise unreachable(self._label, action, self.options.url, error) from error

    async def _call(
        self,
        route: _Route,
        method: str,
        item: str,
        action: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> HttpResponse:
        path = f"wp/v2/{route.rest_base}" + (f"/{item}" if item else "")
        response = await self._send(route.style, method, path, action, params, body)
        if response.status_code == 404:
            error = _wordpress_error(response)
            if error is None:
                raise ChannelRejected(
                    f"{self._label}: {action}: {response.request.url} answered 404 without a WordPress error; "
                    f"is {self.options.url} still a WordPress site with its REST API on?"
                )
            if error[0] == "rest_no_route":
                # The post type's routes are gone (the plugin that registers it deactivated), not this post: never
                # "already deleted" or "deleted there, create it again". The channel is down until they are back.
                raise ChannelUnavailable(
                    f"{self._label}: {action}: WordPress has no route {response.request.url.path} (rest_no_route): "
                    f"is the plugin that registers post type {self.options.post_type!r} active?"
                )
        return response

    def _json(self, response: HttpResponse, action: str) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            start = response.redact(response.text)[:80].strip().replace("\n", " ")
            raise ChannelRejected(
                f"{self._label}: {action}: WordPress answered HTTP {response.status_code} with something that is "
                f"not JSON ({kind}: {start!r})"
            ) from None

    def _post(self, response: HttpResponse, action: str) -> dict[str, Any]:
        if not response.is_success:
            raise self._error(response, action)
        post = self._json(response, action)
        if not (
            isinstance(post, dict)
            and isinstance(post.get("id"), int)
            and isinstance(post.get("status"), str)
            and isinstance(post.get("link"), str)
        ):
            raise ChannelRejected(f"{self._label}: {action}: the answer has no post id, status and link")
        return post

    def _error(self, response: HttpResponse, action: str) -> BridgeError:
        error = _wordpress_error(response)
        said = f"{error[0]}: {error[1]}" if error else response.reason_phrase or "no details"
        if error and error[2]:
            said += f" ({error[2]})"
        return http_error(
            response,
            self._label,
            action,
            refused="check username and app_password, and that the user may do this",
            redirect="set url to the address WordPress uses",
            said=said,
        )

    async def _resolve_route(self) -> _Route:
        """Find how this site exposes its REST API and the post type's REST base (once)."""
        if self._route is not None:
            return self._route
        async with self._route_lock:
            if self._route is not None:
                return self._route
            post_type = self.options.post_type
            styles: list[Literal["pretty", "query"]] = (
                ["pretty", "query"] if self.options.rest_route == "auto" else [self.options.rest_route]
            )
            tried = []
            for style in styles:
                path = f"wp/v2/types/{post_type}"
                action = f"reading post type {post_type!r}"
                params = {"_fields": "slug,rest_base,taxonomies"}
                response = await self._send(style, "GET", path, action, params)
                error = _wordpress_error(response)
                if response.status_code == 404 and error is None:
                    tried.append(str(response.request.url))
                    continue
                if response.status_code == 404:
                    raise ChannelRejected(
                        f"{self._label}: post type {post_type!r} is not available over WordPress's REST API at "
                        f"{self.options.url} ({error[0] if error else 404})"
                    )
                if not response.is_success:
                    raise self._error(response, action)
                data = self._json(response, action)
                if not isinstance(data, dict):
                    said = response.redact(str(data))[:80]
                    raise ChannelRejected(f"{self._label}: {action}: unexpected answer {said!r}")
                rest_base = data.get("rest_base")
                taxonomies = data.get("taxonomies")
                self._route = _Route(
                    style=style,
                    rest_base=rest_base if isinstance(rest_base, str) and rest_base else _default_rest_base(post_type),
                    has_categories=isinstance(taxonomies, list) and "category" in taxonomies,
                )
                return self._route
            raise ChannelRejected(
                f"{self._label}: no WordPress REST API at {self.options.url}: "
                + " and ".join(tried)
                + " answered 404 (is url the site's address, and is the REST API enabled?)"
            )

    # --- categories and authors ---

    async def _category_for(self, category: Ref | None) -> int | None:
        target = lookup(self.options.category_map, category)
        if isinstance(target, int):
            return await self._existing_category(target)
        if isinstance(target, str):
            return await self._category_id(target, create=self.options.create_missing_categories)
        if category is not None and category.name and self.options.create_missing_categories:
            return await self._category_id(category.name, create=True)
        return None

    async def _existing_category(self, category_id: int) -> int:
        """A ``category_map`` id, checked once: WordPress files a post under an unknown id as under none, silently."""
        if category_id in self._category_ids:
            return category_id
        action = f"checking category id {category_id}"
        response = await self._call(
            await self._collection("categories"), "GET", str(category_id), action, {"_fields": "id"}
        )
        if response.status_code == 404:  # a WordPress error: _call raised for any other 404
            raise ChannelRejected(
                f"{self._label}: category id {category_id} (from category_map) does not exist in WordPress; map it "
                "to an existing category's id or name"
            )
        if not response.is_success:
            raise self._error(response, action)
        self._category_ids.add(category_id)
        return category_id

    async def _category_id(self, name: str, *, create: bool) -> int:
        key = name.strip().casefold()
        cached = self._categories.get(key)
        if cached is not None:
            return cached
        category_route = await self._collection("categories")
        action = f"looking up category {name!r}"
        params = {"search": name.strip(), "per_page": "100", "_fields": "id,name"}
        response = await self._call(category_route, "GET", "", action, params)
        found = self._exact_match(response, action, "name", key)
        if found is not None:
            self._categories[key] = found
            return found
        if not create:
            raise ChannelRejected(
                f"{self._label}: category {name!r} (from category_map) does not exist in WordPress; create it there "
                "or set create_missing_categories = true"
            )
        action = f"creating category {name!r}"
        response = await self._call(category_route, "POST", "", action, {"_fields": "id,name"}, {"name": name.strip()})
        error = _wordpress_error(response)
        if response.status_code == 400 and error is not None and error[0] == "term_exists":
            term_id = error[3].get("term_id") if error[3] else None
            if isinstance(term_id, int):
                self._categories[key] = term_id
                return term_id
        if not response.is_success:
            raise self._error(response, action)
        created = self._json(response, action)
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise ChannelRejected(f"{self._label}: {action}: the answer has no category id")
        self._categories[key] = created["id"]
        log.info("wordpress.category_created", channel=self.name, category=name, id=created["id"])
        return int(created["id"])

    async def _author_for(self, email: str | None) -> int | None:
        if email and self._can_list_users:
            user = await self._user_by_email(email)
            if user is not None:
                return user
        return self.options.default_author

    async def _user_by_email(self, email: str) -> int | None:
        key = email.strip().casefold()
        if key in self._authors:
            return self._authors[key]
        if self._author_misses.get(key, 0.0) > time.monotonic():
            return None
        users = await self._collection("users")
        action = "looking up the author by e-mail"
        params = {"search": email.strip(), "context": "edit", "_fields": "id,email", "per_page": "100"}
        response = await self._call(users, "GET", "", action, params)
        if response.status_code == 403:
            # The API user may not list users (list_users): fall back to default_author from now on.
            self._can_list_users = False
            error = _wordpress_error(response)  # its data is for reading, raw: only what it said is logged
            said = f"{error[0]}: {error[1]}" if error else response.reason_phrase
            log.warning("wordpress.cannot_list_users", channel=self.name, detail=said)
            return None
        found = self._exact_match(response, action, "email", key)
        if found is None:
            self._author_misses[key] = time.monotonic() + AUTHOR_MISS_TTL
            return None
        self._authors[key] = found
        return found

    async def _collection(self, name: str) -> _Route:
        """The route of a WordPress collection (``categories``, ``users``) in the site's REST route style."""
        return _Route((await self._resolve_route()).style, name, False)

    def _exact_match(self, response: HttpResponse, action: str, field: str, key: str) -> int | None:
        """The id of the item of a ``?search=`` answer whose ``field`` is ``key`` (case-folded, HTML entities
        decoded: WordPress escapes term names); None when no item is. WordPress's search matches parts of words,
        so the answer is checked for the exact one."""
        if not response.is_success:
            raise self._error(response, action)
        found = self._json(response, action)
        for item in found if isinstance(found, list) else []:
            if (
                isinstance(item, dict)
                and isinstance(item.get("id"), int)
                and html.unescape(str(item.get(field, ""))).strip().casefold() == key
            ):
                return int(item["id"])
        return None


def _default_rest_base(post_type: str) -> str:
    return {"post": "posts", "page": "pages"}.get(post_type, post_type)


def publication_marker(element_id: int, publication_id: int) -> str:
    """The HTML comment at the end of each post's content that names its Kordiam publication (see upsert)."""
    return f"<!-- kordiam-{element_id}-{publication_id} -->"


def element_token(element_id: int) -> str:
    """The start of the searchable word of every marker of the element's publications (see ``marker_token``)."""
    return f"kordiam-{element_id}-"


def element_markers(element_id: int) -> re.Pattern[str]:
    """A publication marker of the element; its group is the publication id."""
    return re.compile(rf"<!-- kordiam-{element_id}-([0-9]+) -->")


def marker_token(marker: str) -> str:
    """The marker's one searchable word: WordPress search matches words anywhere in title, excerpt or content."""
    return marker.removeprefix("<!-- ").removesuffix(" -->")


def _post_id(external_id: str | None) -> int | None:
    if external_id is None:
        return None
    text = external_id.strip()
    return int(text) if ascii_digits(text) and int(text) > 0 else None


def _wordpress_error(response: HttpResponse) -> tuple[str, str, str, dict[str, Any]] | None:
    """``(code, message, parameter details, data)`` of a WordPress REST error answer, None for anything else."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return None
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    assert isinstance(data, dict)
    params = data.get("params")
    details = "; ".join(f"{k}: {v}" for k, v in params.items()) if isinstance(params, dict) else ""
    # What it says is quoted in errors and logs: never with the credentials the request carried.
    message = response.redact(html.unescape(str(body.get("message") or "")))
    return response.redact(body["code"]), message, response.redact(details), data


def create(settings: ChannelSettings, options: BaseModel, context: ChannelContext) -> Channel:
    assert isinstance(options, WordPressOptions)
    return WordPressChannel(settings.name, options, context.http)
