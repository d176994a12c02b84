"""Print the import graph between the bridge's packages: one line per package, the packages it imports.

    .venv/bin/python scripts/import_graph.py          # every package → package edge
    .venv/bin/python scripts/import_graph.py --upward # only the edges that run up the layering (README, Layout)

grimp (installed with import-linter) builds the graph; imports inside functions count, as they run too.
"""

from __future__ import annotations

import argparse
import sys

import grimp

# Lowest first, as the README's layout section and pyproject's import-linter contracts list them.
LAYERS = [
    ["bridge.errors", "bridge.retry", "bridge.http", "bridge.ops"],
    ["bridge.kordiam", "bridge.state", "bridge.queue"],
    ["bridge.channels"],
    ["bridge.pipeline"],
]


def package(module: str) -> str:
    """``bridge.queue.consumer`` → ``bridge.queue``; a top-level module (``bridge.config``) stands for itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer(name: str) -> int | None:
    return next((n for n, members in enumerate(LAYERS) if name in members), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upward", action="store_true", help="only edges from a lower layer to a higher one")
    args = parser.parse_args()
    graph = grimp.build_graph("bridge", cache_dir=None)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            source, target = package(module), package(imported)
            if target not in (source, "bridge"):
                edges.setdefault(source, set()).add(target)
    for source in sorted(edges):
        targets = sorted(edges[source])
        if args.upward:
            low = layer(source)
            targets = [t for t in targets if low is not None and (layer(t) or -1) > low]
        if targets:
            print(f"{source} -> {', '.join(t.removeprefix('bridge.') for t in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
