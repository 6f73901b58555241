"""The reclaimer returns memory once a burst is over, and not while it lasts."""

from __future__ import annotations

import pytest

from broker.reclaim import Reclaimer, malloc_trim


def make(**kw: object) -> tuple[Reclaimer, list[int]]:
    runs: list[int] = []
    r = Reclaimer(reclaim=lambda: runs.append(1), **kw)  # type: ignore[arg-type]
    return r, runs


def test_no_reclaim_while_sessions_grow_or_stay() -> None:
    r, runs = make(min_drop=10, min_interval=0)
    for n in (0, 50, 100, 100, 99):
        assert r.observe(n, now=float(n)) is False
    assert runs == []


def test_reclaim_after_the_count_fell_by_half_and_enough() -> None:
    r, runs = make(min_drop=10, min_interval=0)
    r.observe(100, now=0.0)
    assert r.observe(60, now=1.0) is False  # fell by 40%: not yet
    assert r.observe(50, now=2.0) is True
    assert runs == [1]
    # the peak restarts from the level after the reclaim
    assert r.observe(30, now=3.0) is False
    assert r.observe(20, now=4.0) is True
    assert r.runs == 2


def test_small_bursts_do_not_trigger() -> None:
    r, runs = make(min_drop=500, min_interval=0)
    r.observe(400, now=0.0)
    assert r.observe(0, now=1.0) is False
    assert runs == []


def test_interval_bounds_the_rate() -> None:
    r, runs = make(min_drop=1, min_interval=10)
    r.observe(10, now=100.0)
    assert r.observe(0, now=101.0) is True
    r.observe(10, now=102.0)
    assert r.observe(0, now=105.0) is False  # within 10 s of the last run
    assert r.observe(0, now=112.0) is True
    assert len(runs) == 2


def test_released_buffers_trigger_a_reclaim() -> None:
    r, runs = make(min_bytes=1000, min_interval=0)
    assert r.released(600, now=1.0) is False
    assert r.released(600, now=2.0) is True
    assert r.released(600, now=3.0) is False  # the count restarted
    assert runs == [1]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Reclaimer(drop_fraction=0)
    with pytest.raises(ValueError):
        Reclaimer(min_drop=0)


def test_malloc_trim_runs_on_glibc() -> None:
    import platform

    expected = platform.libc_ver()[0] == "glibc"
    assert malloc_trim() is expected
