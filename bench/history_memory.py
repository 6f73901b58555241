"""Memory of the in-memory event history against its configured bounds.

Each case fills a ``RealmHistory`` (the broker's own code path: rule lookup, then
``MemoryHistoryStore.append``) with ``topics x events`` publications whose payloads are
fresh objects per event, as decoded from the wire, and reports:

- ``estimate``: the bytes the store accounts (what ``history_max_bytes`` bounds);
- ``traced``: Python heap growth measured by tracemalloc (the truth for our objects);
- ``rss``: resident memory growth of the process (includes allocator slack);
- ``bound``: the configured ``history_max_bytes``.

Every case runs in fresh child processes (one timed and measured by RSS, one traced) so
figures do not leak between cases or get skewed by tracemalloc.
Also prints the cost per publish of the ``record`` hook with and without a rule.

    python -m bench.history_memory            # every case, a table at the end
    python -m bench.history_memory --case 100x1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass

from broker.core.history import HistoryRule, HistorySettings, RealmHistory
from broker.core.publication import Publication

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One fill: how many topics and events, the per-topic limit and the byte bound."""

    name: str
    topics: int
    events: int
    limit: int
    max_bytes: int


CASES = {
    c.name: c
    for c in (
        Case("100x1000", 100, 1000, 1000, 512 * MIB),  # everything fits
        Case("100x1000-bound32M", 100, 1000, 1000, 32 * MIB),  # the byte bound binds
        Case("10000x100-limit10", 10_000, 100, 10, 512 * MIB),  # the count bound binds
        Case("100x5000-bound16M", 100, 5000, 5000, 16 * MIB),  # 500k events into 16 MiB
    )
}


def _rss() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _payload(n: int) -> tuple[list[object], dict[str, object]]:
    """A ticker-like event: a few numbers and short strings (about 100 bytes of JSON)."""
    return [n, "EUR/USD", 1.0 + n / 1e6], {"bid": 1.08 + n / 1e7, "ask": 1.09, "venue": "x"}


def run_case(case: Case, trace: bool) -> dict[str, object]:
    """Fill one history and measure it (call in a fresh process).

    With ``trace`` the Python heap is measured by tracemalloc (which slows the fill and
    inflates RSS); without it, RSS and time per publish are the real ones.
    """
    rule = HistoryRule("com.bench.", match="prefix", limit=case.limit)
    history = RealmHistory.in_memory(HistorySettings((rule,), case.max_bytes))
    store = history.store
    topics = [f"com.bench.t{i}" for i in range(case.topics)]
    rss0 = _rss()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    publication = 0
    for _ in range(case.events):
        for topic in topics:
            publication += 1
            args, kwargs = _payload(publication)
            history.record(Publication(topic, publication, {}, args, kwargs))
    elapsed = time.perf_counter() - start
    if trace:
        traced, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"traced_mib": round(traced / MIB, 1)}
    return {
        "case": case.name,
        "published": publication,
        "kept": getattr(store, "count", None),
        "estimate_mib": round(getattr(store, "bytes", 0) / MIB, 1),
        "rss_mib": round((_rss() - rss0) / MIB, 1),
        "bound_mib": round(case.max_bytes / MIB, 1),
        "us_per_publish": round(elapsed / publication * 1e6, 2),
    }


def hook_cost(n: int = 200_000) -> dict[str, float]:
    """Microseconds per ``record`` call: realm without rules, topic without a rule."""
    none = RealmHistory.in_memory(HistorySettings())
    other = RealmHistory.in_memory(HistorySettings((HistoryRule("com.kept.", "prefix", 10),)))
    out: dict[str, float] = {}
    for label, history in (("no_rules", none), ("topic_without_rule", other)):
        start = time.perf_counter()
        publication = Publication("com.bench.free", 1, {})
        for _ in range(n):
            history.record(publication)
        out[label] = round((time.perf_counter() - start) / n * 1e6, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    parser.add_argument("--trace", action="store_true", help="with --case: tracemalloc only")
    opts = parser.parse_args()
    if opts.case:
        print(json.dumps(run_case(CASES[opts.case], opts.trace)), flush=True)
        return
    rows = []
    for name in CASES:
        row: dict[str, object] = {}
        for flags in ([], ["--trace"]):
            out = subprocess.run(
                [sys.executable, "-m", "bench.history_memory", "--case", name, *flags],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            row.update(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps({"hook_us": hook_cost()}))
    print()
    print(
        "| case | published | kept | estimate MiB | traced MiB | RSS MiB | bound MiB | us/publish |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['published']} | {r['kept']} | {r['estimate_mib']} | "
            f"{r['traced_mib']} | {r['rss_mib']} | {r['bound_mib']} | {r['us_per_publish']} |"
        )


if __name__ == "__main__":
    main()
