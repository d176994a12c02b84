"""Kordiam API stub + Global Export channel stub in ONE aiohttp process (run as a subprocess by bench.run).

    python -m bench.stubs --port P --kordiam-latency-ms 20 --channel-latency-ms 50

Kordiam:  POST /api/v2/auth/token, GET /api/v2/elements/{id} (a ~2.9 KB v2 element, one publication on platform
          99003), PATCH /api/v2/elements/{id}/publications/{pid}, POST /api/v2/elements/{id}/external-element/link
Channel:  POST /element -> {"id": "<element id>"}, PUT /element/{id}
Stats:    GET /_stats -> {"arrivals": {element_id: first channel arrival wall-clock}, "fetched": {element_id:
          first GET wall-clock}, "counts": {...}};
          POST /_reset clears them. Every handler sleeps its latency before answering.
Backlog:  POST /_change {"ids": [...]} makes a new version of each element (title "… (v2)", a later
          modificationDate), as an editor's save in Kordiam; GET /_backlog -> {"versions", "written" (the version
          the channel last received), "gets", "writes" (per element), "first_get", "last_call" (wall-clock)}.
          Elements never changed are version 1 and are not listed in "versions".
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

ELEMENT_TEMPLATE: dict[str, Any] = json.loads((Path(__file__).with_name("element.json")).read_text())
PUBLICATION_ID_OFFSET = 10_000_000
TOKEN_ANSWER = {"access_token": "bench", "token_type": "Bearer", "expires_in": 86_400}


VERSION_IN_TITLE = re.compile(r" \(v(\d+)\)$")


def element(element_id: int, version: int = 1) -> bytes:
    body = copy.deepcopy(ELEMENT_TEMPLATE)
    body["id"] = element_id
    body["publications"][0]["id"] = PUBLICATION_ID_OFFSET + element_id
    if version > 1:
        body["version"] = version
        body["title"] = f"{body['title']} (v{version})"
        saved = datetime.fromisoformat(body["modificationDate"]) + timedelta(seconds=version)
        body["modificationDate"] = saved.isoformat().replace("+00:00", "Z")
    return json.dumps(body).encode()


def version_of(body: object) -> int:
    """The element version a channel write carries (its title says it; version 1 has no suffix)."""
    title = body.get("title") if isinstance(body, dict) else None
    found = VERSION_IN_TITLE.search(title) if isinstance(title, str) else None
    return int(found.group(1)) if found else 1


def make_app(kordiam_latency: float, channel_latency: float) -> web.Application:
    arrivals: dict[str, float] = {}
    fetched: dict[str, float] = {}  # first GET of each element: the worker has received the message
    counts: dict[str, int] = {"token": 0, "get": 0, "patch": 0, "link": 0, "post": 0, "put": 0}
    # The backlog workload's view: versions made by /_change, what the channel holds, calls per element.
    versions: dict[str, int] = {}
    written: dict[str, int] = {}
    gets: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    window = {"first_get": 0.0, "last_call": 0.0}

    def called(now: float) -> None:
        window["first_get"] = window["first_get"] or now
        window["last_call"] = now

    async def token(request: web.Request) -> web.Response:
        counts["token"] += 1
        await asyncio.sleep(kordiam_latency)
        return web.json_response(TOKEN_ANSWER)

    async def get_element(request: web.Request) -> web.Response:
        counts["get"] += 1
        element_id = request.match_info["id"]
        gets[element_id] += 1
        now = time.time()
        fetched.setdefault(element_id, now)
        called(now)
        await asyncio.sleep(kordiam_latency)
        body = element(int(element_id), versions.get(element_id, 1))
        return web.Response(body=body, content_type="application/json")

    async def patch_publication(request: web.Request) -> web.Response:
        await request.read()
        counts["patch"] += 1
        called(time.time())
        await asyncio.sleep(kordiam_latency)
        return web.json_response({"id": int(request.match_info["pid"])})

    async def link(request: web.Request) -> web.Response:
        await request.read()
        counts["link"] += 1
        await asyncio.sleep(kordiam_latency)
        return web.json_response({})

    async def channel_post(request: web.Request) -> web.Response:
        body = await request.json()
        element_id = str(body.get("id"))
        arrivals.setdefault(element_id, time.time())
        counts["post"] += 1
        writes[element_id] += 1
        written[element_id] = version_of(body)
        called(time.time())
        await asyncio.sleep(channel_latency)
        return web.json_response({"id": element_id})

    async def channel_put(request: web.Request) -> web.Response:
        body = await request.json()
        element_id = request.match_info["id"]
        arrivals.setdefault(element_id, time.time())
        counts["put"] += 1
        writes[element_id] += 1
        written[element_id] = version_of(body)
        called(time.time())
        await asyncio.sleep(channel_latency)
        return web.json_response({"id": request.match_info["id"]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals, "fetched": fetched, "counts": counts})

    async def change(request: web.Request) -> web.Response:
        for element_id in (await request.json())["ids"]:
            versions[str(element_id)] = versions.get(str(element_id), 1) + 1
        return web.json_response({})

    async def backlog(request: web.Request) -> web.Response:
        return web.json_response({"versions": versions, "written": written, "gets": gets, "writes": writes, **window})

    async def reset(request: web.Request) -> web.Response:
        for held in (arrivals, fetched, versions, written, gets, writes):
            held.clear()
        window.update(first_get=0.0, last_call=0.0)
        for key in counts:
            counts[key] = 0
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/v2/auth/token", token)
    app.router.add_get("/api/v2/elements/{id}", get_element)
    app.router.add_patch("/api/v2/elements/{id}/publications/{pid}", patch_publication)
    app.router.add_post("/api/v2/elements/{id}/external-element/link", link)
    app.router.add_post("/element", channel_post)
    app.router.add_put("/element/{id}", channel_put)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/_change", change)
    app.router.add_get("/_backlog", backlog)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kordiam-latency-ms", type=float, default=20)
    parser.add_argument("--channel-latency-ms", type=float, default=50)
    args = parser.parse_args()
    app = make_app(args.kordiam_latency_ms / 1000, args.channel_latency_ms / 1000)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main()
