"""The README's concrete claims an operator acts on, checked against the code: metric names and labels, setting
keys and their defaults, make targets, command lines and their flags, repository paths, the import layers.

Each test fails on a stale name (a metric, key, target or flag renamed or removed in the code but not in the
README). What the README says in prose is not checked here, only names and literal defaults.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import io
import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from bridge.channels import channel_types
from bridge.channels.guard import BreakerState
from bridge.cli import _parser, main
from bridge.config import ChannelSettings, FileSettings
from bridge.ingress import metrics as ingress_metrics
from bridge.ops import metrics as worker_metrics
from bridge.queue.outcome import DeadLetter, Done, Retry

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# --- metrics -------------------------------------------------------------------------------------------------------

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum", ""), "gauge": ("",)}


def exported_metrics() -> dict[str, tuple[str, ...]]:
    """Every sample name the worker and the ingress export, with its labels (a family's samples share them)."""
    labels: dict[str, tuple[str, ...]] = {}
    metrics = [value for module in (worker_metrics, ingress_metrics) for value in vars(module).values()]
    for metric in metrics:
        if isinstance(metric, MetricWrapperBase):
            for suffix in SUFFIXES[str(metric._type)]:
                labels[metric._name + suffix] = tuple(metric._labelnames)
    assert len(labels) > 25
    return labels


METRIC = re.compile(r"(?<!grep )\b(bridge_[a-z_]+)(?:\{([a-z_,]*)\})?")


def metric_mentions(text: str) -> list[tuple[str, str | None]]:
    """``bridge_…`` names in the text and the ``{labels}`` written after them, if any (a `grep` prefix aside)."""
    return [(match.group(1), match.group(2)) for match in METRIC.finditer(text)]


def metric_problems(text: str) -> list[str]:
    exported = exported_metrics()
    problems = []
    for name, labels in metric_mentions(text):
        if name not in exported:
            problems.append(f"{name}: no such metric")
        elif labels is not None and set(labels.split(",")) != set(exported[name]):
            problems.append(f"{name}{{{labels}}}: its labels are {{{','.join(exported[name])}}}")
    return problems


def test_every_metric_the_readme_names_is_exported_with_its_labels() -> None:
    assert metric_problems(README) == []


def test_every_metric_is_in_the_readme_with_its_labels() -> None:
    exported = exported_metrics()
    written = {name + (f"{{{labels}}}" if labels else "") for name, labels in metric_mentions(README)}
    families = [name for name in exported if not name.endswith(("_bucket", "_count", "_sum"))]
    full = [f"{name}{{{','.join(exported[name])}}}" if exported[name] else name for name in families]
    assert sorted(set(full) - written) == []


def test_the_metric_check_fails_on_a_stale_name() -> None:
    # The check above in small: a renamed metric and a label that is not there are both caught.
    assert metric_problems("`bridge_messages_received_total`, `bridge_message_outcomes_total{outcome}`") == []
    assert metric_problems("`bridge_messages_receive_total`") == ["bridge_messages_receive_total: no such metric"]
    assert metric_problems("`bridge_ingress_unmapped`") == ["bridge_ingress_unmapped: no such metric"]
    assert metric_problems("`bridge_channel_errors_total{channel}`") != []
    assert metric_mentions("curl … | grep bridge_message_outcomes") == []


# In the alert rules' PromQL: a selector with matchers (`name{label="value"}`) and an aggregation's grouping
# (`by (label) (name)`); `metric_problems` checks the names, these the labels (and the values the code can give).
SELECTOR = re.compile(r"\b(bridge_[a-z_]+)\{([^}]*=[^}]*)\}")
MATCHER = re.compile(r'\s*([a-z_]+)\s*(?:=~|!=|!~|=)\s*"([^"]*)"\s*')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)\s*\(\s*(bridge_[a-z_]+)")
# A counter's (or a histogram's series') rate or increase; of a gauge it reads every fall as a counter reset.
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\(\s*(bridge_[a-z_]+)")
LABEL_VALUES = {("bridge_message_outcomes_total", "outcome"): {Done.kind, Retry.kind, DeadLetter.kind}}


def promql_problems(text: str) -> list[str]:
    exported = exported_metrics()
    problems = []
    for name, matchers in SELECTOR.findall(text):
        labels = exported.get(name, ())
        for matcher in matchers.split(","):
            match = MATCHER.fullmatch(matcher)
            if match is None:
                problems.append(f"{name}{{{matchers}}}: not a label matcher")
            elif match.group(1) not in labels:
                problems.append(f"{name}: no label {match.group(1)}")
            elif (values := LABEL_VALUES.get((name, match.group(1)))) and match.group(2) not in values:
                problems.append(f"{name}: {match.group(1)} is never {match.group(2)!r}")
    for function, name in RANGE_FUNCTION.findall(text):
        if not name.endswith(("_total", "_bucket", "_count", "_sum")):
            problems.append(f"{name}: {function}() of a gauge, which goes down as well as up")
    for grouping, name in GROUPING.findall(text):
        for label in filter(None, (label.strip() for label in grouping.split(","))):
            if label not in exported.get(name, ()):
                problems.append(f"{name}: no label {label} to group by")
    return problems


def test_the_alert_rules_select_labels_the_metrics_have() -> None:
    assert promql_problems(README) == []


def test_the_label_check_fails_on_a_stale_label() -> None:
    assert promql_problems('increase(bridge_message_outcomes_total{outcome="dead_letter"}[10m])') == []
    assert promql_problems('bridge_message_outcomes_total{kind="dead_letter"}') == [
        "bridge_message_outcomes_total: no label kind"
    ]
    assert promql_problems('bridge_message_outcomes_total{outcome="dlq"}') == [
        "bridge_message_outcomes_total: outcome is never 'dlq'"
    ]
    assert promql_problems("max by (queue) (bridge_channel_parked_elements)") == [
        "bridge_channel_parked_elements: no label queue to group by"
    ]
    assert promql_problems("rate(bridge_message_age_seconds_bucket[5m])") == []
    assert promql_problems("increase(bridge_channel_parked_elements[1h]) > 0") == [
        "bridge_channel_parked_elements: increase() of a gauge, which goes down as well as up"
    ]


# --- settings ------------------------------------------------------------------------------------------------------

SECTIONS = ("queue", "kordiam", "state", "feedback", "reconcile", "ops", "ingress")
# A key at the start of a word: not a host name (`api.kordiam.app`), an address or a file (`bench/ingress.py`).
SETTING = re.compile(rf"(?<![\w./@-])((?:{'|'.join(SECTIONS)})\.[a-z_]+(?:\.[a-z_]+)*|channels\[\]\.[a-z_]+)\b")


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (also inside ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        if (found := model_of(argument)) is not None:
            return found
    return None


def setting_field(key: str) -> Any:
    """The pydantic field a README key names (``queue.url``, ``channels[].name``, ``ingress.platform.path``)."""
    model: type[BaseModel] | None = FileSettings
    parts = key.replace("channels[]", "channels").split(".")
    field = None
    for part in parts:
        if model is None or part not in model.model_fields:
            raise KeyError(key)
        field = model.model_fields[part]
        model = ChannelSettings if part == "channels" else model_of(field.annotation)
    return field


def test_every_setting_the_readme_names_exists() -> None:
    unknown = []
    for key in sorted(set(SETTING.findall(README))):
        try:
            setting_field(key)
        except KeyError:
            unknown.append(key)
    assert unknown == []


def test_the_setting_check_fails_on_a_stale_key() -> None:
    with pytest.raises(KeyError):
        setting_field("queue.visibility")
    with pytest.raises(KeyError):
        setting_field("ingress.platform.token_ttl")
    assert SETTING.findall("`queue.url`, https://api.kordiam.app, bench/ingress.py") == ["queue.url"]


def table_rows(text: str) -> list[list[str]]:
    """The rows of every `| key | default | … |` table, each as its cells."""
    rows = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("| key | default |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def literal(cell: str) -> Any:
    """A default cell as a value: `x`, a number, true/false, none, required; anything else is prose (None)."""
    if cell == "required":
        return PydanticUndefined
    if cell in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[cell]
    if re.fullmatch(r"`[^`]*`", cell) and not SETTING.fullmatch(cell.strip("`")):  # not "`kordiam.timeout`"
        return cell.strip("`")
    if re.fullmatch(r"\d+(\.\d+)?", cell):
        return float(cell)
    return ...


def check_default(key: str, field: Any, cell: str) -> str | None:
    said = literal(cell)
    if said is ...:
        return None
    if said is PydanticUndefined:
        return None if field.is_required() else f"{key}: said required, has a default {field.default!r}"
    actual = field.get_default(call_default_factory=True)
    if isinstance(said, bool):
        return None if actual is said else f"{key}: {cell} != {actual!r}"
    if said is None:
        return None if actual in (None, (), [], {}) else f"{key}: said none, default {actual!r}"
    if isinstance(said, float):
        return None if isinstance(actual, int | float) and float(actual) == said else f"{key}: {cell} != {actual!r}"
    return None if str(actual) == said else f"{key}: {cell} != {actual!r}"


def configuration_defaults() -> list[tuple[str, Any, str]]:
    """(key, field, default cell) of the Configuration table; "`a`, `b`" keys with "x, y" defaults paired."""
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for row in table_rows(section):
        keys = re.findall(r"`([^`]+)`", row[0])
        defaults = [part.strip() for part in row[1].split(", ")] if len(keys) > 1 else [row[1]]
        if len(defaults) == len(keys):
            found += [(key, setting_field(key), cell) for key, cell in zip(keys, defaults, strict=True)]
    return found


def test_the_configuration_table_gives_the_code_s_defaults() -> None:
    rows = configuration_defaults()
    assert len(rows) > 40
    assert [problem for key, field, cell in rows if (problem := check_default(key, field, cell))] == []


def channel_tables() -> dict[str, list[list[str]]]:
    """Each ``### `type` `` section's `| key | default | … |` rows."""
    channels = README.split("\n## Channels\n", 1)[1].split("\n## ", 1)[0]
    return {
        match.group(1): table_rows(match.group(2))
        for match in re.finditer(r"^### `([a-z-]+)`[^\n]*\n(.*?)(?=^### |\Z)", channels, re.MULTILINE | re.DOTALL)
    }


def test_every_channel_key_and_default_the_readme_gives_is_the_adapter_s() -> None:
    tables = channel_tables()
    types = channel_types()
    assert set(tables) == set(types)
    problems = []
    for kind, rows in tables.items():
        fields = types[kind].options.model_fields
        for row in rows:
            keys = re.findall(r"`([^`]+)`", row[0])
            defaults = [part.strip() for part in row[1].split(", ")] if len(keys) > 1 else [row[1]]
            for index, key in enumerate(keys):
                if key not in fields:
                    problems.append(f"{kind}: no key {key}")
                elif len(defaults) == len(keys) and (problem := check_default(key, fields[key], defaults[index])):
                    problems.append(f"{kind}: {problem}")
    assert problems == []


def test_the_default_check_fails_on_a_stale_default() -> None:
    field = setting_field("queue.concurrency")
    assert check_default("queue.concurrency", field, "32") is None
    assert check_default("queue.concurrency", field, "16") is not None
    assert check_default("ops.host", setting_field("ops.host"), "`0.0.0.0`") is not None
    assert check_default("kordiam.base_url", setting_field("kordiam.base_url"), "none") is not None


# --- make targets --------------------------------------------------------------------------------------------------


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))


def test_every_make_target_the_readme_names_exists() -> None:
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README)) | set(re.findall(r"^make ([a-z][a-z-]*)", README, re.M))
    assert len(named) > 15
    assert sorted(named - make_targets()) == []
    assert "tests" not in make_targets()  # what a stale `make tests` would be checked against


