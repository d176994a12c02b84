"""Print the runtime requirements of kordiam-bridge from pyproject.toml, plus the optional groups asked for.

    python3 requirements.py PYPROJECT [--extra NAME ...] > requirements.txt
    /opt/venv/bin/python requirements.py --check-locked requirements.lock


The builder stage installs these before it copies the sources, so a source change does not reinstall the
dependencies. ``--extra`` adds an optional-dependency group of pyproject.toml: ``demo`` (moto, the embedded
demo's SQS endpoint, which the production image leaves out), ``otel``.
``--check-locked LOCK`` exits 1, naming them, when the interpreter running it has a distribution that LOCK does
not pin at its installed version (pip takes the lock as constraints, which bind only the packages it names).
Standard library only: it runs in the builder stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata

SELF = "kordiam-bridge"
# The virtualenv's own tools, which pip does not resolve and the builder uninstalls after use.
TOOLS = {"pip", "setuptools", "wheel"}


def requirements(pyproject: str, extras: list[str] | None = None) -> list[str]:
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    keep: list[str] = list(project["dependencies"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    for extra in extras or []:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no optional-dependencies group {extra!r} (has: {sorted(optional)})")
        for requirement in optional[extra]:
            # A group may name another group of this project ("kordiam-bridge[demo]"): pip would look for the
            # project itself on the index, so expand it here.
            own = re.fullmatch(rf"{SELF}\[([\w,\s-]+)\]", requirement.strip())
            nested = requirements(pyproject, [e.strip() for e in own.group(1).split(",")]) if own else [requirement]
            keep.extend(r for r in nested if r not in keep)
    return keep


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    """The lock's ``name==version`` lines, by canonical name."""
    pins: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            name, _, version = line.split("#", 1)[0].strip().partition("==")
            if name:
                pins[canonical(name)] = version.strip()
    return pins


def unlocked(installed: dict[str, str], lock: dict[str, str]) -> list[str]:
    """The installed distributions (name -> version) the lock does not pin at that version, the tools aside."""
    return [
        f"{name} {version} (locked: {lock.get(canonical(name), 'none')})"
        for name, version in sorted(installed.items(), key=lambda item: canonical(item[0]))
        if canonical(name) not in TOOLS and lock.get(canonical(name)) != version
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pyproject", nargs="?")
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    parser.add_argument("--check-locked", metavar="LOCK", help="fail on an installed package LOCK does not pin")
    args = parser.parse_args()
    if args.check_locked:
        installed = {dist.metadata["Name"]: dist.version for dist in metadata.distributions()}
        missing = unlocked(installed, read_lock(args.check_locked))
        if missing:
            sys.exit(f"not in {args.check_locked} (scripts/docker.sh lock remakes it): {', '.join(missing)}")
    elif args.pyproject:
        print("\n".join(requirements(args.pyproject, args.extra)))
    else:
        parser.error("PYPROJECT or --check-locked LOCK is required")
