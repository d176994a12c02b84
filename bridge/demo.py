"""``kordiam-bridge demo``: the whole bridge on embedded defaults, with nothing to install or configure.

An SQS endpoint (moto server, in-process), the Kordiam API simulator, and two folder channels ("website" and
"print"). The demo creates stories like the seeds' examples, updates and deletes some, sends one notification
twice, runs the worker until the queue is empty, and then checks and shows what landed where.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.config import Settings
from bridge.errors import ConfigError, shown
from bridge.ops.logging import configure_logging
from bridge.simulator import RunningSimulator, SimulatorSettings
from bridge.simulator.webhooks import WebhookAuth
from bridge.worker import run_worker

REGION = "eu-central-1"
WEBSITE, PRINT, NEWSLETTER = 99003, 99004, 99005
PLATFORM_NAMES = {WEBSITE: "Website", PRINT: "Print", NEWSLETTER: "Newsletter"}
CHANNEL_OF = {WEBSITE: "website", PRINT: "print"}
SETTLE_TIMEOUT = 90.0
DEMO_WEBHOOK_TOKEN = "demo-webhook-token"
EXIT_MISSING_EXTRA = 2
MISSING_MOTO = (
    "kordiam-bridge demo: the demo's SQS endpoint (moto) is not installed; "
    "run pip install 'kordiam-bridge[demo]', or use the demo image (docker build --build-arg EXTRAS=demo)"
)


@dataclass(frozen=True)
class Sample:
    title: str
    platforms: tuple[int, ...]
    headline: str
    text: str
    date: str | None = None
    time: str | None = None


SAMPLES = (
    Sample(
        "Council approves budget",
        (WEBSITE, PRINT),
        "Council approves record budget",
        "<p>The city council approved the 2027 budget by 31 votes to 12.</p>",
        "2026-11-23",
        "19:30",
    ),
    Sample(
        "Flood warning for the coast",
        (WEBSITE,),
        "Storm surge: flood warning for the coast",
        "<p>The weather service expects water levels <strong>1.5 m</strong> above normal.</p>",
        "2026-11-22",
        "22:45",
    ),
    Sample(
        "Interview with the new coach",
        (PRINT, NEWSLETTER),
        "“We play to win” – an interview",
        "<p>Ünïcødé, 日本語 and emoji 🎉 survive the trip.</p>",
        "2026-11-24",
    ),
    Sample("Late-night match report", (WEBSITE,), "Match report", "<p>Draft.</p>"),
)


def run_demo(workdir: Path, *, console: Console, webhooks: bool = False) -> int:
    """``webhooks``: Kordiam reaches the bridge through Global Export webhooks (simulator → ingress → queue)
    instead of putting notifications on the queue itself. ``console``: where it reports (the command line's, which
    leaves a reader that went away to ``bridge.cli``)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # a production install: moto is the `demo` extra
        print(MISSING_MOTO, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    workdir = _fresh_workdir(workdir.resolve())
    log_file = workdir / "worker.log"

    # moto's server logs every request through werkzeug; the demo shows its own progress instead.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    path = "Global Export webhooks → ingress → SQS" if webhooks else "SQS"
    console.print(f"[bold]kordiam-bridge demo[/bold]: {path} (moto server), Kordiam API simulator, two folder channels")
    sqs_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    sqs_server.start()
    try:
        host, port = sqs_server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        queue_url = _create_queues(endpoint)
        ingress_port = _free_port() if webhooks else None
        if ingress_port is None:
            simulator_settings = SimulatorSettings(queue_url=queue_url, sqs_endpoint_url=endpoint, region=REGION)
        else:
            simulator_settings = SimulatorSettings(
                region=REGION,
                global_export_url=f"http://127.0.0.1:{ingress_port}/kordiam",
                global_export_auth=WebhookAuth("bearer", token=DEMO_WEBHOOK_TOKEN),
            )
        with RunningSimulator(simulator_settings) as simulator, log_file.open("w", encoding="utf-8") as log:
            handlers = _log_to(log)
            try:
                settings = _settings(queue_url, endpoint, simulator.base_url, workdir)
                run = _run(console, settings, simulator.base_url, endpoint, queue_url, workdir, ingress_port)
                ok = asyncio.run(run)
            finally:
                logging.getLogger().handlers = handlers
    finally:
        sqs_server.stop()
    console.print(f"\nWorker log (one JSON line per outcome): {log_file}")
    return 0 if ok else 1


def _log_to(log: Any) -> list[logging.Handler]:
    """Send the worker's JSON log lines to the demo's log file; returns the handlers to restore."""
    import structlog

    configure_logging("info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log))
    previous = logging.getLogger().handlers
    logging.getLogger().handlers = [logging.StreamHandler(log)]
    return previous


def _create_queues(endpoint: str) -> str:
    sqs = boto3.client(
        "sqs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="demo", aws_secret_access_key="demo"
    )
    dlq = sqs.create_queue(QueueName="kordiam-demo-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    return str(sqs.create_queue(QueueName="kordiam-demo", Attributes={"RedrivePolicy": redrive})["QueueUrl"])


# What a demo run leaves in its --workdir, removed by the next run; nothing else there is ever touched.
GENERATED = ("website", "print", "state.db", "state.db-wal", "state.db-shm", "worker.log")


def _fresh_workdir(workdir: Path) -> Path:
    """``workdir`` emptied of an earlier run's output; ``ConfigError`` if it is not a directory, cannot be made, or
    holds anything else (``--workdir ~/site`` must never remove someone's ``website`` folder)."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError("--workdir", f"{shown(workdir)} is not a directory")
    if workdir.is_dir():
        foreign = sorted(p.name for p in workdir.iterdir() if p.name not in GENERATED)
        if foreign:
            listed = ", ".join(map(shown, foreign[:3])) + (", …" if len(foreign) > 3 else "")
            raise ConfigError(
                "--workdir",
                f"{shown(workdir)} holds files the demo did not make ({listed}); give a new or empty directory",
            )
    try:
        for generated in GENERATED:
            target = workdir / generated
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError("--workdir", f"cannot use {shown(workdir)}: {error.strerror or error}") from None
    return workdir


def _settings(queue_url: str, endpoint: str, kordiam: str, workdir: Path) -> Settings:
    return Settings(
        queue={
            "url": queue_url,
            "endpoint_url": endpoint,
            "region": REGION,
            "concurrency": 8,
            "wait_time_seconds": 1,
            "visibility_timeout": 30,
            "shutdown_timeout": 10,
        },
        kordiam={"base_url": kordiam, "client_id": "demo-client", "client_secret": "demo-secret"},
        state={"url": f"sqlite:///{workdir / 'state.db'}", "create_directories": True},
        channels=[
            {"name": "website", "type": "folder", "platforms": [WEBSITE], "path": str(workdir / "website")},
            {"name": "print", "type": "folder", "platforms": [PRINT], "path": str(workdir / "print")},
        ],
        ops={"port": 0},
    )


async def _run(
    console: Console,
    settings: Settings,
    kordiam: str,
    endpoint: str,
    queue_url: str,
    workdir: Path,
    ingress_port: int | None = None,
) -> bool:
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        ingress_url = None
        if ingress_port is not None:
            ingress_url = await stack.enter_async_context(_ingress(settings, ingress_port))
            console.print(
                f"Ingress listening on {ingress_url}/kordiam (bearer token), Kordiam calls it for every change"
            )
        worker = asyncio.create_task(run_worker(settings, stop, serve_ops=False))
        async with httpx.AsyncClient(base_url=kordiam, timeout=30) as admin:
            ids = await _newsroom_day(console, admin, ingress_url)
            await _wait_until_settled(console, admin, endpoint, queue_url, worker)
            stop.set()
            await worker
            return await _report(console, admin, ids, workdir)


@contextlib.asynccontextmanager
async def _ingress(settings: Settings, port: int) -> AsyncIterator[str]:
    """``kordiam-bridge ingress`` in this process: Global Export webhooks onto the worker's queue."""
    from bridge.config import IngressSettings
    from bridge.ingress.app import IngressServer, build_app
    from bridge.queue import open_transport
    from bridge.state import open_state_store

    ingress = IngressSettings.model_validate(
        {"global_export": {"path": "/kordiam", "auth": {"type": "bearer", "token": DEMO_WEBHOOK_TOKEN}}}
    )
    state = await open_state_store(settings.state)
    try:
        async with open_transport(settings.queue, consume=False) as transport:
            app, _ = build_app(ingress, transport, state, settings.main_channel)
            server = IngressServer(app, "127.0.0.1", port)
            await server.start()
            try:
                yield f"http://127.0.0.1:{server.port}"
            finally:
                await server.stop()
    finally:
        await state.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _newsroom_day(console: Console, admin: httpx.AsyncClient, ingress_url: str | None) -> list[int]:
    """Create the samples, then change the plan the way a desk does during a day."""
    ids = []
    for sample in SAMPLES:
        response = await admin.post("/_admin/elements", json=_element(sample))
        response.raise_for_status()
        ids.append(int(response.json()["id"]))
    console.print(f"Created {len(ids)} stories in the Kordiam simulator: {', '.join(map(str, ids))}")

    budget = (await admin.get(f"/_admin/elements/{ids[0]}")).json()
    budget["title"] = "Council approves record budget after 6-hour debate"
    (await admin.put(f"/_admin/elements/{ids[0]}", json=budget)).raise_for_status()
    (await admin.delete(f"/_admin/elements/{ids[3]}")).raise_for_status()
    # Kordiam may deliver a notification twice; nothing may be published twice.
    if ingress_url is None:
        (await admin.post(f"/_admin/elements/{ids[1]}/notify", json={"event": "updated"})).raise_for_status()
    else:
        # Kordiam retries a webhook whose answer got lost: the same PUT twice.
        (await admin.get("/_admin/webhooks")).raise_for_status()  # waits for the webhooks in flight
        element = (await admin.get(f"/_admin/elements/{ids[1]}")).json()
        # The id Kordiam holds: the CMS item the worker linked, or the element id the ingress answered.
        answered = (element.get("externalElement") or {}).get("externalId") or ids[1]
        headers = {"Authorization": f"Bearer {DEMO_WEBHOOK_TOKEN}", "Content-Type": "application/json"}
        for _ in range(2):
            retried = await admin.put(f"{ingress_url}/kordiam/element/{answered}", json=element, headers=headers)
            retried.raise_for_status()
    console.print(f"Updated story {ids[0]}, deleted story {ids[3]}, re-sent the notification of story {ids[1]}")
    return ids


async def _wait_until_settled(
    console: Console, admin: httpx.AsyncClient, endpoint: str, queue_url: str, worker: asyncio.Task[None]
) -> None:
    sqs = boto3.client(
        "sqs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="demo", aws_secret_access_key="demo"
    )

    def depth() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("Worker processing notifications", total=1)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if worker.done():
                worker.result()  # re-raises a crash
            sent = len((await admin.get("/_admin/notifications")).json())
            remaining = await asyncio.to_thread(depth)
            progress.update(task, total=sent, completed=max(0, sent - remaining))
            # Feedback writes cause further notifications: settled means empty for a moment, not just once.
            if remaining == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.5:
                    return
            else:
                quiet_since = None
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the queue did not settle within {SETTLE_TIMEOUT:.0f} s; see the worker log")


async def _report(console: Console, admin: httpx.AsyncClient, ids: list[int], workdir: Path) -> bool:
    table = Table(title="What landed where", show_lines=True)
    for column in ("Story", "Platform", "Channel", "Output", "Feedback in Kordiam", "Check"):
        table.add_column(column, overflow="fold")
    ok = True
    for element_id, sample in zip(ids, SAMPLES, strict=True):
        response = await admin.get(f"/_admin/elements/{element_id}")
        if response.status_code == 404:
            leftovers = await asyncio.to_thread(_files_of, workdir, element_id)
            good = not leftovers
            ok &= good
            output = "retracted" if good else ", ".join(leftovers)
            table.add_row(f"{element_id} {sample.title}", "—", "all", output, "element deleted", _mark(good))
            continue
        element = response.json()
        link = element.get("externalElement") or {}
        for publication in element["publications"]:
            platform = publication["platform"]["id"]
            channel = CHANNEL_OF.get(platform)
            name = f"{element_id} {element['title']}"
            if channel is None:
                good = not publication.get("externalId")
                ok &= good
                table.add_row(name, PLATFORM_NAMES[platform], "no channel configured", "—", "—", _mark(good))
                continue
            expected = f"{element_id}-{publication['id']}"
            page = workdir / channel / f"{expected}.html"
            cms = publication.get("cms") or {}
            good = page.exists() and publication.get("externalId") == expected and bool(cms.get("editLink"))
            ok &= good
            feedback = f"externalId {publication.get('externalId')}\ncms links {'set' if cms else 'missing'}"
            if link.get("externalId") == expected:
                feedback += "\nelement linked"
            table.add_row(name, PLATFORM_NAMES[platform], channel, f"{channel}/{page.name}", feedback, _mark(good))
    console.print(table)
    console.print(f"HTML output: {workdir / 'website'} and {workdir / 'print'} (open the .html files in a browser)")
    if ok:
        console.print("[bold green]Every story landed in its channels once, and its feedback is in Kordiam.[/]")
    else:
        console.print("[bold red]Some deliveries are missing; see the table and the worker log.[/]")
    return ok


def _files_of(workdir: Path, element_id: int) -> list[str]:
    return sorted(p.name for p in workdir.glob(f"*/{element_id}-*"))


def _mark(good: bool) -> str:
    return "[green]ok[/]" if good else "[red]MISSING[/]"


def _element(sample: Sample) -> dict[str, Any]:
    schedule: dict[str, Any] | None = None
    if sample.date:
        schedule = {"kind": "single", "date": sample.date}
        if sample.time:
            schedule["timing"] = {"type": "time", "time": sample.time}
    return {
        "title": sample.title,
        "slug": sample.title.lower().replace(" ", "-"),
        "elementStatus": {"id": 2, "name": "Accepted"},
        "groups": [{"id": 20082, "name": "Team"}],
        "tasks": [
            {
                "format": {"id": 1, "name": "Text"},
                "status": {"id": 2, "name": "Received"},
                "user": {"id": 3, "email": "anna@example.org", "firstName": "Anna", "lastName": "Berg"},
                "content": {"headline": sample.headline, "lead": "A short lead.", "text": sample.text},
            }
        ],
        "publications": [
            {
                "status": {"id": 1, "name": "No Status"},
                "platform": {"id": platform, "name": PLATFORM_NAMES[platform]},
                "category": {"id": 90000, "name": "Politics"},
                **({"schedule": schedule} if schedule else {}),
            }
            for platform in sample.platforms
        ],
    }
