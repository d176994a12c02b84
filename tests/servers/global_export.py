"""A Global Export receiver (seed 001) over real HTTP, in a background thread, for the ``kordiam-webhook`` tests.

It behaves as seed 001 describes the CMS side: ``POST {url}/element`` stores the element and answers
``{"id": …}`` (its own id), ``PUT {url}/element/{id}`` replaces it, ``DELETE {url}/element/{id}`` removes it;
an unknown id is a 404 with a JSON ``message``. Every request must carry the configured authentication:

- ``bearer``: ``Authorization: Bearer <token>``;
- ``jwt``: ``Authorization: Bearer <HS256 JWT>``, checked here independently of the bridge's code: signature,
  ``alg``, ``exp`` in the future, ``iat`` not ahead, lifetime at most ``jwt_max_ttl``, and ``iss``/``aud``
  when expected;
- ``api_key``: a bearer token issued by ``POST {url}/oauth2/token`` for the right ``api_key``/``api_secret``
  (HTTP Basic or form fields), valid for ``token_ttl`` seconds, revocable;
- ``headers``: every expected header with its value.

``ThreadedJsonServer`` is the shared part (also used by ``platform_integration``): a stdlib HTTP/1.1 server on
port 0, every request recorded (``calls``), and failures injected with ``fail_next`` (the next N matching
requests answer a status, optionally with ``Retry-After`` and after a delay) or ``stall_next`` (a delay, then
the normal answer; for client timeouts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

Answer = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it (``path`` without the server's prefix)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    form: dict[str, str]
    status: int

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


@dataclass
class Fault:
    count: int
    status: int | None  # None: answer normally after the delay
    retry_after: str | None = None
    body: Any = None
    delay: float = 0.0
    method: str | None = None
    path: str | None = None  # a path prefix

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or path.startswith(self.path))


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    form: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive connections must not hold up stop()


class ThreadedJsonServer:
    """A JSON HTTP server in a background thread; subclasses implement ``route``."""

    def __init__(self, *, prefix: str = "", host: str = "127.0.0.1") -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._host = host
        self._lock = threading.RLock()
        self._requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The address to configure as the channel's ``url``."""
        return self.root_url + self.prefix

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection is closed after this

            def do_GET(self) -> None:
                owner._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = _HTTPServer((self._host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- inspection and failure injection ---

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those with ``method`` and a path starting with ``path``."""
        with self._lock:
            return [
                r
                for r in self._requests
                if (method is None or r.method == method) and (path is None or r.path.startswith(path))
            ]

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        retry_after: str | None = None,
        body: Any = None,
        delay: float = 0.0,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """The next ``count`` requests (matching ``method``/``path`` prefix) answer ``status``."""
        with self._lock:
            self._faults.append(Fault(count, status, retry_after, body, delay, method, path))

    def stall_next(self, seconds: float, count: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        """The next ``count`` matching requests are answered normally, but only after ``seconds``."""
        with self._lock:
            self._faults.append(Fault(count, None, delay=seconds, method=method, path=path))

    # --- request handling ---

    def route(self, request: Request) -> Answer:
        raise NotImplementedError

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        request = Request(handler.command, path, dict(handler.headers.items()), raw)
        kind = request.header("Content-Type") or ""
        if raw and "json" in kind:
            try:
                request.body = json.loads(raw)
            except ValueError:
                request.body = raw.decode("utf-8", "replace")
        elif raw and "x-www-form-urlencoded" in kind:
            request.form = {key: values[-1] for key, values in parse_qs(raw.decode()).items()}
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                self._reply(handler, request, (404, {"message": f"no route {path}"}, {}))
                return
            request.path = path[len(self.prefix) :] or "/"

        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body if fault.body is not None else {"message": f"injected failure {fault.status}"}
            self._reply(handler, request, (fault.status, body, headers))
            return
        with self._lock:
            answer = self.route(request)
        self._reply(handler, request, answer)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _reply(self, handler: BaseHTTPRequestHandler, request: Request, answer: Answer) -> None:
        status, body, headers = answer
        with self._lock:
            self._requests.append(
                Recorded(request.method, request.path, request.headers, request.body, request.form, status)
            )
        text = isinstance(body, bytes)  # an answer that is not JSON, sent as it is
        payload = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            handler.send_response(status)
            if payload:
                handler.send_header("Content-Type", "text/html; charset=utf-8" if text else "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if payload:
                handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_hs256(token: str, secret: bytes) -> dict[str, Any]:
    """Decode and check an HS256 JWT's signature; raise ``ValueError`` with the reason otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error) as error:
        raise ValueError(f"undecodable JWT: {error}") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise ValueError(f"alg must be HS256, not {header.get('alg') if isinstance(header, dict) else header!r}")
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise ValueError("bad signature")
    if not isinstance(claims, dict):
        raise ValueError("claims are not an object")
    return claims


class GlobalExportServer(ThreadedJsonServer):
    """A CMS implementing Kordiam's Global Export, with one authentication type."""

    def __init__(
        self,
        auth: str = "bearer",
        *,
        token: str = "persistent-token",
        jwt_secret: str = "jwt-shared-secret",
        jwt_issuer: str | None = None,
        jwt_audience: str | None = None,
        jwt_max_ttl: int = 300,
        api_key: str = "ge-api-key",
        api_secret: str = "ge-api-secret",
        token_ttl: int = 3600,
        headers: dict[str, str] | None = None,
        answer_put_with_id: bool = True,
        put_answer: bytes | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__(prefix=prefix)
        if auth not in ("bearer", "jwt", "api_key", "headers"):
            raise ValueError(f"unknown auth {auth!r}")
        self.auth = auth
        self.token = token
        self.jwt_secret = jwt_secret
        self.jwt_issuer = jwt_issuer
        self.jwt_audience = jwt_audience
        self.jwt_max_ttl = jwt_max_ttl
        self.api_key = api_key
        self.api_secret = api_secret
        self.token_ttl = token_ttl
        self.expected_headers = headers or {"X-Api-Key": "custom-header-secret"}
        self.answer_put_with_id = answer_put_with_id
        self.put_answer = put_answer  # a PUT's answer body as it is (not JSON), instead of the usual one
        self._elements: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(5001)
        self._tokens: dict[str, float] = {}
        self.token_requests = 0
        self.jwt_claims: list[dict[str, Any]] = []
        self.auth_failures: list[str] = []

    # --- inspection ---

    def elements(self) -> dict[str, dict[str, Any]]:
        """The stored elements by this server's id."""
        with self._lock:
            return json.loads(json.dumps(self._elements))  # type: ignore[no-any-return]

    def remove(self, element_id: str) -> None:
        """Delete an element "by hand" in the CMS."""
        with self._lock:
            del self._elements[element_id]

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # --- protocol ---

    def route(self, request: Request) -> Answer:
        if self.auth == "api_key" and request.method == "POST" and request.path == "/oauth2/token":
            return self._issue_token(request)
        problem = self._authenticate(request)
        if problem is not None:
            self.auth_failures.append(problem)
            return 401, {"message": problem}, {"WWW-Authenticate": "Bearer"}
        parts = [part for part in request.path.split("/") if part]
        if not parts or parts[0] != "element" or len(parts) > 2:
            return 404, {"message": f"no route {request.method} {request.path}"}, {}
        item = parts[1] if len(parts) == 2 else None
        if request.method == "POST" and item is None:
            invalid = _invalid_element(request.body)
            if invalid:
                return 422, {"message": invalid}, {}
            new_id = next(self._ids)
            self._elements[str(new_id)] = request.body
            return 201, {"id": new_id}, {}
        if item is None or item == "null":
            return 400, {"message": "the element id is missing"}, {}
        if request.method == "PUT":
            if item not in self._elements:
                return 404, {"message": f"element {item} not found"}, {}
            invalid = _invalid_element(request.body)
            if invalid:
                return 422, {"message": invalid}, {}
            self._elements[item] = request.body
            if self.put_answer is not None:
                return 200, self.put_answer, {}
            return (200, {"id": int(item)}, {}) if self.answer_put_with_id else (204, None, {})
        if request.method == "DELETE":
            if self._elements.pop(item, None) is None:
                return 404, {"message": f"element {item} not found"}, {}
            return 204, None, {}
        return 405, {"message": f"{request.method} not allowed"}, {}

    def _issue_token(self, request: Request) -> Answer:
        self.token_requests += 1
        key, secret = request.form.get("api_key"), request.form.get("api_secret")
        basic = request.header("Authorization") or ""
        if basic.startswith("Basic "):
            try:
                key, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, binascii.Error):
                return 400, {"message": "malformed Basic authorization"}, {}
        if key != self.api_key or secret != self.api_secret:
            return 401, {"message": "invalid api_key or api_secret"}, {}
        token = f"ge-{next(self._ids)}-{time.monotonic_ns()}"
        self._tokens[token] = time.monotonic() + self.token_ttl
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl}, {}

    def _authenticate(self, request: Request) -> str | None:
        authorization = request.header("Authorization") or ""
        bearer = authorization[7:] if authorization.startswith("Bearer ") else None
        if self.auth == "bearer":
            return None if bearer == self.token else "invalid bearer token"
        if self.auth == "api_key":
            expiry = self._tokens.get(bearer or "")
            return None if expiry is not None and expiry > time.monotonic() else "invalid or expired token"
        if self.auth == "jwt":
            if bearer is None:
                return "a JWT bearer token is required"
            try:
                claims = verify_hs256(bearer, self.jwt_secret.encode())
            except ValueError as error:
                return f"invalid JWT: {error}"
            now = time.time()
            exp, iat = claims.get("exp"), claims.get("iat")
            if not isinstance(exp, int) or exp <= now:
                return "JWT expired or without exp"
            if not isinstance(iat, int) or iat > now + 5 or exp - iat > self.jwt_max_ttl:
                return "JWT iat missing, in the future, or lifetime too long"
            if self.jwt_issuer is not None and claims.get("iss") != self.jwt_issuer:
                return "JWT issuer not accepted"
            if self.jwt_audience is not None and claims.get("aud") != self.jwt_audience:
                return "JWT audience not accepted"
            self.jwt_claims.append(claims)
            return None
        for name, value in self.expected_headers.items():
            if request.header(name) != value:
                return f"header {name} missing or wrong"
        return None


def _invalid_element(body: Any) -> str | None:
    """What seed 001's receivers rely on: an object with the Kordiam id, tasks and publications."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("id"), int):
        return "id (the Kordiam element id) is required"
    for key in ("tasks", "publications"):
        if not isinstance(body.get(key, []), list):
            return f"{key} must be a list"
    return None
