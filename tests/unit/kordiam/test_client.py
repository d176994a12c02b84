"""The Kordiam client against scripted answers (in-process httpx transport; the simulator tests go over HTTP)."""

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from bridge.errors import (
    KordiamAuthFailed,
    KordiamCredentialsRefused,
    KordiamRedirected,
    KordiamRejected,
    KordiamUnavailable,
    UnexpectedResponse,
)
from bridge.http import HttpClient, HttpRequest, HttpResponse
from bridge.kordiam.client import KordiamClient
from bridge.kordiam.models import CmsLinks
from bridge.retry import RetryPolicy
from tests.support import http_answering

ELEMENT = {"id": 5, "title": "T", "publications": [{"id": 7, "platform": {"id": 1}}]}
FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002, total_seconds=5)


def problem(status: int, slug: str, **extra: object) -> httpx.Response:
    body = {"type": f"https://docs.kordiam.app/docs/errors/{slug}", "title": slug, "status": status, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class Script:
    """Answers API calls from a list of responses (or functions of the request) and records every request."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers: Iterator[httpx.Response | Callable[[httpx.Request], httpx.Response]] = iter(answers)
        self.requests: list[httpx.Request] = []
        self.tokens = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/auth/token":
            self.tokens += 1
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            assert form["grant_type"] == "client_credentials"
            if form["client_secret"] != "secret":
                return problem(401, "unauthorized", detail="bad client credentials")
            return httpx.Response(200, json={"access_token": f"t{self.tokens}", "expires_in": 3600})
        self.requests.append(request)
        answer = next(self.answers)
        return answer(request) if callable(answer) else answer


def client_for(script: Script, secret: str = "secret") -> KordiamClient:
    http = http_answering(script)
    return KordiamClient(
        http, base_url="https://kordiam.test/", client_id="c", client_secret=SecretStr(secret), retry=FAST
    )


async def test_get_element_authenticates_and_caches_the_token() -> None:
    script = Script(httpx.Response(200, json=ELEMENT), httpx.Response(200, json=ELEMENT))
    client = client_for(script)
    assert (await client.get_element(5)) is not None
    assert (await client.get_element(5)) is not None
    assert script.tokens == 1
    assert script.requests[0].url.path == "/api/v2/elements/5"
    assert script.requests[0].headers["authorization"] == "Bearer t1"


async def test_404_means_deleted_or_not_visible() -> None:
    assert await client_for(Script(problem(404, "resource-not-found"))).get_element(5) is None


async def test_401_fetches_a_new_token_once() -> None:
    script = Script(problem(401, "token-revoked"), httpx.Response(200, json=ELEMENT))
    assert await client_for(script).get_element(5) is not None
    assert script.tokens == 2
    assert script.requests[1].headers["authorization"] == "Bearer t2"


@pytest.mark.parametrize(
    "answer",
    [
        problem(404, "endpoint-not-found"),
        httpx.Response(404, text="<html><body>404 Not Found</body></html>", headers={"content-type": "text/html"}),
        httpx.Response(404),
    ],
    ids=["endpoint-not-found", "a-proxys-html-page", "empty"],
)
async def test_a_404_that_is_not_kordiams_word_on_the_element_is_not_a_deletion(answer: httpx.Response) -> None:
    # Read as "deleted", it had the sync retract the element's items from every channel.
    with pytest.raises(KordiamUnavailable, match="404 that does not say the resource is gone"):
        await client_for(Script(answer)).get_element(5)
    with pytest.raises(KordiamUnavailable):
        await client_for(Script(answer)).clear_publication(5, 7, external_id=True)


async def test_a_401_answered_after_another_request_refreshed_the_token_keeps_the_fresh_one() -> None:
    # Kordiam revoked t1 under two requests in flight. The first 401 fetches t2; the second 401 (for t1, answered only
    # once t2 exists) must not throw t2 away and fetch t3: each needless grant may, if a grant invalidates earlier
    # tokens (an open question, reference §6.8), turn a request in flight with t2 into "401 even with a fresh
    # token", a refusal of the worker's credentials that pauses it.
    granted: list[str] = []
    both_sent, second_token = asyncio.Event(), asyncio.Event()
    with_t1 = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal with_t1
        if request.url.path == "/api/v2/auth/token":
            granted.append(f"t{len(granted) + 1}")
            if len(granted) == 2:
                second_token.set()
            return httpx.Response(200, json={"access_token": granted[-1], "expires_in": 3600})
        if request.headers["authorization"] == "Bearer t1":
            with_t1 += 1
            if with_t1 == 1:  # answered once the second request is in flight with t1 too
                await both_sent.wait()
            else:
                both_sent.set()
                await second_token.wait()  # answered once the first one's refresh got t2
            return problem(401, "token-revoked")
        return httpx.Response(200, json=ELEMENT | {"id": int(request.url.path.rsplit("/", 1)[1])})

    client = KordiamClient(
        http_answering(answer), base_url="https://kordiam.test", client_id="c", client_secret=SecretStr("secret")
    )
    await client.check_credentials()  # t1
    first, second = await asyncio.gather(client.get_element(5), client.get_element(6))
    assert first is not None and second is not None
    assert granted == ["t1", "t2"]


async def test_401_twice_is_a_refusal_of_the_workers_credentials() -> None:
    with pytest.raises(KordiamCredentialsRefused, match="401"):
        await client_for(Script(problem(401, "unauthorized"), problem(401, "unauthorized"))).get_element(5)


async def test_403_is_a_refusal_of_one_request_not_of_the_credentials() -> None:
    with pytest.raises(KordiamAuthFailed) as raised:
        await client_for(Script(problem(403, "forbidden"))).get_element(5)
    assert not isinstance(raised.value, KordiamCredentialsRefused)


async def test_check_credentials_fetches_a_token_that_the_next_request_uses() -> None:
    script = Script(httpx.Response(200, json=ELEMENT))
    client = client_for(script)
    await client.check_credentials()
    assert await client.get_element(5) is not None
    assert script.tokens == 1
    with pytest.raises(KordiamCredentialsRefused, match="client_id 'c'"):
        await client_for(Script(), secret="wrong").check_credentials()


async def test_bad_credentials_name_the_client_id_but_not_the_secret() -> None:
    with pytest.raises(KordiamCredentialsRefused) as raised:
        await client_for(Script(), secret="wrong").get_element(5)
    assert "client_id 'c'" in str(raised.value) and "wrong" not in str(raised.value)


@pytest.mark.parametrize("where", ["header", "body"])
async def test_429_waits_for_retry_after(where: str) -> None:
    throttled = (
        problem(429, "too-many-requests") if where == "body" else httpx.Response(429, headers={"Retry-After": "0.01"})
    )
    if where == "body":
        throttled = problem(429, "too-many-requests", retryAfter=0.01)
    script = Script(throttled, httpx.Response(200, json=ELEMENT))
    assert await client_for(script).get_element(5) is not None
    assert len(script.requests) == 2


async def test_a_retry_after_of_zero_backs_off_rather_than_retrying_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Retry-After: 0" asks for nothing; taken literally, the budget's retries would hit a throttled API at once.
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("bridge.kordiam.client.asyncio.sleep", sleep)
    script = Script(httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, json=ELEMENT))
    assert await client_for(script).get_element(5) is not None
    assert len(slept) == 1 and slept[0] > 0


async def test_a_long_retry_after_is_handed_to_the_queue() -> None:
    script = Script(problem(429, "too-many-requests", retryAfter=60))
    with pytest.raises(KordiamUnavailable) as raised:
        await client_for(script).get_element(5)
    assert raised.value.retry_after == 60
    assert len(script.requests) == 1  # no pointless in-process sleep of a minute


@pytest.mark.parametrize("status", [500, 502, 503, 504, 409])
async def test_transient_statuses_are_retried(status: int) -> None:
    script = Script(problem(status, "x"), problem(status, "x"), httpx.Response(200, json=ELEMENT))
    assert await client_for(script).get_element(5) is not None
    assert len(script.requests) == 3


async def test_retries_are_bounded() -> None:
    script = Script(*[problem(503, "x")] * 10)
    with pytest.raises(KordiamUnavailable, match="gave up after 4 attempts"):
        await client_for(script).get_element(5)
    assert len(script.requests) == 4


async def test_an_html_error_page_is_quoted_on_one_line() -> None:
    # Before, the page's line breaks went into the error: `element --kordiam` printed six lines, a dead letter's
    # reason and the log's "error" held them too.
    page = "<!doctype html>\n<html>\n<title>500 Internal Server Error</title>\r\n\t<h1>Oops</h1>\n</html>"
    script = Script(*[httpx.Response(500, text=page, headers={"content-type": "text/html"})] * 4)
    with pytest.raises(KordiamUnavailable) as raised:
        await client_for(script).get_element(5)
    assert "<!doctype html> <html> <title>500 Internal Server Error</title> <h1>Oops</h1> </html>" in str(raised.value)
    assert not any(character in str(raised.value) for character in "\n\r\t")


async def test_connection_errors_are_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    script = Script(refuse, httpx.Response(200, json=ELEMENT))
    assert await client_for(script).get_element(5) is not None


async def test_validation_problems_become_typed_errors() -> None:
    answer = problem(400, "validation-failed", errors=[{"path": "externalId", "message": "too long"}], traceId="tr-1")
    with pytest.raises(KordiamRejected) as raised:
        await client_for(Script(answer)).update_publication(5, 7, external_id="x")
    assert raised.value.status == 400 and raised.value.problem_type == "validation-failed"
    assert "externalId: too long" in str(raised.value) and "traceId=tr-1" in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.Response(200, json=[1, 2]), "GET /api/v2/elements/5: answer is not an object"),
        (
            httpx.Response(200, json={"id": "not-a-number"}),
            "GET /api/v2/elements/5: unexpected Element shape at id: Input should be a valid integer",
        ),
    ],
)
async def test_unexpected_answers_are_clear_errors(answer: httpx.Response, said: str) -> None:
    with pytest.raises(UnexpectedResponse) as raised:
        await client_for(Script(answer)).get_element(5)
    assert said in str(raised.value)


async def test_feedback_bodies() -> None:
    script = Script(*[httpx.Response(200, json=ELEMENT)] * 3, problem(409, "conflict"))
    client = client_for(script)
    await client.update_publication(5, 7, external_id="42", cms=CmsLinks(edit_link="https://e", open_link="https://o"))
    await client.link_external_element(5, external_id="42", link="https://e")
    assert await client.publish_publication(5, 7) is True
    assert await client.publish_publication(5, 7) is False  # 409: already published
    patch, link, publish, _ = script.requests
    assert (patch.method, patch.url.path) == ("PATCH", "/api/v2/elements/5/publications/7")
    assert json.loads(patch.content) == {"externalId": "42", "cms": {"editLink": "https://e", "openLink": "https://o"}}
    assert (link.method, link.url.path) == ("POST", "/api/v2/elements/5/external-element/link")
    assert json.loads(link.content) == {"externalId": "42", "link": "https://e"}
    assert (publish.method, publish.url.path, publish.content) == (
        "POST",
        "/api/v2/elements/5/publications/7/publish",
        b"",
    )


async def test_clearing_bodies_send_null_for_each_cleared_field_and_a_missing_target_is_done() -> None:
    script = Script(httpx.Response(200, json=ELEMENT), problem(404, "resource-not-found"), httpx.Response(200, json={}))
    client = client_for(script)
    await client.clear_publication(5, 7, external_id=True, cms=["edit_link", "open_link_title"])
    await client.clear_publication(5, 8, cms=["open_link"])  # 404: Kordiam no longer has it, nothing to clear
    await client.clear_publication(5, 9)  # nothing named: no request
    await client.unlink_external_element(5)
    patch, gone, unlink = script.requests
    assert (patch.method, patch.url.path) == ("PATCH", "/api/v2/elements/5/publications/7")
    assert json.loads(patch.content) == {"externalId": None, "cms": {"editLink": None, "openLinkTitle": None}}
    assert json.loads(gone.content) == {"cms": {"openLink": None}}
    assert (unlink.method, unlink.url.path) == ("POST", "/api/v2/elements/5/external-element/unlink")
    assert json.loads(unlink.content) == {}


async def test_a_url_with_no_token_endpoint_is_not_a_refusal_of_the_credentials() -> None:
    client = KordiamClient(
        http_answering(lambda request: problem(404, "not-found")),
        base_url="https://kordiam.test/wrong/",
        client_id="c",
        client_secret=SecretStr("secret"),
        retry=FAST,
    )
    with pytest.raises(KordiamRejected) as raised:
        await client.check_credentials()
    assert raised.value.status == 404 and not isinstance(raised.value, KordiamCredentialsRefused)


async def test_the_modified_list_pages_by_cursor_to_its_end() -> None:
    script = Script(
        httpx.Response(200, json={"content": [ELEMENT], "hasMore": True, "nextCursor": "c1"}),
        httpx.Response(200, json={"content": [ELEMENT | {"id": 6}], "hasMore": False}),
    )
    found = [element.id async for element in client_for(script).iter_modified_elements(datetime.now(UTC))]
    assert found == [5, 6]
    assert "cursor=c1" in str(script.requests[1].url)


async def test_a_bounded_modified_list_asks_both_dates_on_every_page_as_kordiam_writes_dates() -> None:
    """UTC, to the second, a fraction dropped: the sweep's windows share their edge second (both bounds
    inclusive), so a rounded-up bound would list past where the sweep then stores its place."""
    script = Script(
        httpx.Response(200, json={"content": [ELEMENT], "hasMore": True, "nextCursor": "c1"}),
        httpx.Response(200, json={"content": [], "hasMore": False}),
    )
    since = datetime(2026, 1, 2, 1, 0, 0, 700_000, tzinfo=timezone(timedelta(hours=1)))
    until = datetime(2026, 1, 3, 0, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=1)))
    _ = [element async for element in client_for(script).iter_modified_elements(since, until=until)]
    for request in script.requests:
        assert request.url.params["modificationDateFrom"] == "2026-01-02T00:00:00Z"
        assert request.url.params["modificationDateTo"] == "2026-01-02T23:59:59Z"


@pytest.mark.parametrize("cursor", [{}, {"nextCursor": None}, {"nextCursor": ""}], ids=["absent", "null", "empty"])
async def test_more_pages_without_a_cursor_to_them_is_an_unexpected_answer(cursor: dict[str, object]) -> None:
    # Before, the list ended there as if complete: the sweep then moved its start past the elements of the pages it
    # never read, and no later sweep looked at them again.
    script = Script(httpx.Response(200, json={"content": [ELEMENT], "hasMore": True, **cursor}))
    seen: list[int] = []
    with pytest.raises(UnexpectedResponse, match="hasMore but no nextCursor"):
        async for element in client_for(script).iter_modified_elements(datetime.now(UTC)):
            seen.append(element.id)
    assert seen == [5]


async def test_a_cursor_answered_twice_ends_the_sweep_with_an_error_not_a_loop() -> None:
    # Before, a Kordiam that kept answering hasMore with the cursor it was given made the sweep loop for ever.
    page = {"content": [ELEMENT], "hasMore": True, "nextCursor": "same"}
    script = Script(*(httpx.Response(200, json=page) for _ in range(5)))
    seen: list[int] = []
    with pytest.raises(UnexpectedResponse, match="nextCursor 'same' again"):
        async for element in client_for(script).iter_modified_elements(datetime.now(UTC)):
            seen.append(element.id)
    assert seen == [5, 5] and len(script.requests) == 2


@pytest.mark.parametrize(
    "base",
    [
        "https://kordiam.test/",
        "http://127.0.0.1:9",
        "https://Newsroom.Kordiam.test:443/pre%20fix",
        "https://kordiam.test/a b/",
        "https://bücher.example/api",
        "http://[::1]:8080/x/",
    ],
)
async def test_the_url_of_a_plain_path_is_the_one_its_text_would_give(base: str) -> None:
    """The client appends a plain path to the API's URL parsed once (a hot-path saving): the same URL, whatever
    the configured base, as parsing the whole text; a path with a query is parsed as text."""
    seen: list[URL] = []

    async def answer(request: HttpRequest) -> HttpResponse:
        if request.url.path.endswith("/auth/token"):
            body = b'{"access_token": "t", "expires_in": 3600}'
        else:
            seen.append(request.url)
            body = json.dumps({**ELEMENT, "id": 123, "content": [], "hasMore": False}).encode()
        return HttpResponse(200, CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"})), body, request)

    client = KordiamClient(
        HttpClient.answering(answer), base_url=base, client_id="c", client_secret=SecretStr("s3cret-value")
    )
    await client.get_element(123)
    await client.update_publication(5, 7, external_id="x")
    await client.link_external_element(5, external_id="x", link=None)
    await client.list_reference("/publication-statuses")
    _ = [item async for item in client.iter_modified_elements(datetime(2026, 1, 2, tzinfo=UTC))]
    api = base.rstrip("/") + "/api/v2"
    expected = [
        URL(f"{api}/elements/123"),
        URL(f"{api}/elements/5/publications/7"),
        URL(f"{api}/elements/5/external-element/link"),
        URL(f"{api}/publication-statuses"),
        URL(f"{api}/elements?modificationDateFrom=2026-01-02T00%3A00%3A00Z&size=100"),
    ]
    assert seen == expected
    assert [str(url) for url in seen] == [str(url) for url in expected]
    assert [url.raw_path for url in seen] == [url.raw_path for url in expected]


@pytest.mark.parametrize(
    "refusal",
    [
        problem(401, "invalid_client", detail="unknown client c with secret s3cret-SECRET"),
        httpx.Response(400, text="grant_type=client_credentials&client_id=c&client_secret=s3cret-SECRET"),
    ],
)
async def test_a_token_refusal_echoing_the_client_secret_is_quoted_without_it(refusal: httpx.Response) -> None:
    # A token endpoint repeating the request's form must not put the client secret into the log and dead letter.
    client = client_for(Script(), secret="s3cret-SECRET")
    client._http = http_answering(lambda request: refusal)
    with pytest.raises(KordiamCredentialsRefused) as raised:
        await client.check_credentials()
    assert "s3cret-SECRET" not in str(raised.value) and "***" in str(raised.value)


async def test_a_404_endpoint_not_found_with_null_members_is_not_a_deletion() -> None:
    # A Java (Jackson) serialiser writes the members it has no value for as null. Before, `"errors": null` failed the
    # Problem Details model, the answer lost its `type`, and an unrouted path read as "the element is gone": a
    # retraction from every channel.
    answer = problem(404, "endpoint-not-found", detail=None, instance=None, traceId=None, errors=None, retryAfter=None)
    with pytest.raises(KordiamUnavailable, match="endpoint-not-found"):
        await client_for(Script(answer)).get_element(5)


async def test_a_problem_with_odd_member_types_keeps_its_type_and_retry_after() -> None:
    # A numeric traceId, an error item that is not an object: the rest of the problem is still read.
    answer = problem(429, "too-many-requests", retryAfter=60, traceId=12345, errors=["odd"])
    with pytest.raises(KordiamUnavailable) as raised:
        await client_for(Script(*[answer] * 4)).get_element(5)
    assert raised.value.retry_after == 60 and "traceId=12345" in str(raised.value)


async def test_an_element_other_than_the_one_asked_for_is_an_unexpected_answer() -> None:
    # Before, a proxy or cache answering another element's body had the sync deliver that story under this id.
    script = Script(httpx.Response(200, json=ELEMENT | {"id": 6}))
    with pytest.raises(UnexpectedResponse, match=r"GET /api/v2/elements/5: answered element 6, not 5"):
        await client_for(script).get_element(5)


@pytest.mark.parametrize("flag", [{"deleted": True}, {"deleted": "true"}])
async def test_an_element_flagged_deleted_is_deleted(flag: dict[str, object]) -> None:
    # Kordiam elements carry a "deleted" flag (seed 002, its trigger rules). Before, the model ignored it and the
    # sync published the deleted story.
    assert await client_for(Script(httpx.Response(200, json=ELEMENT | flag))).get_element(5) is None
    assert await client_for(Script(httpx.Response(200, json=ELEMENT | {"deleted": False}))).get_element(5) is not None


async def test_410_from_kordiam_is_a_deletion_but_a_bare_410_is_not() -> None:
    assert await client_for(Script(problem(410, "gone"))).get_element(5) is None
    with pytest.raises(KordiamUnavailable, match="410"):
        await client_for(Script(httpx.Response(410, text="<html>Gone</html>"))).get_element(5)


async def test_a_negative_retry_after_in_the_body_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, retryAfter -5 slept -5 s (no wait at all) and was handed to the queue as a delay of -5.
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("bridge.kordiam.client.asyncio.sleep", sleep)
    script = Script(*[problem(429, "too-many-requests", retryAfter=-5)] * 4)
    with pytest.raises(KordiamUnavailable) as raised:
        await client_for(script).get_element(5)
    assert slept and all(delay > 0 for delay in slept)
    assert raised.value.retry_after is None or raised.value.retry_after >= 0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, content=b"", headers={"content-type": "application/json"}),
        httpx.Response(200, content=b'{"id": 5, "title": "cut of', headers={"content-type": "application/json"}),
        # NaN is not JSON (Python's json module would have read it): nothing non-finite may reach a channel's body.
        httpx.Response(200, content=b'{"id": 5, "customFields": [{"id": 3, "number": NaN}]}'),
    ],
    ids=["a-proxys-page", "empty", "cut-off", "nan"],
)
async def test_a_success_that_is_not_json_is_kordiam_unavailable_not_the_elements_fault(answer: httpx.Response) -> None:
    # Before, each was an UnexpectedResponse: a permanent error, the message dead-lettered on its first receive, every
    # message alike while a proxy answered its maintenance page. Now retried, and the probe tells an outage.
    with pytest.raises(KordiamUnavailable, match=r"GET /api/v2/elements/5: answer is not JSON"):
        await client_for(Script(answer)).get_element(5)
    with pytest.raises(KordiamUnavailable, match=r"GET /api/v2/platforms: answer is not JSON"):
        await client_for(Script(answer)).probe()


async def test_a_write_answered_with_a_page_that_is_not_json_is_not_a_silent_success() -> None:
    page = httpx.Response(200, text="<html>maintenance</html>", headers={"content-type": "text/html"})
    with pytest.raises(KordiamUnavailable, match=r"PATCH /api/v2/elements/5/publications/7: answer is not JSON"):
        await client_for(Script(*[page] * 4)).update_publication(5, 7, external_id="42")
    with pytest.raises(KordiamUnavailable, match=r"POST /api/v2/elements/5/publications/7/publish: answer is not JSON"):
        await client_for(Script(*[page] * 4)).publish_publication(5, 7)
    # No body at all (204, or a 200 without one) is a success as before.
    assert await client_for(Script(httpx.Response(204))).publish_publication(5, 7) is True
    await client_for(Script(httpx.Response(200))).link_external_element(5, external_id="42", link=None)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_and_is_kordiam_unavailable(status: int) -> None:
    # The bearer token must not follow a redirect to another host; and a moved API is the worker's address to fix,
    # not each message's fault (before: KordiamRejected, every message dead-lettered on its first receive).
    moved = httpx.Response(status, headers={"Location": "https://elsewhere.example/api/v2/elements/5"})
    script = Script(*[moved] * 4)
    with pytest.raises(KordiamRedirected, match=rf"{status} redirect to https://elsewhere.example/api/v2/elements/5"):
        await client_for(script).get_element(5)
    assert len(script.requests) == 1 and all(r.url.host == "kordiam.test" for r in script.requests)
    with pytest.raises(KordiamRedirected):
        await client_for(Script(moved)).probe()


async def test_a_token_endpoint_that_redirects_names_the_redirect() -> None:
    client = KordiamClient(
        http_answering(lambda request: httpx.Response(308, headers={"Location": "https://new.example/token"})),
        base_url="https://kordiam.test/",
        client_id="c",
        client_secret=SecretStr("secret"),
        retry=FAST,
    )
    with pytest.raises(KordiamRedirected, match=r"POST /auth/token: 308 redirect to https://new\.example/token"):
        await client.check_credentials()


async def test_a_token_answer_of_200_with_an_oauth_error_is_a_refusal_of_the_credentials() -> None:
    # Before: "unexpected Token shape at access_token", read as Kordiam unavailable: the worker paused as if Kordiam
    # did not answer, and a start-up took it for an unreachable Kordiam instead of naming the secret.
    refusal = httpx.Response(200, json={"error": "invalid_client", "error_description": "Client authentication failed"})
    client = client_for(Script())
    client._http = http_answering(lambda request: refusal)
    with pytest.raises(KordiamCredentialsRefused, match="invalid_client: Client authentication failed"):
        await client.check_credentials()


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "abc def", "\x00abc"])
async def test_a_token_that_cannot_go_into_a_header_is_an_unusable_token_answer(token: str) -> None:
    # Before, aiohttp refused the header with a ValueError ("Forbidden control character") on every request: an
    # unclassified error of every message, never a pause with a reason.
    client = client_for(Script())
    client._http = http_answering(lambda request: httpx.Response(200, json={"access_token": token}))
    with pytest.raises(KordiamUnavailable, match="unexpected Token shape at access_token"):
        await client.check_credentials()


async def test_requests_waiting_for_a_token_fetch_that_failed_share_its_failure() -> None:
    # Before, each request queued behind the token lock ran a whole retry budget of its own once the one before it
    # failed: ten requests at an expired token made forty token requests, one after another, the last request
    # answered only after ten budgets.
    asked = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal asked
        asked += 1
        return problem(503, "unavailable")

    client = KordiamClient(
        http_answering(answer),
        base_url="https://kordiam.test",
        client_id="c",
        client_secret=SecretStr("secret"),
        retry=FAST,
    )
    results = await asyncio.gather(*(client.get_element(5) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, KordiamUnavailable) for result in results)
    assert asked == FAST.attempts
    # A request made after the failure asks again.
    with pytest.raises(KordiamUnavailable):
        await client.get_element(5)
    assert asked == 2 * FAST.attempts