# --- command lines -------------------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_options(words: list[str]) -> set[str] | None:
    """The options of the (sub)command the words name (``["dlq", "show"]``), or None if there is no such one."""
    parser = _parser()
    for word in words:
        choices = subcommands(parser)
        if word not in choices:
            return None if choices else {option for action in parser._actions for option in action.option_strings}
        parser = choices[word]
    if subcommands(parser):
        return set()  # a command group: `dlq`, `parked`
    return {option for action in parser._actions for option in action.option_strings}


def command_lines(text: str = README) -> list[str]:
    """Every `kordiam-bridge …` the README shows, in code blocks (a line continued with `\\` whole; the image's
    too, `kordiam-bridge:local run …`) and in backticks, and its short forms (`` `replay --force` ``,
    `` `parked requeue --channel NAME` ``)."""
    commands = "|".join(sorted(subcommands(_parser()), key=len, reverse=True))
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    lines = re.findall(r"kordiam-bridge(?:-demo)?(?::[\w.-]+)? ([a-z][^`\n#|]*)", joined)
    lines += re.findall(rf"`((?:{commands})(?: [a-z]+)? --[^`]*)`", joined)
    return lines


def test_every_command_and_flag_the_readme_shows_exists() -> None:
    wrong = []
    lines = command_lines()
    assert len(lines) > 30
    for line in lines:
        words = line.split()
        names = [word for word in words[:2] if re.fullmatch(r"[a-z][a-z-]*", word)]
        options = command_options(names[:1]) if names[:1] else None
        if options is not None and len(names) > 1 and not options:
            options = command_options(names)  # a group's action: `dlq list`
        if options is None:
            # "kordiam-bridge ingress is the URL …", "kordiam-bridge[otel]": prose, not a command line.
            continue
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
        if unknown := sorted(flags - options):
            wrong.append(f"kordiam-bridge {line.strip()}: {', '.join(unknown)}")
    assert wrong == []


