"""examples/ticker: one feed fanned out to many subscriber sessions, every quote to each."""

from __future__ import annotations

from tests.examples.conftest import Example, finish
from tests.support.processes import BrokerProcess

SUBSCRIBERS = 40
ROUNDS = 25
SYMBOLS = ("ACME", "GLOBEX")


def test_feed_reaches_every_subscriber(broker: BrokerProcess, example: Example) -> None:
    quotes = ROUNDS * len(SYMBOLS)
    watch = example(
        broker, "ticker/watch.py", "--subscribers", str(SUBSCRIBERS), "--quotes", str(quotes)
    )
    watch.wait_for_output(f"subscribed: {SUBSCRIBERS} sessions", timeout=20)

    feed = example(
        broker,
        "ticker/feed.py",
        "--symbols",
        ",".join(SYMBOLS),
        "--count",
        str(ROUNDS),
        "--interval",
        "0",
        "--seed",
        "7",
    )
    assert f"published {quotes} quotes" in finish(feed)
    output = finish(watch, timeout=20)

    assert f"{SUBSCRIBERS} subscribers received {SUBSCRIBERS * quotes} quotes" in output
    for symbol in SYMBOLS:
        assert f"last {symbol} " in output
