"""The Markdown beside protocol_spec says what the code does."""

from __future__ import annotations

import re

import protocol_spec
from protocol_spec import MessageType, errors

from ._wire import SPEC_DIR

MESSAGE_HEADER = "| Message | Code | Direction | Wire format |"
FEATURE_HEADER = "| Feature | Status | Notes |"

WAMP_FEATURES = frozenset(
    {
        "publisher_exclusion",
        "publisher_identification",
        "subscriber_blackwhite_listing",
        "pattern_based_subscription",
        "event_retention",
        "event_history",
        "subscription_meta_api",
        "session_meta_api",
        "caller_identification",
        "call_canceling",
        "call_timeout",
        "progressive_call_results",
        "pattern_based_registration",
        "shared_registration",
        "registration_meta_api",
        "testament_meta_api",
    }
)
OTHER_FEATURES = frozenset(
    {"payload_passthru_mode", "rawsocket transport", "longpoll transport", "batched websocket"}
)
STATUSES = frozenset({"done", "not yet"})


def _read(name: str) -> str:
    return (SPEC_DIR / name).read_text(encoding="utf-8")


def _table(text: str, header: str) -> list[list[str]]:
    """Return the body rows of the Markdown table whose header row is exactly ``header``."""
    lines = text.splitlines()
    assert lines.count(header) == 1, f"expected one table headed {header!r}"
    start = lines.index(header)
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[start + 1].strip())
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip().strip("`").strip() for cell in cells])
    return rows


def _message_table() -> dict[str, int]:
    rows = _table(_read("wamp.md"), MESSAGE_HEADER)
    assert all(len(row) == 4 for row in rows)
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "a message appears twice in wamp.md"
    return {row[0]: int(row[1]) for row in rows}


def _feature_table() -> dict[str, str]:
    rows = _table(_read("README.md"), FEATURE_HEADER)
    assert all(len(row) == 3 for row in rows)
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), "a feature appears twice in README.md"
    return {row[0]: row[1] for row in rows}


def test_every_message_type_is_in_the_prose_table_with_its_code() -> None:
    table = _message_table()
    for member in MessageType:
        assert table.get(member.name) == member.value, member.name


def test_every_message_in_the_prose_table_exists_in_the_code() -> None:
    for name, code in _message_table().items():
        assert MessageType[name].value == code


def test_every_message_class_has_a_row_under_its_code() -> None:
    table = _message_table()
    for code, cls in protocol_spec.MESSAGE_CLASSES.items():
        assert table[cls.__name__.upper()] == code


def test_wire_format_cells_start_with_the_type_code() -> None:
    rows = _table(_read("wamp.md"), MESSAGE_HEADER)
    for name, code, _direction, wire in rows:
        assert wire.startswith(f"[{code},"), name


def test_every_error_constant_is_documented_with_its_uri() -> None:
    text = _read("wamp.md")
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, str):
            assert f"`{name}`" in text, name
            assert f"`{value}`" in text, value


def test_feature_table_lists_only_known_features() -> None:
    table = _feature_table()
    unknown = set(table) - WAMP_FEATURES - OTHER_FEATURES
    assert not unknown


def test_feature_table_lists_every_feature() -> None:
    assert set(_feature_table()) == WAMP_FEATURES | OTHER_FEATURES


def test_feature_statuses_are_done_or_not_yet() -> None:
    assert set(_feature_table().values()) <= STATUSES


def test_features_marked_done_are_exactly_those_the_router_announces() -> None:
    from broker.core.features import BROKER_FEATURES, DEALER_FEATURES

    announced = {name for name, on in (BROKER_FEATURES | DEALER_FEATURES).items() if on}
    done = {
        name
        for name, status in _feature_table().items()
        if status == "done" and name in WAMP_FEATURES  # transports are not announced
    }
    assert done == announced


def test_readme_links_to_the_protocol_prose() -> None:
    text = _read("README.md")
    assert "(wamp.md)" in text
    assert "(cluster.md)" in text


def test_readme_usage_example_runs() -> None:
    text = _read("README.md")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, "protocol_spec/README.md", "exec"), {})