def test_every_operator_command_takes_config_and_json() -> None:
    # "Operator commands (all take `--config`; `--json` for machines …)"
    operator_commands = ("replay", "dlq list", "dlq show", "dlq redrive", "parked list", "parked requeue", "status")
    for command in [*(words.split() for words in operator_commands), ["element"]]:
        options = command_options(command)
        assert options is not None
        assert {"--config", "--json"} <= options, command


def all_options() -> set[str]:
    """Every option of every kordiam-bridge command."""
    found: set[str] = set()
    pending = [_parser()]
    while pending:
        parser = pending.pop()
        found |= {option for action in parser._actions for option in action.option_strings}
        pending += subcommands(parser).values()
    return found


def test_every_flag_the_readme_quotes_exists() -> None:
    # A flag in backticks on its own (`--native`, `--scan-limit`): a kordiam-bridge option, or one of the bench's,
    # the scripts' or the image's (`--workload backlog`, `--upward`, `--build-arg …`).
    tools = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("bench", "scripts", "infra")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and path.suffix in (".py", ".sh", "") and "results" not in path.parts
    )
    options = all_options()
    flags = {
        flag for span in re.findall(r"`(--[^`]*)`", README) for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", span)
    }
    assert len(flags) > 20
    assert sorted(flag for flag in flags if flag not in options and not re.search(rf"{flag}\b", tools)) == []


