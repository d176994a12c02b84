"""Print the runtime requirements of kordiam-bridge from pyproject.toml, minus the ones a container leaves out.

    python requirements.py PYPROJECT [--with-demo] [--extra NAME ...] > requirements.txt

The production image does not carry the embedded demo's SQS emulator (moto[server] and its ~160 MB of
dependencies); ``--with-demo`` keeps it, for an image that can also run ``kordiam-bridge demo``. ``--extra``
adds an optional-dependency group of pyproject.toml (e.g. ``otel``).
Standard library only: it runs in the builder stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import tomllib

DEMO_ONLY = {"moto"}


def requirements(pyproject: str, *, with_demo: bool, extras: list[str] | None = None) -> list[str]:
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    keep = []
    for requirement in project["dependencies"]:
        name = re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if with_demo or name not in DEMO_ONLY:
            keep.append(requirement)
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    for extra in extras or []:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no optional-dependencies group {extra!r} (has: {sorted(optional)})")
        keep.extend(r for r in optional[extra] if r not in keep)
    return keep


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pyproject")
    parser.add_argument("--with-demo", action="store_true")
    parser.add_argument("--extra", action="append", default=[], help="an optional-dependencies group to add")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, with_demo=args.with_demo, extras=args.extra)))
