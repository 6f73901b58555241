"""Event history under chaos (issue 11): 3 nodes behind HAProxy, 30 subscribers, 4 faults.

The scenario lives in ``tests/support/chaos.py`` (the test
``tests/broker/cluster/test_history_chaos_full.py`` runs the same code smaller); its
docstring says exactly what is promised. This prints the counts per publisher and per
subscriber, then one JSON line, and exits 1 when a promise was broken::

    python -m bench.history_chaos                    # the full run: about 90 s
    python -m bench.history_chaos --sdk 3 --autobahn 3 --stop-seconds 2.5 --between 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tests.support.chaos import Plan, run


def main() -> None:
    plan = Plan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk", type=int, default=plan.sdk, help="SDK subscribers (resume)")
    parser.add_argument("--autobahn", type=int, default=plan.autobahn, help="Autobahn subscribers")
    parser.add_argument("--rate", type=float, default=plan.rate, help="events/s per publisher")
    parser.add_argument(
        "--between",
        type=int,
        default=plan.between,
        help="acked events per publisher between faults",
    )
    parser.add_argument(
        "--stop-seconds", type=float, default=plan.stop_seconds, help="SIGSTOP of Redis"
    )
    parser.add_argument("--converge", type=float, default=plan.converge)
    parser.add_argument(
        "--haproxy",
        choices=("healthz", "docker"),
        default=plan.haproxy,
        help="healthz: sessions live as long as their node; docker: docker/haproxy.cfg as shipped",
    )
    parser.add_argument("--dump", help="write every arrival sequence and acked set (JSON) here")
    parser.add_argument("--logs", help="save every node's output in this directory")
    args = parser.parse_args()
    plan = Plan(
        sdk=args.sdk,
        autobahn=args.autobahn,
        rate=args.rate,
        between=args.between,
        stop_seconds=args.stop_seconds,
        converge=args.converge,
        haproxy=args.haproxy,
    )
    result = asyncio.run(run(plan, logs=Path(args.logs) if args.logs else None))
    for line in result.lines():
        print(line)
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "arrivals": result.arrivals,
                    "acked": result.acked,
                    "joins": result.joins,
                    "replayed": result.replayed,
                },
                out,
            )
    summary = {"plan": asdict(plan), **asdict(result)}
    for key in ("arrivals", "acked", "joins", "replayed"):
        del summary[key]
    print(json.dumps(summary, default=str))
    sys.exit(1 if result.broken else 0)


if __name__ == "__main__":
    main()