def test_the_command_check_fails_on_a_stale_flag() -> None:
    shown = "kordiam-bridge simulator --port 1 \\\n    --queue-urls Q\nkordiam-bridge-demo:local demo --work-dir /tmp"
    assert command_lines(shown) == ["simulator --port 1 --queue-urls Q", "demo --work-dir /tmp"]
    assert "--element" in (command_options(["dlq", "redrive"]) or set())
    assert "--elements" not in (command_options(["dlq", "redrive"]) or set())
    assert command_options(["dlq", "move"]) is None
    assert "--sample" in all_options()
    assert "--samples" not in all_options()


# --- paths and layers ----------------------------------------------------------------------------------------------


def test_every_repository_path_the_readme_names_exists() -> None:
    # Not /etc/kordiam-bridge/bridge.toml nor a placeholder (bench/results/<date>*.json).
    paths = re.findall(r"(?<![\w/.-])((?:bridge|tests|scripts|infra|bench|examples)/[\w./-]*[\w/])", README)
    assert len(paths) > 40
    assert sorted({path for path in paths if not (ROOT / path).exists()}) == []


def test_every_module_the_layout_table_names_exists() -> None:
    missing = []
    for folder, what in re.findall(r"^\| `(bridge/[a-z_]+)` \| (.*) \|$", README, re.MULTILINE):
        for name in re.findall(r"`([a-z_]+(?:\.py|/))`", what):
            if not (ROOT / folder / name).exists():
                missing.append(f"{folder}/{name}")
    assert missing == []


def test_the_layers_drawing_is_the_import_contract() -> None:
    block = re.search(r"### Layers\n.*?```\n(.*?)```", README, re.DOTALL)
    assert block is not None
    drawn = [sorted(re.findall(r"bridge(?:\.\w+)?", line.split("  ")[0])) for line in block.group(1).splitlines()]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in pyproject["tool"]["importlinter"]["contracts"] if c["id"] == "layers")
    layers = [sorted(re.findall(r"bridge(?:\.\w+)?", layer)) for layer in contract["layers"]]
    assert drawn == layers


