"""Kordiam API stub + Global Export channel stub in ONE aiohttp process (run as a subprocess by bench.run).

    python -m bench.stubs --port P --kordiam-latency-ms 20 --channel-latency-ms 50

Kordiam:  POST /api/v2/auth/token, GET /api/v2/elements/{id} (a ~2.9 KB v2 element, one publication on platform
          99003), PATCH /api/v2/elements/{id}/publications/{pid}, POST /api/v2/elements/{id}/external-element/link
Channel:  POST /element -> {"id": "<element id>"}, PUT /element/{id}
Stats:    GET /_stats -> {"arrivals": {element_id: first channel arrival wall-clock}, "fetched": {element_id:
          first GET wall-clock}, "counts": {...}};
          POST /_reset clears them. Every handler sleeps its latency before answering.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ELEMENT_TEMPLATE: dict[str, Any] = json.loads((Path(__file__).with_name("element.json")).read_text())
PUBLICATION_ID_OFFSET = 10_000_000
TOKEN_ANSWER = {"access_token": "bench", "token_type": "Bearer", "expires_in": 86_400}


def element(element_id: int) -> bytes:
    body = copy.deepcopy(ELEMENT_TEMPLATE)
    body["id"] = element_id
    body["publications"][0]["id"] = PUBLICATION_ID_OFFSET + element_id
    return json.dumps(body).encode()


def make_app(kordiam_latency: float, channel_latency: float) -> web.Application:
    arrivals: dict[str, float] = {}
    fetched: dict[str, float] = {}  # first GET of each element: the worker has received the message
    counts: dict[str, int] = {"token": 0, "get": 0, "patch": 0, "link": 0, "post": 0, "put": 0}

    async def token(request: web.Request) -> web.Response:
        counts["token"] += 1
        await asyncio.sleep(kordiam_latency)
        return web.json_response(TOKEN_ANSWER)

    async def get_element(request: web.Request) -> web.Response:
        counts["get"] += 1
        fetched.setdefault(request.match_info["id"], time.time())
        await asyncio.sleep(kordiam_latency)
        return web.Response(body=element(int(request.match_info["id"])), content_type="application/json")

    async def patch_publication(request: web.Request) -> web.Response:
        await request.read()
        counts["patch"] += 1
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
        await asyncio.sleep(channel_latency)
        return web.json_response({"id": element_id})

    async def channel_put(request: web.Request) -> web.Response:
        await request.read()
        arrivals.setdefault(request.match_info["id"], time.time())
        counts["put"] += 1
        await asyncio.sleep(channel_latency)
        return web.json_response({"id": request.match_info["id"]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals, "fetched": fetched, "counts": counts})

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        fetched.clear()
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
