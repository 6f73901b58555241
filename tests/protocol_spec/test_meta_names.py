"""protocol_spec.meta: each constant's name spells its URI, and the sets hold them all."""

from __future__ import annotations

from protocol_spec import meta


def _constants() -> dict[str, str]:
    return {name: getattr(meta, name) for name in meta.__all__ if name.isupper()}


def test_each_name_spells_its_uri() -> None:
    for name, uri in _constants().items():
        if isinstance(uri, str):
            assert uri == "wamp." + name.lower().replace("_", ".", 1), name


def test_topics_and_procedures_hold_every_constant_once() -> None:
    values = {v for v in _constants().values() if isinstance(v, str)}
    assert meta.TOPICS | meta.PROCEDURES == values
    assert not meta.TOPICS & meta.PROCEDURES
    assert all(".on_" in topic for topic in meta.TOPICS)