# --- configuration snippets ----------------------------------------------------------------------------------------

# Written on the line before a ```toml block that shows part of a file (a channel, the [ingress] table): the test
# adds the sections it lacks from WHOLE_FILE. Every other block, and the shell examples' `<<'TOML'` files, must be
# a whole file as it stands.
FRAGMENT = "<!-- toml: part of a file -->"
WHOLE_FILE = {
    "queue": '[queue]\nurl = "https://sqs.eu-central-1.amazonaws.com/123456789012/kordiam-notifications"\n',
    "kordiam": '[kordiam]\nbase_url = "https://api.kordiam.app"\nclient_id = "bridge"\n',
    "channels": '[[channels]]\nname = "web"\ntype = "folder"\nplatforms = [99003]\npath = "/tmp/web"\n',
}
# A secret as the bridge takes one: 8 characters or more, one line.
SECRET_VALUE = "readme-secret-value"


def toml_snippets(text: str) -> list[tuple[str, bool]]:
    """Each ```toml block (with whether the line before marks it a fragment) and each `<<'TOML'` file."""
    blocks = [
        (block.group(1), text[: block.start()].rstrip("\n").rpartition("\n")[2].strip() == FRAGMENT)
        for block in re.finditer(r"^ *```toml\n(.*?)^ *```$", text, re.MULTILINE | re.DOTALL)
    ]
    return blocks + [(body, False) for body in re.findall(r"<<'TOML'\n(.*?)^TOML$", text, re.MULTILINE | re.DOTALL)]


def as_whole_file(snippet: str, fragment: bool) -> str:
    """The snippet with, if it is a fragment, the sections of ``WHOLE_FILE`` it does not set itself."""
    if not fragment:
        return snippet
    present = tomllib.loads(snippet)
    return "".join(section for key, section in WHOLE_FILE.items() if key not in present) + snippet


def check_config_problem(snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fragment: bool) -> str:
    """What `kordiam-bridge check-config` says of the snippet ("" when it accepts it), with the secrets set as
    the README says: Kordiam's client secret, and every ``BRIDGE_*`` variable the snippet's comments name."""
    for variable in [name for name in os.environ if name.upper().startswith("BRIDGE_")]:
        monkeypatch.delenv(variable)
    for variable in {"BRIDGE_KORDIAM__CLIENT_SECRET", *re.findall(r"\bBRIDGE_[A-Z_]+[A-Z]", snippet)}:
        monkeypatch.setenv(variable, SECRET_VALUE)
    path = tmp_path / "bridge.toml"
    path.write_text(as_whole_file(snippet, fragment), encoding="utf-8")
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        code = main(["check-config", "--config", str(path)])
    return "" if code == 0 else errors.getvalue().strip() or f"exit {code}"


def test_every_toml_snippet_is_a_configuration_check_config_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippets = toml_snippets(README)
    assert len(snippets) >= 4
    assert sum(fragment for _, fragment in snippets) >= 2  # the fragments are marked, so the rest are whole files
    problems = [
        f"{snippet.splitlines()[0]} …: {problem}"
        for snippet, fragment in snippets
        if (problem := check_config_problem(snippet, tmp_path, monkeypatch, fragment))
    ]
    assert problems == []


def test_the_snippet_check_fails_on_a_wrong_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = f'```toml\n[queue]\nurl = "x"\n```\n{FRAGMENT}\n```toml\n[ingress]\nport = 8780\n```\n'
    assert toml_snippets(text) == [('[queue]\nurl = "x"\n', False), ("[ingress]\nport = 8780\n", True)]
    # A fragment left unmarked is not a whole file; a key the bridge does not know is refused.
    channel = '[[channels]]\nname = "web"\ntype = "folder"\nplatforms = [1]\npath = "/tmp/web"\n'
    assert "queue" in check_config_problem(channel, tmp_path, monkeypatch, fragment=False)
    assert check_config_problem(channel, tmp_path, monkeypatch, fragment=True) == ""
    typo = channel.replace("path =", "pth =")
    assert "channels[0]" in check_config_problem(typo, tmp_path, monkeypatch, fragment=True)
    # A secret the snippet says comes from a variable is set only when the snippet names that variable.
    wordpress = channel.replace('"folder"', '"wordpress"').replace("path", "url").replace("/tmp/web", "https://x.org")
    wordpress += 'username = "bridge"\n'
    assert "app_password" in check_config_problem(wordpress, tmp_path, monkeypatch, fragment=True)
    named = wordpress + "# BRIDGE_CHANNELS__WEB__APP_PASSWORD\n"
    assert check_config_problem(named, tmp_path, monkeypatch, fragment=True) == ""


