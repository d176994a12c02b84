"""Helpers for the infra tests: paths, HCL loading, a Dockerfile parser."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TERRAFORM = INFRA / "terraform"
MODULE = TERRAFORM / "modules" / "kordiam-bridge"
EXAMPLE = TERRAFORM / "examples" / "complete"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_DIR = INFRA / "compose"


# --- Terraform ---------------------------------------------------------------------------------------------------


@cache
def load_hcl(path: Path) -> dict[str, Any]:
    import hcl2
    from hcl2 import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open() as handle:
        return dict(hcl2.load(handle, serialization_options=options))


def tf_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tf"))


@dataclass
class Config:
    """One Terraform module's blocks, merged over its files."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.resources, f"missing resource {kind}.{name}"
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}


@cache
def load_module(directory: Path) -> Config:
    config = Config()
    for path in tf_files(directory):
        parsed = load_hcl(path)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.resources[(kind, name)] = body
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.data[(kind, name)] = body
        for block in parsed.get("variable", []):
            config.variables.update(block)
        for block in parsed.get("output", []):
            config.outputs.update(block)
        for block in parsed.get("locals", []):
            config.locals.update(block)
        for block in parsed.get("module", []):
            config.modules.update(block)
        config.terraform.extend(parsed.get("terraform", []))
        config.providers.extend(parsed.get("provider", []))
    return config


def as_list(value: Any) -> list[Any]:
    """HCL blocks come as a list of bodies, attributes as a value: always a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def one(value: Any) -> dict[str, Any]:
    items = as_list(value)
    assert len(items) == 1, f"expected exactly one block, got {len(items)}"
    result: dict[str, Any] = items[0]
    return result


# --- Dockerfile --------------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into build stages of instructions (continuations joined, comments dropped)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    preamble: list[Instruction] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        logical = (pending + stripped).strip()
        pending = ""
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", instruction.args, re.IGNORECASE)
            assert match, f"line {start}: unparsable FROM {instruction.args!r}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    assert not pending, "Dockerfile ends inside a line continuation"
    return stages
