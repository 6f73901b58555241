"""Redis key and channel names of the cluster protocol (envelopes: protocol_spec.cluster).

Every name here is listed in protocol_spec/cluster.md; change both together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol_spec.uri import MATCH_EXACT, MATCH_PREFIX

__all__ = [
    "CONTROL",
    "NODES",
    "NODE_HASHES",
    "SEP",
    "SEQ",
    "event_channel",
    "inbox",
    "node_hash",
    "node_hashes",
    "node_key",
    "probe",
    "reap_key",
    "reg_key",
    "retained_key",
    "text",
    "watch_target",
]

PREFIX = "wamp:"
CONTROL = b"wamp:ctl"
NODES = "wamp:nodes"
SEQ = "wamp:seq"
SEP = "\x1f"
NODE_HASHES = ("sessions", "subs", "regs", "testaments")
"""The kinds of ``wamp:node:{node}:{kind}`` state hashes."""


def node_key(node: str) -> str:
    """The heartbeat key of ``node`` (value: incarnation, with a TTL)."""
    return f"wamp:node:{node}"


def node_hash(node: str, kind: str) -> str:
    """One of ``node``'s state hashes: sessions, subs, regs or testaments."""
    return f"wamp:node:{node}:{kind}"


def node_hashes(node: str, kinds: Iterable[str] = NODE_HASHES) -> list[str]:
    """``node``'s state hashes of the given kinds (default: all of them)."""
    return [node_hash(node, kind) for kind in kinds]


def reap_key(node: str) -> str:
    """The lock that elects the node reaping dead ``node``."""
    return f"wamp:reap:{node}"


def reg_key(realm: str, match: str, uri: str) -> str:
    """The cluster-wide claim hash of one registration."""
    return f"wamp:reg:{realm}:{match}:{uri}"


def retained_key(realm: str) -> str:
    """The retained events of ``realm`` (field: topic)."""
    return f"wamp:retained:{realm}"


def inbox(node: str) -> bytes:
    """The channel carrying call envelopes to ``node``."""
    return f"wamp:inbox:{node}".encode()


def probe(node: str) -> bytes:
    """The channel ``node`` publishes its own probes to."""
    return f"wamp:probe:{node}".encode()


def event_channel(realm: str, topic: str) -> bytes:
    """The channel an event on ``topic`` is published to."""
    return f"wamp:ev:{realm}:{topic}".encode()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def watch_target(realm: str, match: str, topic: str) -> tuple[bool, bytes]:
    """What a local subscription needs from Redis: (is a pattern, channel or pattern).

    Exact: the topic's channel. Prefix ``a.b``: ``wamp:ev:{realm}:a.b*``. Wildcard
    ``a..c``: the pattern up to the first empty component (``…:a.*``); the receiving
    node filters with WAMP semantics.
    """
    if match == MATCH_EXACT:
        return False, event_channel(realm, topic)
    if match == MATCH_PREFIX:
        fixed = topic
    else:
        parts = topic.split(".")
        fixed = ""
        for part in parts:
            if not part:
                break
            fixed += part + "."
    return True, f"wamp:ev:{_glob_escape(realm)}:{_glob_escape(fixed)}*".encode()


def text(value: Any) -> str:
    """A Redis reply value as text (bytes are UTF-8)."""
    return value.decode() if isinstance(value, bytes) else str(value)
