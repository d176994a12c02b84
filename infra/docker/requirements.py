"""Print the runtime requirements of kordiam-bridge from pyproject.toml, plus the optional groups asked for.

    python3 requirements.py PYPROJECT [--extra NAME ...] > requirements.txt

The builder stage installs these before it copies the sources, so a source change does not reinstall the
dependencies. ``--extra`` adds an optional-dependency group of pyproject.toml: ``demo`` (moto, the embedded
demo's SQS endpoint, which the production image leaves out), ``otel``.
Standard library only: it runs in the builder stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import tomllib

SELF = "kordiam-bridge"


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pyproject")
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, args.extra)))
