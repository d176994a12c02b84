"""The container image, built and run on a real Docker engine (`make image-test`, i.e. scripts/docker.sh test).

scripts/docker.sh starts the engine, makes the base, builds the production image (BuildKit) and the demo image
(legacy builder), and names them in BRIDGE_TEST_IMAGE / BRIDGE_TEST_DEMO_IMAGE; without them every test here is
skipped. Everything a test creates carries this run's label and a unique name, and is removed at the end of the
session, also after a failure. Every wait has a bound and waits on a real signal (a port answering, a health
state, a file, a metric), never on a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "docker")
IMAGE = os.environ.get("BRIDGE_TEST_IMAGE", "")
DEMO_IMAGE = os.environ.get("BRIDGE_TEST_DEMO_IMAGE", "")
RUN_ID = f"kbt-{os.getpid()}-{secrets.token_hex(3)}"
LABEL = f"kordiam-bridge.test={RUN_ID}"
COMPOSE_PROJECT = f"{RUN_ID}-compose"
COMPOSE_CONFIG = REPO / "infra" / "compose" / "bridge.toml"
CREATE_QUEUES = REPO / "infra" / "compose" / "create_queues.py"
QUEUE_URL = "http://sqs:4566/000000000000/kordiam-notifications"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "eu-central-1"}
WEBSITE = 99003

pytestmark = pytest.mark.skipif(
    not (IMAGE and DEMO_IMAGE), reason="builds and runs the container image: `make image-test` runs these"
)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {shlex.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def wait_for(what: str, ready: Callable[[], bool], timeout: float, on_timeout: Callable[[], str] = str) -> None:
    """Poll ``ready`` until it is true; fail naming ``what`` (and ``on_timeout()``'s details) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s. {on_timeout()}")
        time.sleep(0.5)


def http(method: str, url: str, body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def answers(url: str) -> Callable[[], bool]:
    return lambda: http("GET", url)[0] == 200


def published(container: str, port: int) -> str:
    """The host address Docker chose for a container port published as 127.0.0.1::PORT."""
    address = docker("port", container, f"{port}/tcp").stdout.split()[0]
    return f"http://{address}"


def health(container: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()


def logs(container: str) -> str:
    result = docker("logs", container, check=False)
    return result.stdout + result.stderr


def run_once(*args: str, image: str = IMAGE, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", "--label", LABEL, image, *args, timeout=timeout, check=False)


@pytest.fixture(scope="session", autouse=True)
def remove_what_the_tests_made() -> Iterator[None]:
    yield
    for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"])):
        for label in (LABEL, f"com.docker.compose.project={COMPOSE_PROJECT}"):
            ids = docker(*listing, "--filter", f"label={label}", check=False).stdout.split()
            if ids:
                docker(kind, "rm", *(["-f"] if kind == "container" else []), *ids, check=False)
    for label in (LABEL, f"com.docker.compose.project={COMPOSE_PROJECT}"):
        volumes = docker("volume", "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)


# --- one-shot commands ------------------------------------------------------------------------------------------


def test_version_runs_as_uid_10001() -> None:
    result = run_once("--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"kordiam-bridge \d+\.\d+\.\d+\n", result.stdout)
    assert docker("image", "inspect", "-f", "{{.Config.User}}", IMAGE).stdout.strip() == "10001:10001"


def test_check_config_reads_a_mounted_file() -> None:
    mount = f"{COMPOSE_CONFIG}:/etc/kordiam-bridge/bridge.toml:ro"
    result = docker(
        "run", "--rm", "--label", LABEL, "-v", mount, "-e", "BRIDGE_KORDIAM__CLIENT_SECRET=s3cret-value",
        # The file's [ingress] secrets come from the environment too, as docker-compose.yml passes them.
        "-e", "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN=t0ken-value",
        "-e", "BRIDGE_INGRESS__PLATFORM__API_SECRET=pl4tform-value",
        IMAGE, "check-config", "--config", "/etc/kordiam-bridge/bridge.toml",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "website" in result.stdout and "http://sqs:4566" in result.stdout
    for secret in ("s3cret-value", "t0ken-value", "pl4tform-value"):
        assert secret not in result.stdout  # printed without secrets

    missing = run_once("check-config", "--config", "/etc/kordiam-bridge/nothing-here.toml")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "configuration error" in missing.stderr


def test_production_image_says_how_to_get_the_demo() -> None:
    result = run_once("demo")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'kordiam-bridge[demo]'" in result.stderr and "demo image" in result.stderr


def test_demo_image_runs_the_demo_with_a_read_only_root() -> None:
    result = docker(
        "run", "--rm", "--label", LABEL, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        DEMO_IMAGE, "demo", "--workdir", "/tmp/demo",
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr


def test_healthcheck_fails_with_nothing_listening() -> None:
    # The simulator serves 8700; the image's HEALTHCHECK asks the worker's 9090, where nothing listens.
    name = f"{RUN_ID}-nothing-on-9090"
    docker(
        "run", "-d", "--name", name, "--label", LABEL, "--health-interval", "1s", "--health-retries", "2",
        "--health-start-period", "0s", IMAGE, "simulator", "--host", "0.0.0.0",
    )  # fmt: skip
    wait_for("health unhealthy", lambda: health(name) == "unhealthy", 60, lambda: health(name))
    assert docker("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")[:2] == ["/usr/bin/tini", "--"]
    docker("rm", "-f", name)


# --- the worker in a network with an SQS endpoint and the Kordiam simulator ------------------------------------


@dataclass
class Stack:
    network: str
    sqs: str  # host URL of the moto server
    simulator: str  # host URL of the simulator

    def worker(self, name: str, volume: str, config: Path = COMPOSE_CONFIG) -> str:
        """Start a worker as compose does (read-only root, no capabilities); return the container name."""
        docker(
            "run", "-d", "--name", name, "--label", LABEL, "--network", self.network,
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "-v", f"{volume}:/var/lib/kordiam-bridge", "-v", f"{config}:/etc/kordiam-bridge/bridge.toml:ro",
            "-e", "BRIDGE_KORDIAM__CLIENT_SECRET=demo-secret", *env_args(CREDENTIALS),
            "-p", "127.0.0.1::9090", "--health-interval", "1s", "--health-start-period", "60s",
            IMAGE, "run", "--config", "/etc/kordiam-bridge/bridge.toml",
        )  # fmt: skip
        return name

    def create_elements(self, count: int) -> list[int]:
        ids = []
        for number in range(count):
            status, body = http("POST", f"{self.simulator}/_admin/elements", story(f"Story {number}"))
            assert status == 201, body
            ids.append(json.loads(body)["id"])
        return ids


def env_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


def story(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "elementStatus": {"id": 2, "name": "Accepted"},
        "publications": [{"status": {"id": 1, "name": "No Status"}, "platform": {"id": WEBSITE, "name": "Website"}}],
    }


def start_stack(name: str) -> Stack:
    """moto (from the demo image) as "sqs", the queues made by create_queues.py, the simulator as "simulator", in a
    network of their own."""
    network = f"{RUN_ID}-{name}-net"
    docker("network", "create", "--label", LABEL, network)
    moto = f"{RUN_ID}-{name}-sqs"
    docker(
        "run", "-d", "--name", moto, "--label", LABEL, "--network", network, "--network-alias", "sqs",
        "-e", "MOTO_ACCOUNT_ID=000000000000", "-p", "127.0.0.1::4566", "--entrypoint", "/usr/bin/tini",
        DEMO_IMAGE, "--", "moto_server", "--host", "0.0.0.0", "--port", "4566",
    )  # fmt: skip
    sqs = published(moto, 4566)
    wait_for("moto server answering", answers(f"{sqs}/moto-api/"), 60, lambda: logs(moto)[-2000:])
    created = docker(
        "run", "--rm", "--label", LABEL, "--network", network, "-v", f"{CREATE_QUEUES}:/opt/create_queues.py:ro",
        "-e", "BRIDGE_INIT_ENDPOINT_URL=http://sqs:4566", *env_args(CREDENTIALS),
        "--entrypoint", "python", IMAGE, "/opt/create_queues.py",
    )  # fmt: skip
    assert "dead-letter queue" in created.stdout
    simulator = f"{RUN_ID}-{name}-simulator"
    docker(
        "run", "-d", "--name", simulator, "--label", LABEL, "--network", network, "--network-alias", "simulator",
        "--read-only", "--cap-drop", "ALL", *env_args(CREDENTIALS), "-p", "127.0.0.1::8700",
        IMAGE, "simulator", "--host", "0.0.0.0", "--port", "8700", f"--queue-url={QUEUE_URL}",
        "--sqs-endpoint-url=http://sqs:4566", "--region=eu-central-1",
    )  # fmt: skip
    url = published(simulator, 8700)
    wait_for("simulator answering", answers(f"{url}/healthz"), 60, lambda: logs(simulator)[-2000:])
    return Stack(network, sqs, url)


@pytest.fixture(scope="module")
def stack() -> Stack:
    """One stack for the tests that only need a worker to start and run a story through."""
    return start_stack("shared")


@pytest.fixture
def own_stack() -> Stack:
    """A stack no other test has touched. A stopped worker's long polls go on on the server for up to
    wait_time_seconds (20 s) and take what is sent meanwhile for a reader that is gone, hiding it for the
    visibility timeout (60 s; bridge/queue/sqs.py): on the shared queue, the previous test's worker took the first
    stories a test sent."""
    return start_stack(secrets.token_hex(3))


def website_elements(container: str) -> set[int]:
    """Elements with a page in the website channel (the folder channel writes ELEMENT-PUBLICATION.json/.html)."""
    result = docker("exec", container, "ls", "/var/lib/kordiam-bridge/channels/website", check=False)
    return {int(name.split("-")[0]) for name in result.stdout.split() if name.endswith(".html")}


def outcomes(metrics_url: str) -> float:
    status, text = http("GET", f"{metrics_url}/metrics")
    if status != 200:
        return 0.0
    # Only the counter's samples: its `_created` gauge (a Unix time per outcome label, there from start-up, since
    # the consumer makes its three labels at once) would make any wait on this number end at once.
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("bridge_message_outcomes_total")
    )


def test_worker_is_healthy_non_root_under_tini_and_writes_only_where_allowed(stack: Stack) -> None:
    volume = docker("volume", "create", "--label", LABEL).stdout.strip()
    worker = stack.worker(f"{RUN_ID}-worker", volume)
    wait_for("worker healthy", lambda: health(worker) == "healthy", 90, lambda: logs(worker)[-3000:])
    assert docker("exec", worker, "id", "-u").stdout.strip() == "10001"
    assert docker("exec", worker, "cat", "/proc/1/cmdline").stdout.split("\0")[:3] == [
        "/usr/bin/tini",
        "--",
        "kordiam-bridge",
    ]
    readonly = docker("exec", worker, "touch", "/opt/venv/written", check=False)
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr
    docker("exec", worker, "touch", "/tmp/written", "/var/lib/kordiam-bridge/written")  # tmpfs and the volume

    [element] = stack.create_elements(1)
    wait_for("the story in the website channel", lambda: element in website_elements(worker), 90,
             lambda: logs(worker)[-3000:])  # fmt: skip
    docker("stop", "-t", "40", worker, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", worker).stdout.strip() == "0"


def test_healthcheck_asks_the_ops_port_of_the_config_file(stack: Stack, tmp_path: Path) -> None:
    """ops.port set in the file, not in the environment: the HEALTHCHECK follows the worker to it."""
    text = COMPOSE_CONFIG.read_text()
    assert "\nport = 9090\n" in text
    config = tmp_path / "bridge.toml"
    config.write_text(text.replace("\nport = 9090\n", "\nport = 9191\n", 1))
    config.chmod(0o644)
    volume = docker("volume", "create", "--label", LABEL).stdout.strip()
    worker = stack.worker(f"{RUN_ID}-ops-9191", volume, config)
    wait_for("worker healthy", lambda: health(worker) == "healthy", 90, lambda: logs(worker)[-3000:])
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"
    assert docker("exec", worker, "python", "-c", probe, "http://127.0.0.1:9191/healthz", check=False).returncode == 0
    assert docker("exec", worker, "python", "-c", probe, "http://127.0.0.1:9090/healthz", check=False).returncode != 0
    docker("stop", "-t", "40", worker, timeout=60)


def test_healthcheck_follows_the_ingress_to_its_port(stack: Stack) -> None:
    """`kordiam-bridge ingress` serves /healthz on ingress.port (8780 here) and no ops server: the image's
    HEALTHCHECK, without BRIDGE_HEALTHCHECK_URL, asks there."""
    volume = docker("volume", "create", "--label", LABEL).stdout.strip()
    name = f"{RUN_ID}-ingress"
    docker(
        "run", "-d", "--name", name, "--label", LABEL, "--network", stack.network,
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
        "-v", f"{volume}:/var/lib/kordiam-bridge", "-v", f"{COMPOSE_CONFIG}:/etc/kordiam-bridge/bridge.toml:ro",
        "-e", "BRIDGE_INGRESS__GLOBAL_EXPORT__AUTH__TOKEN=t0ken-value",
        "-e", "BRIDGE_INGRESS__PLATFORM__API_SECRET=pl4tform-value", *env_args(CREDENTIALS),
        "--health-interval", "1s", "--health-start-period", "60s",
        IMAGE, "ingress", "--config", "/etc/kordiam-bridge/bridge.toml",
    )  # fmt: skip
    wait_for("ingress healthy", lambda: health(name) == "healthy", 90, lambda: logs(name)[-3000:])
    docker("stop", "-t", "30", name, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0", logs(name)[-3000:]


# The sum of the test's own bounds (stack 180, first outcomes 120, two stops 120, the finisher 120): its own
# messages, not the default 120 s, say which wait ran out and why.
@pytest.mark.timeout(600)
def test_sigterm_drains_under_load_and_loses_nothing(own_stack: Stack) -> None:
    stack = own_stack
    # The queue is full before the worker starts, so SIGTERM finds it busy (16 handled at a time, more waiting).
    elements = stack.create_elements(60)
    volume = docker("volume", "create", "--label", LABEL).stdout.strip()
    first = stack.worker(f"{RUN_ID}-drained", volume)
    metrics = published(first, 9090)
    wait_for("the first outcomes", lambda: outcomes(metrics) >= 5, 120, lambda: logs(first)[-3000:])

    docker("stop", "-t", "40", first, timeout=60)  # SIGTERM (the image's STOPSIGNAL), SIGKILL only after 40 s
    assert docker("inspect", "-f", "{{.State.ExitCode}}", first).stdout.strip() == "0", logs(first)[-3000:]
    events = {entry.get("event"): entry for entry in json_lines(logs(first))}
    assert "consumer_draining" in events and "consumer_stopped" in events
    assert events["consumer_draining"]["in_flight"] > 0, "SIGTERM found the worker idle: no drain was tested"
    done = sum(1 for entry in json_lines(logs(first)) if entry.get("outcome") == "done")

    # A second worker on the same state finishes the rest: every story lands, none is lost. The released messages
    # are visible again at once (a busy worker's pollers wait for room: no receive to abort), or once an aborted long
    # poll has ended (wait_time_seconds, 20 s); a receive answering as the SIGTERM came is let finish and its messages
    # released (aborted, it once hid them for the 60 s visibility timeout: 82 s here). Nothing here waits for a
    # visibility timeout: 120 s is ample.
    started = time.monotonic()
    second = stack.worker(f"{RUN_ID}-finisher", volume)
    expected = set(elements)
    wait_for("every story in the website channel", lambda: expected <= website_elements(second), 120,
             lambda: f"missing {sorted(expected - website_elements(second))[:10]}; {logs(second)[-2000:]}")  # fmt: skip
    print(f"\nSIGTERM with {events['consumer_draining']['in_flight']} messages in flight, {done} done before;"
          f" drained in {events['consumer_stopped']['seconds']} s, exit 0; the second worker finished the rest in"
          f" {time.monotonic() - started:.0f} s")  # fmt: skip
    docker("stop", "-t", "40", second, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", second).stdout.strip() == "0"


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- docker compose (moto profile): the README's flow ---------------------------------------------------------


def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose 1.29 (what a machine here has); `docker compose` v2 takes the same arguments."""
    environment = dict(
        os.environ,
        BRIDGE_SQS_PORT="0",
        BRIDGE_SIMULATOR_PORT="0",
        BRIDGE_OPS_PORT="0",
        BRIDGE_INGRESS_PORT="0",
        BASE_IMAGE=os.environ.get("BRIDGE_TEST_BASE_IMAGE", "debian:bookworm-slim"),
        # The images this run built (scripts/docker.sh's IMAGE / DEMO_IMAGE), not whatever the default tags hold.
        IMAGE=IMAGE,
        DEMO_IMAGE=DEMO_IMAGE,
    )
    command = ["docker-compose", "-p", COMPOSE_PROJECT, "--profile", "moto", *args]
    result = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(command)} exited {result.returncode}: {result.stderr[-3000:]}")
    return result


def compose_port(service: str, port: int) -> str:
    return "http://" + compose("port", service, str(port)).stdout.strip()


# The README's readiness wait: 60 tries a second apart, on any error. Not only refused connections and 503
# answers: until the container listens, Docker's port proxy accepts the connection and then resets it (curl exit
# 56, "connection reset by peer"), which `--retry-connrefused` does not retry; that made this test flaky.
README_READINESS_WAIT = ("--fail", "--retry", "60", "--retry-all-errors", "--retry-delay", "1")


def curl(*args: str, timeout: float = 30) -> str:
    return subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=timeout, check=True).stdout


def test_compose_stack_runs_the_readme_flow() -> None:
    try:
        compose("up", "--detach")
        simulator, ops = compose_port("simulator", 8700), compose_port("worker", 9090)
        curl(*README_READINESS_WAIT, f"{ops}/readyz", timeout=120)
        created = curl("-X", "POST", f"{simulator}/_admin/elements", "-H", "Content-Type: application/json",
                       "-d", "@infra/compose/story.json", "--fail", "--show-error", "--output", "-")  # fmt: skip
        element = json.loads(created)["id"]

        def in_channel(channel: str) -> str:
            folder = f"/var/lib/kordiam-bridge/channels/{channel}"
            return compose("exec", "-T", "worker", "ls", folder, check=False).stdout

        wait_for("the story in both channels",
                 lambda: all(f"{element}-" in in_channel(channel) for channel in ("website", "print")),
                 120, lambda: compose("logs", "worker", check=False).stdout[-3000:])  # fmt: skip
        wait_for("externalId in Kordiam", lambda: "externalId" in curl(f"{simulator}/_admin/elements/{element}"), 60)
        assert re.search(r'^bridge_message_outcomes\S*outcome="done"\S* [1-9]', curl(f"{ops}/metrics"), re.M)

        # The webhook ingress, from the same image: Kordiam's Global Export call is answered once the queue holds it.
        ingress = compose_port("ingress", 8780)
        curl(*README_READINESS_WAIT, f"{ingress}/readyz", timeout=120)
        story = curl(f"{simulator}/_admin/elements/{element}")
        call = ["-X", "PUT", f"{ingress}/kordiam/element/{element}", "-H", "Content-Type: application/json",
                "-d", story, "--output", "-", "--write-out", "\n%{http_code}"]  # fmt: skip
        refused = curl(*call)
        assert refused.rsplit("\n", 1)[1] == "401", refused
        answered = curl(*call, "-H", "Authorization: Bearer demo-webhook-token")
        assert answered.rsplit("\n", 1)[1] == "200", answered
        assert re.search(r'^bridge_ingress_requests_total\S*status="200"\S* 1\.0', curl(f"{ingress}/metrics"), re.M)
    finally:
        compose("down", "-v", "--remove-orphans", timeout=180, check=False)
