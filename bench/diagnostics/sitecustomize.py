"""Imported by the worker's interpreter at start-up when ``bench.run`` puts this folder on its ``PYTHONPATH``
(the diagnostic impls only): installs the variant ``BENCH_DIAGNOSTIC`` names."""

import os

if os.environ.get("BENCH_DIAGNOSTIC"):
    from bench.diagnostics.patches import install

    install(os.environ["BENCH_DIAGNOSTIC"])
