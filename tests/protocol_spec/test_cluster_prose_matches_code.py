"""protocol_spec/cluster.md's envelope and record tables say what protocol_spec/cluster.py does."""

from __future__ import annotations

from protocol_spec import cluster

from .test_prose_matches_code import _read, _table

ENVELOPE_HEADER = "| Envelope | Channel | op | Fields | Meaning / effect on the receiving node |"
RECORD_HEADER = "| Record | Stored in | Fields |"


def _fields(cell: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("`") for part in cell.split(","))


def _envelope_rows() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    rows = _table(_read("cluster.md"), ENVELOPE_HEADER)
    assert all(len(row) == 5 for row in rows)
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "an envelope appears twice in cluster.md"
    return {row[0]: (row[1], row[2], _fields(row[3])) for row in rows}


def test_every_envelope_in_the_prose_exists_with_its_op_and_fields() -> None:
    for name, (_channel, op, fields) in _envelope_rows().items():
        cls = getattr(cluster, name, None)
        assert isinstance(cls, type) and issubclass(cls, cluster.Envelope), name
        assert (cls.OP or "—") == op, name
        assert cluster.wire_keys(cls) == fields, name


def test_every_envelope_class_of_the_code_is_in_the_prose_on_its_channel() -> None:
    rows = _envelope_rows()
    for op, cls in cluster.CONTROL_TYPES.items():
        assert rows[cls.__name__][1] == op
        assert "wamp:{ctl}:ctl" in rows[cls.__name__][0]
    for op, cls in cluster.INBOX_TYPES.items():
        assert rows[cls.__name__][1] == op
        assert "wamp:{ctl}:inbox:" in rows[cls.__name__][0]
    assert ":ev:" in rows["EventEnvelope"][0]
    expected = {*(c.__name__ for c in cluster.CONTROL_TYPES.values())}
    expected |= {c.__name__ for c in cluster.INBOX_TYPES.values()} | {"EventEnvelope"}
    assert set(rows) == expected


def test_every_record_matches_the_prose() -> None:
    rows = _table(_read("cluster.md"), RECORD_HEADER)
    assert all(len(row) == 3 for row in rows)
    table = {row[0]: _fields(row[2]) for row in rows}
    records = {
        name
        for name in cluster.__all__
        if isinstance(obj := getattr(cluster, name), type)
        and issubclass(obj, cluster.Record)
        and obj is not cluster.Record
    }
    assert set(table) == records
    for name, fields in table.items():
        assert cluster.wire_keys(getattr(cluster, name)) == fields, name
