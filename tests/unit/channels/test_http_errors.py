"""The channels' one mapping of HTTP answers to the bridge's errors (``bridge.channels.http_errors``)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bridge.channels.http_errors import http_error, item_gone, response_json, server_message, unreachable
from bridge.errors import ChannelRejected, ChannelUnavailable
from bridge.http import BasicAuth, HttpRequest, HttpResponse, HttpTimeout


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> HttpResponse:
    request = HttpRequest("GET", URL("https://cms.example/x"), CIMultiDict(), None, 5.0)
    return HttpResponse(status, CIMultiDictProxy(CIMultiDict(headers or {})), body, request)


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_unavailable_with_retry_after(status: int) -> None:
    error = http_error(_response(status, headers={"Retry-After": "7"}), "cms", "create", refused="check token")
    assert isinstance(error, ChannelUnavailable) and error.retry_after == 7


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_rejected_naming_what_to_check(status: int) -> None:
    error = http_error(_response(status, b'{"message": "bad token"}'), "cms", "create", refused="check token")
    assert isinstance(error, ChannelRejected)
    assert str(error) == f"cms: create: HTTP {status} bad token — check token"


def test_other_answers_are_rejected_with_the_server_message() -> None:
    error = http_error(_response(422, b'{"code": "invalid", "message": "no title"}'), "cms", "create", refused="-")
    assert isinstance(error, ChannelRejected) and str(error) == "cms: create: HTTP 422 invalid: no title"
    moved = http_error(_response(301, headers={"Location": "https://new.example/"}), "cms", "get", refused="-")
    assert isinstance(moved, ChannelRejected) and "redirected to https://new.example/" in str(moved)
    assert server_message(_response(502, b"<html> Bad\n gateway </html>")) == "<html> Bad gateway </html>"


def test_no_answer_is_unavailable() -> None:
    error = unreachable("cms", "create", "https://cms.example/x", HttpTimeout(""))
    assert (
        isinstance(error, ChannelUnavailable)
        and str(error) == "cms: create: https://cms.example/x unreachable: HttpTimeout"
    )


def test_response_json() -> None:
    assert response_json(_response(200, b'{"id": 1}'), "cms", "create") == {"id": 1}
    assert response_json(_response(204), "cms", "delete") is None
    with pytest.raises(ChannelRejected, match="not JSON"):
        response_json(_response(200, b"<html>"), "cms", "create")


def test_an_unknown_charset_is_read_as_utf8() -> None:
    # A proxy's error page may name a charset Python does not know; its text is still the reason, not a crash.
    page = _response(400, "<p>Zu groß</p>".encode(), {"Content-Type": "text/html; charset=x-bogus"})
    assert page.text == "<p>Zu groß</p>"
    assert str(http_error(page, "cms", "create", refused="-")) == "cms: create: HTTP 400 <p>Zu groß</p>"
    with pytest.raises(ChannelRejected, match="not JSON"):
        response_json(page, "cms", "create")


def test_an_answer_nested_too_deep_is_not_json() -> None:
    # orjson refuses nesting beyond 1,024 levels; the standard library's fallback then overflows the stack. A
    # CMS's (or a proxy's) absurd answer is "not JSON", a one-line refusal, not a RecursionError.
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ChannelRejected, match="not JSON"):
        response_json(_response(200, deep, {"Content-Type": "application/json"}), "cms", "create")
    assert server_message(_response(500, deep)).startswith("[[[")


@pytest.mark.parametrize(
    ("status", "body", "gone"),
    [
        (410, b"", True),
        (404, b'{"message": "element 7 not found"}', True),
        (404, b'{"code": "rest_post_invalid_id", "message": "Invalid post ID.", "data": {"status": 404}}', True),
        # A framework's default for a path it does not route names the path and the time, not the item.
        (404, b'{"timestamp": "2026-11-22T12:00:00Z", "status": 404, "error": "Not Found", "path": "/x"}', False),
        (404, b'{"message": "No static resource element/7."}', False),
        (404, b'{"code": "rest_no_route", "message": "No route was found matching the URL."}', False),
        (404, b'["not", "an", "object"]', False),
        (404, b"<html>Not Found</html>", False),
        (404, b"", False),
        (400, b'{"message": "element 7 not found"}', False),
    ],
)
def test_only_the_receivers_own_404_says_an_item_is_gone(status: int, body: bytes, gone: bool) -> None:
    assert item_gone(_response(status, body)) is gone


def _echoing(status: int, body: bytes, content_type: str = "text/html") -> HttpResponse:
    """An answer to a request carrying WordPress-style Basic credentials ``bridge:app-pw-SECRET``."""
    request_headers = CIMultiDict({"Authorization": BasicAuth("bridge", "app-pw-SECRET").header})
    request = HttpRequest("POST", URL("https://cms.example/x"), request_headers, None, 5.0)
    return HttpResponse(status, CIMultiDictProxy(CIMultiDict({"Content-Type": content_type})), body, request)


ECHOED_BASIC = BasicAuth("bridge", "app-pw-SECRET").header  # "Basic YnJpZGdl…"


@pytest.mark.parametrize(
    "answer",
    [
        _echoing(400, f"<pre>Authorization: {ECHOED_BASIC}</pre>".encode()),
        _echoing(403, f'{{"message": "refused {ECHOED_BASIC}"}}'.encode(), "application/json"),
        _echoing(500, b'{"error": "no user bridge:app-pw-SECRET"}', "application/json"),
        _echoing(409, b'{"detail": "password app-pw-SECRET is wrong"}', "application/json"),
    ],
)
def test_an_answer_echoing_the_requests_credentials_is_quoted_without_them(answer: HttpResponse) -> None:
    # A debug page or a proxy that repeats the request would put the secret into the log and the dead letter.
    error = http_error(answer, "cms", "create", refused="check app_password")
    secret_part = ECHOED_BASIC.removeprefix("Basic ")
    assert "app-pw-SECRET" not in str(error) and secret_part not in str(error)
    assert "***" in str(error)


def test_a_success_answer_echoing_credentials_is_quoted_without_them() -> None:
    answer = _echoing(200, f"<html>debug: Authorization: {ECHOED_BASIC}</html>".encode())
    with pytest.raises(ChannelRejected) as raised:
        response_json(answer, "cms", "create")
    assert ECHOED_BASIC.removeprefix("Basic ") not in str(raised.value)


def test_a_wordpress_error_echoing_the_password_is_read_without_it() -> None:
    # The WordPress adapter quotes a REST error's message in its own errors (a 400 read as a visitor's, say).
    from bridge.channels.wordpress import _wordpress_error

    body = (
        b'{"code": "rest_forbidden", "message": "no user bridge:app-pw-SECRET", '
        b'"data": {"params": {"p": "app-pw-SECRET"}}}'
    )
    said = _wordpress_error(_echoing(400, body, "application/json"))
    assert said is not None and "app-pw-SECRET" not in said[1] + said[2]


def test_every_header_but_the_public_ones_is_quoted_without_its_value() -> None:
    # A configured custom header (X-Auth-Token) is a credential like Authorization; what the bridge itself sets
    # to public values (Accept, Content-Type, User-Agent) stays readable in the quote.
    request_headers = CIMultiDict(
        {"Accept": "application/json", "Content-Type": "application/json", "X-Auth-Token": "tok-SECRET-9"}
    )
    request = HttpRequest("POST", URL("https://cms.example/x"), request_headers, b"{}", 5.0)
    echo = "; ".join(f"{name}: {value}" for name, value in request_headers.items())
    answer = HttpResponse(400, CIMultiDictProxy(CIMultiDict()), echo.encode(), request)
    assert answer.redact(echo) == "Accept: application/json; Content-Type: application/json; X-Auth-Token: ***"


@pytest.mark.parametrize(
    "answer",
    [
        _echoing(502, b"x" * 190 + b" app-pw-SECRET and more"),
        _echoing(400, b'{"message": "' + b"y" * 490 + b' app-pw-SECRET"}', "application/json"),
    ],
)
def test_a_secret_cut_by_the_quotes_length_leaves_no_part_of_itself(answer: HttpResponse) -> None:
    # Redacting after the quote is cut to length would miss a secret cut in two, and leave its first half.
    said = str(http_error(answer, "cms", "create", refused="-"))
    assert "app-pw" not in said and "SECRET" not in said
