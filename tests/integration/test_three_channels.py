"""One story, three platforms, three real systems: a WordPress post, a NewsML-G2 item in an S3 hot folder, and a
scheduled Mailchimp campaign draft; deleting the story retracts all three (trash, canceled item, campaign gone)."""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from bridge.config import Settings
from bridge.simulator import RunningSimulator
from tests.servers.mailchimp import RunningMailchimp
from tests.support import REGION, SimulatorAdmin, SqsEndpoint, drain, eventually, queue_settled, running_worker, story

CREDENTIALS_ENV = "BRIDGE_TEST_WORDPRESS"
NAR = "{http://iptc.org/std/nar/2006-10-01/}"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get(CREDENTIALS_ENV), reason=f"{CREDENTIALS_ENV} is not set (make wordpress)"),
]


async def test_website_print_and_newsletter_then_retracted(
    sqs_endpoint: SqsEndpoint,
    queues: tuple[str, str],
    simulator: RunningSimulator,
    admin: SimulatorAdmin,
    tmp_path: Path,
) -> None:
    creds: dict[str, Any] = json.loads(Path(os.environ[CREDENTIALS_ENV]).read_text())
    bucket = f"print-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=sqs_endpoint.url)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    when = (datetime.now(UTC) + timedelta(days=2)).replace(hour=18, minute=10, second=0, microsecond=0)

    with RunningMailchimp() as mailchimp:
        settings = Settings(
            queue={
                "url": queues[0],
                "endpoint_url": sqs_endpoint.url,
                "concurrency": 4,
                "wait_time_seconds": 1,
                "visibility_timeout": 20,
                "retry_base_seconds": 1,
                "retry_max_seconds": 2,
            },
            kordiam={"base_url": simulator.base_url, "client_id": "demo-client", "client_secret": "demo-secret"},
            state={"url": f"sqlite:///{tmp_path / 'state.db'}"},
            channels=[
                {
                    "name": "website",
                    "type": "wordpress",
                    "platforms": [99003],
                    "url": creds["url"],
                    "username": creds["username"],
                    "app_password": creds["app_password"],
                    "status_map": {"Accepted": "publish"},
                },
                {
                    "name": "print",
                    "type": "newsml",
                    "platforms": [99004],
                    "target": f"s3://{bucket}/hot/",
                    "endpoint_url": sqs_endpoint.url,
                    "region": REGION,
                },
                {
                    "name": "newsletter",
                    "type": "mailchimp",
                    "platforms": [99005],
                    "api_key": "test-key-us21",
                    "list_id": "list1",
                    "base_url": mailchimp.base_url,
                    "from_name": "The Daily",
                    "reply_to": "news@example.org",
                },
            ],
            ops={"port": 0},
        )
        body = story("Three channels", platforms=(99003, 99004, 99005))
        body["slug"] = f"three-{uuid.uuid4().hex[:8]}"
        for publication in body["publications"]:
            publication["status"] = {"id": 3, "name": "Accepted"}
            publication["schedule"] = {
                "kind": "single",
                "date": when.date().isoformat(),
                "timing": {"type": "time", "time": when.strftime("%H:%M")},
            }

        async with (
            httpx.AsyncClient(
                base_url=f"{creds['url']}/wp-json/wp/v2/", auth=(creds["username"], creds["app_password"])
            ) as wp,
            httpx.AsyncClient(base_url=mailchimp.base_url.rsplit("/3.0", 1)[0]) as mc,
            running_worker(settings),
        ):
            element_id = (await admin.create(body))["id"]

            async def fed_back() -> bool:
                publications = (await admin.get(element_id))["publications"]
                return all(p.get("externalId") for p in publications)

            await eventually(fed_back, timeout=30, what="all three channels delivered and fed back")
            web, print_, news = (await admin.get(element_id))["publications"]

            post = (await wp.get(f"posts/{web['externalId']}", params={"context": "edit"})).json()
            assert post["status"] == "future" and post["slug"] == body["slug"]

            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="hot/").get("Contents", [])]
            assert len(keys) == 1
            item = ET.fromstring(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
            assert item.tag == f"{NAR}newsItem"
            pub_status = item.find(f"{NAR}itemMeta/{NAR}pubStatus")
            assert pub_status is not None and pub_status.get("qcode") == "stat:usable"

            campaigns = {c["id"]: c for c in (await mc.get("/_admin/campaigns")).json()}
            campaign = campaigns[news["externalId"]]
            assert campaign["status"] == "schedule"
            assert campaign["send_time"].startswith(f"{when.date().isoformat()}T18:15")  # rounded up to :15
            assert campaign["settings"]["subject_line"] == "Three channels"

            await eventually(lambda: queue_settled(sqs_endpoint.url, queues[0]), what="settled")
            await admin.delete(element_id)

            async def retracted() -> bool:
                trashed = (await wp.get(f"posts/{web['externalId']}", params={"context": "edit"})).json()
                item = ET.fromstring(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
                status = item.find(f"{NAR}itemMeta/{NAR}pubStatus")
                remaining = {c["id"] for c in (await mc.get("/_admin/campaigns")).json()}
                canceled = status is not None and status.get("qcode") == "stat:canceled"
                return trashed.get("status") == "trash" and canceled and news["externalId"] not in remaining

            await eventually(retracted, timeout=30, what="post trashed, item canceled, campaign removed")
            assert print_["externalId"]
            await wp.delete(f"posts/{web['externalId']}", params={"force": "true"})
    assert drain(sqs_endpoint.url, queues[1]) == []
