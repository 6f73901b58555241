"""Redis key and channel names of the cluster protocol (envelopes: protocol_spec.cluster).

Every name here is listed in protocol_spec/cluster.md; change both together.

Every name carries a Redis Cluster hash tag (``{…}``) right after ``wamp:``, before any
realm, topic or node text, so that text can never change the slot:

- ``{ctl}``: the control plane (node directory, claims, sequence, reap locks,
  retained events, the control channel and every node's inbox) is one slot, so the
  claim and release scripts and multi-key deletes touch one slot and a node's control
  and inbox envelopes keep their order on one shard;
- ``{t}``, ``t`` 8 hex digits of CRC-32 of ``realm␟topic``: a topic's event channel
  and its history keys share a slot (the history script writes both);
- ``{t}``, ``t`` of the realm alone: the realm's pattern channel (Redis Cluster only);
- a probe channel's tag is chosen to land in the shard its connection listens to.

On a single Redis (or Sentinel) the tags are just part of the names.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Container, Iterable
from typing import Any

from redis.crc import key_slot

from protocol_spec.uri import MATCH_EXACT, MATCH_PREFIX

__all__ = [
    "CONTROL",
    "CTL",
    "NODES",
    "NODE_HASHES",
    "SEP",
    "SEQ",
    "event_channel",
    "inbox",
    "inbox_node",
    "node_hash",
    "node_hashes",
    "node_key",
    "pattern_channel",
    "peer_key",
    "probe",
    "probe_tag",
    "reap_key",
    "reg_key",
    "retained_key",
    "text",
    "topic_tag",
    "watch_target",
]

CTL = "wamp:{ctl}:"
"""The prefix of every control-plane name: one slot on a Redis Cluster."""
CONTROL = b"wamp:{ctl}:ctl"
NODES = CTL + "nodes"
SEQ = CTL + "seq"
SEP = "\x1f"
NODE_HASHES = ("sessions", "subs", "regs", "testaments")
"""The kinds of ``wamp:{ctl}:node:{node}:{kind}`` state hashes."""


def node_key(node: str) -> str:
    """The heartbeat key of ``node`` (value: incarnation, with a TTL)."""
    return f"{CTL}node:{node}"


def node_hash(node: str, kind: str) -> str:
    """One of ``node``'s state hashes: sessions, subs, regs or testaments."""
    return f"{CTL}node:{node}:{kind}"


def node_hashes(node: str, kinds: Iterable[str] = NODE_HASHES) -> list[str]:
    """``node``'s state hashes of the given kinds (default: all of them)."""
    return [node_hash(node, kind) for kind in kinds]


def peer_key(node: str) -> str:
    """Where ``node`` takes direct links (a ``PeerRecord``; absent: it takes none)."""
    return f"{CTL}node:{node}:peer"


def reap_key(node: str) -> str:
    """The lock that elects the node reaping dead ``node``."""
    return f"{CTL}reap:{node}"


def reg_key(realm: str, match: str, uri: str) -> str:
    """The cluster-wide claim hash of one registration."""
    return f"{CTL}reg:{realm}:{match}:{uri}"


def retained_key(realm: str) -> str:
    """The retained events of ``realm`` (field: topic)."""
    return f"{CTL}retained:{realm}"


INBOX_PREFIX = f"{CTL}inbox:".encode()


def inbox(node: str) -> bytes:
    """The channel carrying call envelopes to ``node`` (control slot: ordered with ``ctl``)."""
    return INBOX_PREFIX + node.encode()


def inbox_node(channel: bytes) -> str:
    """The node an inbox channel (``inbox``) belongs to."""
    return channel[len(INBOX_PREFIX) :].decode()


def probe(node: str, tag: str = "ctl") -> bytes:
    """The channel ``node`` publishes its own probes to (one per pub/sub connection)."""
    return f"wamp:{{{tag}}}:probe:{node}".encode()


def probe_tag(slots: Container[int]) -> str:
    """A hash tag ``p<n>`` whose slot is one of ``slots`` (a probe channel on that shard)."""
    for n in range(1_000_000):
        tag = f"p{n}"
        if key_slot(tag.encode()) in slots:
            return tag
    raise ValueError("no probe tag lands in the given slots")


def _crc_tag(text: str) -> str:
    return f"{zlib.crc32(text.encode()):08x}"


@functools.lru_cache(maxsize=65536)
def topic_tag(realm: str, topic: str) -> str:
    """The hash tag of a topic: its event channel and history keys share its slot."""
    return _crc_tag(f"{realm}{SEP}{topic}")


@functools.lru_cache(maxsize=65536)
def event_channel(realm: str, topic: str) -> bytes:
    """The channel an event on ``topic`` is published to."""
    return f"wamp:{{{topic_tag(realm, topic)}}}:ev:{realm}:{topic}".encode()


@functools.lru_cache(maxsize=1024)
def pattern_channel(realm: str) -> bytes:
    """Redis Cluster only: the channel of ``realm``'s events that pattern subscriptions need."""
    return f"wamp:{{{_crc_tag(realm)}}}:pev:{realm}".encode()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def watch_target(realm: str, match: str, topic: str) -> tuple[bool, bytes]:
    """What a local subscription needs from Redis: (is a pattern, channel or pattern).

    Exact: the topic's channel. Prefix ``a.b``: ``wamp:{????????}:ev:{realm}:a.b*``.
    Wildcard ``a..c``: the pattern up to the first empty component (``…:a.*``); the
    receiving node filters with WAMP semantics. (A Redis Cluster has no sharded
    pattern subscription: there the realm's pattern channel stands in, see
    ``pattern_channel``.)
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
    return True, f"wamp:{{????????}}:ev:{_glob_escape(realm)}:{_glob_escape(fixed)}*".encode()


def text(value: Any) -> str:
    """A Redis reply value as text (bytes are UTF-8)."""
    return value.decode() if isinstance(value, bytes) else str(value)
