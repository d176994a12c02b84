"""Diagnostic variants of the bridge's worker for ``bench.run --impl``: where its CPU per message goes.

``bridge-queue-only``, ``bridge-memory-state`` and ``bridge-local-leases`` run ``kordiam-bridge run`` with one part
swapped out, in the benchmark's own regime (latencies, emulator, concurrency), so the part's share of the CPU is the
difference against ``bridge`` in the same run. They are measurements, never a way to run the bridge: see ``patches``.
"""

# A variant announces itself on the worker's stderr with this line; bench.run refuses a run whose log lacks it.
MARKER = "bench-diagnostic: installed"
VARIANTS = ("queue-only", "memory-state", "local-leases", "lean-http")