# --- links ---------------------------------------------------------------------------------------------------------


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings (outside code blocks): lower case, punctuation dropped, `-` for spaces."""
    prose = re.sub(r"^ *```.*?^ *```$", "", text, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#{1,6} (.+)$", prose, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def broken_links(text: str) -> list[str]:
    anchors = heading_anchors(text)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith("#"):
            if target[1:] not in anchors:
                broken.append(target)
        elif not re.match(r"[a-z]+://", target) and not (ROOT / target.partition("#")[0]).exists():
            broken.append(target)
    return broken


def test_every_link_in_the_readme_resolves() -> None:
    assert len(re.findall(r"\]\(#", README)) > 10
    assert broken_links(README) == []


def test_the_link_check_fails_on_a_stale_anchor() -> None:
    text = "## Webhook accounts\n### `kordiam-webhook` (any CMS)\n```\n# Not a heading\n```\n"
    assert heading_anchors(text) == {"webhook-accounts", "kordiam-webhook-any-cms"}
    assert broken_links(text + "[a](#webhook-accounts) [b](examples/bridge.toml) [c](https://x.org/y)") == []
    assert broken_links(text + "[a](#webhook-account) [b](#not-a-heading) [c](examples/bridge.tml)") == [
        "#webhook-account",
        "#not-a-heading",
        "examples/bridge.tml",
    ]


# --- names of log events, fields and the like ----------------------------------------------------------------------

LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
# Names of other systems the README quotes: AWS's, Docker Compose's, WordPress's.
OTHER_SYSTEMS_NAMES = {"credential_process", "depends_on.required", "rest_post_invalid_id"}
# A `name` the README quotes that must be the code's: snake_case, maybe dotted (`newsml.cannot_list`); not a
# metric, a setting or a file, which the checks above cover.
NAME = re.compile(r"[a-z][a-z0-9]*(?:[._][a-z0-9]+)*_[a-z0-9]+(?:[._][a-z0-9]+)*")
FILE = re.compile(r".*\.(?:py|toml|md|sh|json|tf|yml|yaml|db|lock)")


def python_files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in (ROOT / folder).rglob("*.py") if "results" not in path.parts]


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes: what a docstring says is prose, not the code's."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


@functools.cache
def code_words() -> frozenset[str]:
    """Every word of the code outside comments and docstrings (its strings' words, its identifiers), and of the
    other files the tools read (Terraform, shell, compose, TOML)."""
    words: set[str] = set()
    for path in python_files("bridge", "bench", "scripts", "infra"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        prose = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
                words |= set(re.findall(r"[\w.]+", node.value))
            elif isinstance(node, ast.Name | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                words.add(node.id if isinstance(node, ast.Name) else node.name)
            elif isinstance(node, ast.Attribute | ast.arg | ast.keyword) and (
                name := node.attr if isinstance(node, ast.Attribute) else node.arg
            ):
                words.add(name)
    for path in [*(ROOT / "infra").rglob("*"), *(ROOT / "scripts").rglob("*"), ROOT / "docker-compose.yml"]:
        if path.is_file() and path.suffix in (".tf", ".sh", ".toml", ".yml", ""):
            words |= set(re.findall(r"[\w.]+", path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(words)


@functools.cache
def log_fields() -> frozenset[str]:
    """The fields of the bridge's log lines: a log call's keywords, and those bound to every line of a message."""
    fields = set()
    for path in python_files("bridge"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else ""
            if isinstance(node, ast.Call) and called in LOG_METHODS | {"bind_contextvars", "bound_contextvars"}:
                fields |= {keyword.arg for keyword in node.keywords if keyword.arg}
    return frozenset(fields)


@functools.cache
def logged_events() -> frozenset[str]:
    """The events the bridge logs: a log call's literal event (``log.info("done", …)``, either of an ``a if b else
    c``), a worker pause's ``paused_event``/``still_event``, and the circuit breaker's ``breaker_<state>``."""
    events = {"breaker_" + state.name.lower() for state in BreakerState}
    for path in python_files("bridge"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS:
                texts = [text for argument in node.args[:1] for text in ast.walk(argument)]
                events |= {text.value for text in texts if isinstance(text, ast.Constant) and type(text.value) is str}
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
                events |= {str(node.value.value) for name in names if name.endswith("_event")}
    return frozenset(event for event in events if NAME.fullmatch(event))


def quoted_names(text: str) -> set[str]:
    """The `snake_case` names the text quotes, but metrics, settings and files."""
    return {
        name
        for name in re.findall(r"`([^`\n]+)`", text)
        if NAME.fullmatch(name)
        and not name.startswith("bridge_")
        and not SETTING.fullmatch(name)
        and not FILE.fullmatch(name)
    }


def names_not_in_code(text: str, words: frozenset[str]) -> list[str]:
    return sorted(quoted_names(text) - OTHER_SYSTEMS_NAMES - words - logged_events())


def test_every_name_the_readme_quotes_is_the_code_s() -> None:
    # Log events (`lease_lost`), their fields (`retry_in`), attributes (`trimmed_body_bytes`), Terraform variables
    # (`ingress_secret_arns`), tables (`deliveries_by_external_id`): a renamed one must not stay in the README.
    assert len(quoted_names(README)) > 150
    assert names_not_in_code(README, code_words()) == []


def test_the_name_check_fails_on_a_stale_name() -> None:
    words = code_words()
    assert "breaker_half_open" in logged_events() and "kordiam_still_unavailable" in logged_events()
    assert names_not_in_code("`consumer_resumed`, `retry_in`, `ingress_secret_arns`, `breaker_open`", words) == []
    assert names_not_in_code("`consumer_resume`, `breaker_opened`, `queue.url`, `import_graph.py`", words) == [
        "breaker_opened",
        "consumer_resume",
    ]


def runbook() -> str:
    return README.split("\n### Runbook (on call)\n", 1)[1].split("\n## ", 1)[0]


def setting_names() -> set[str]:
    """The last part of every setting key and channel key (`breaker_threshold`, `max_receive_count`)."""
    models: list[type[BaseModel]] = [FileSettings, ChannelSettings, *(t.options for t in channel_types().values())]
    names = set()
    while models:
        model = models.pop()
        names |= set(model.model_fields)
        models += [found for field in model.model_fields.values() if (found := model_of(field.annotation))]
    return names


def test_every_log_line_the_runbook_names_is_an_event_the_bridge_logs() -> None:
    # In the on-call tables a name in backticks is a log line to look for, a field of one (`retry_in`) or a
    # setting: not a mere word of the code.
    named = quoted_names(runbook())
    assert len(named & logged_events()) > 15
    assert sorted(named - logged_events() - log_fields() - setting_names()) == []


def docker_check_configs(text: str) -> list[tuple[str, dict[str, str]]]:
    """Each `docker run … -v "$PWD/FILE:…" [-e NAME=VALUE …] IMAGE check-config` the text shows (its lines joined):
    the repository file it mounts and the variables it sets."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in re.findall(r"docker run [^\n]* check-config [^\n]*", joined):
        mounts = re.findall(r'-v "\$PWD/([^:"]+):', line)
        variables = dict(re.findall(r"-e (BRIDGE_[A-Z_]+)=(\S+)", line))
        found += [(mount, variables) for mount in mounts]
    return found


def test_the_image_s_check_config_example_passes_as_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Deployment section's `docker run … check-config` on the compose file: the file and the variables the
    # command line gives must be a configuration check-config accepts, or whoever runs it meets exit 2.
    examples = docker_check_configs(README)
    assert examples
    for variable in [name for name in os.environ if name.upper().startswith("BRIDGE_")]:
        monkeypatch.delenv(variable)
    for mount, variables in examples:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        errors = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            code = main(["check-config", "--config", str(ROOT / mount)])
        assert (mount, code, errors.getvalue()) == (mount, 0, "")
        for name in variables:
            monkeypatch.delenv(name)
