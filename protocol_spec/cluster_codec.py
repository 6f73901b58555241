"""The machinery of the cluster wire: field checks and the map codec of ``cluster``.

Each field of an envelope or record dataclass names its wire key, its check (which
raises ``ClusterProtocolError``) and, when needed, its encoder in ``metadata`` (``wire``).
The encoder and decoder of each class are generated once from those fields, as
``dataclasses`` generates ``__init__``; a decoding failure is re-run field by field to
name the fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, ClassVar, Final, TypeVar

import msgpack

__all__ = [
    "VERSION",
    "ClusterProtocolError",
    "Envelope",
    "Record",
    "anything",
    "as_map",
    "boolean",
    "decode_envelope",
    "fail",
    "integer",
    "integers",
    "load",
    "load_many",
    "mapping",
    "mapping_or_empty",
    "nested",
    "opt_integer",
    "opt_list",
    "opt_mapping",
    "opt_text",
    "packer",
    "row_decoder",
    "row_packer",
    "text",
    "unpack",
    "wire",
    "wire_keys",
]

VERSION: Final = 1
"""The cluster protocol version every envelope carries as ``v``."""


class ClusterProtocolError(ValueError):
    """A cluster envelope or record that does not follow protocol_spec/cluster.md."""


Decode = Callable[[Any], Any]
Encode = Callable[[Any], Any]


# --- field checks ----------------------------------------------------------------------
def fail(what: str) -> ClusterProtocolError:
    return ClusterProtocolError(what)


def text(value: Any) -> str:
    if type(value) is not str:
        raise fail("must be a string")
    return value


def opt_text(value: Any) -> str | None:
    return None if value is None else text(value)


def integer(value: Any) -> int:
    if type(value) is not int:
        raise fail("must be an integer")
    return value


def opt_integer(value: Any) -> int | None:
    return None if value is None else integer(value)


def boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise fail("must be a boolean")
    return value


def mapping(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise fail("must be a map")
    return value


def mapping_or_empty(value: Any) -> dict[str, Any]:
    return {} if value is None else mapping(value)


def opt_mapping(value: Any) -> dict[str, Any] | None:
    return None if value is None else mapping(value)


def opt_list(value: Any) -> list[Any] | None:
    if value is not None and type(value) is not list:
        raise fail("must be a list or nil")
    return value


def anything(value: Any) -> Any:
    return value


def integers(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if type(value) is not list or not all(type(v) is int for v in value):
        raise fail("must be a list of integers")
    return tuple(value)


_INLINE: Final[dict[Decode, str]] = {
    text: "type({x}) is str",
    opt_text: "{x} is None or type({x}) is str",
    integer: "type({x}) is int",
    opt_integer: "{x} is None or type({x}) is int",
    boolean: "type({x}) is bool",
    mapping: "type({x}) is dict",
    opt_mapping: "{x} is None or type({x}) is dict",
    opt_list: "{x} is None or type({x}) is list",
}
"""The checks the generated decoders write inline (the same tests, without a call)."""


def _check_lines(x: str, decode: Decode, name: str) -> list[str]:
    """Generated lines checking (and converting) variable ``x`` as ``decode`` would.

    A failure raises ``ClusterProtocolError`` (``BAD``); ``_explain`` then names it.
    """
    if decode is anything:
        return []
    if decode is mapping_or_empty:
        return [f"if {x} is None: {x} = {{}}", f"elif type({x}) is not dict: raise BAD"]
    condition = _INLINE.get(decode)
    if condition is None:
        return [f"{x} = {name}({x})"]
    return [f"if not ({condition.format(x=x)}): raise BAD"]


def wire(key: str, decode: Decode, encode: Encode | None = None) -> dict[str, Any]:
    """Field metadata: carried under ``key``, checked by ``decode``, written by ``encode``."""
    return {"key": key, "decode": decode, "encode": encode}


_Spec = tuple[tuple[str, str, Decode, Encode | None, Any], ...]
_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    """(attribute, key, decode, encode, default) of each field of ``cls``, cached."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = tuple(
            (f.name, f.metadata["key"], f.metadata["decode"], f.metadata["encode"], f.default)
            for f in fields(cls)
        )
        _SPECS[cls] = spec
    return spec


def wire_keys(cls: type) -> tuple[str, ...]:
    """The wire keys of ``cls``'s fields in declaration order (``v`` and ``op`` excluded)."""
    return tuple(key for _name, key, _dec, _enc, _default in _spec(cls))


def unpack(data: bytes | str, what: str = "envelope") -> Any:
    """One msgpack value; ``ClusterProtocolError`` ("undecodable ``what``") when it is not."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for bad input
        raise ClusterProtocolError(f"undecodable {what}: {exc}") from None


def load(data: bytes | str) -> dict[Any, Any]:
    value = unpack(data)
    if type(value) is not dict:
        raise ClusterProtocolError("an envelope must be a map")
    return value


def load_many(data: bytes | str) -> list[dict[Any, Any]]:
    """The maps of one or more envelopes packed back to back (one inbox PUBLISH).

    The common single envelope is one ``unpackb``; a concatenation is read with an
    ``Unpacker``. Bytes that do not decode as whole maps raise ``ClusterProtocolError``.
    """
    try:
        return [load(data)]
    except ClusterProtocolError:
        if isinstance(data, str):
            raise
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        values: list[dict[Any, Any]] = list(unpacker)  # up to the last whole value
    except Exception as exc:  # msgpack raises several types for bad input
        raise ClusterProtocolError(f"undecodable envelope: {exc}") from None
    for value in values:
        if type(value) is not dict:
            raise ClusterProtocolError("an envelope must be a map")
    try:
        # b"" once every byte made a whole value; msgpack refuses (ValueError) while
        # the last value is incomplete
        rest = unpacker.read_bytes(1)
    except ValueError:
        rest = b"?"
    if not values or rest:
        raise ClusterProtocolError("undecodable envelope: truncated")
    return values


_PACKER = msgpack.Packer(use_bin_type=True)
"""One packer for every envelope: ``msgpack.packb`` would build a new one per call."""


def _dump(value: dict[str, Any]) -> bytes:
    data: bytes = _PACKER.pack(value)
    return data


_T = TypeVar("_T", bound="_Wire")


def packer(cls: type) -> Callable[..., bytes]:
    """A function packing ``cls``'s field values, given in declaration order, to bytes.

    The same bytes as ``cls(*values).pack()`` without building the instance: the hot
    path of the inbox envelopes, one per cross-node call and answer.
    """
    ns: dict[str, Any] = {"dump": _PACKER.pack}
    op = getattr(cls, "OP", None)
    items = [] if op is None else [f"'v': {VERSION!r}"] + ([f"'op': {op!r}"] if op else [])
    params: list[str] = []
    for i, (_name, key, _decode, encode, _default) in enumerate(_spec(cls)):
        params.append(f"a{i}")
        ns[f"e{i}"] = encode
        items.append(f"{key!r}: " + (f"a{i}" if encode is None else f"e{i}(a{i})"))
    source = f"def pack({', '.join(params)}):\n    return dump({{{', '.join(items)}}})\n"
    exec(source, ns)  # generated from our own field keys only
    pack: Callable[..., bytes] = ns["pack"]
    return pack


def row_packer(cls: type, code: int) -> Callable[..., bytes]:
    """A function packing ``cls``'s fields after the first (the sending node) as an array
    ``[code, field, ...]``: a direct link's compact envelope (cluster.md, "Direct links").
    """
    ns: dict[str, Any] = {"dump": _PACKER.pack}
    params: list[str] = []
    items = [repr(code)]
    for i, (_name, _key, _decode, encode, _default) in enumerate(_spec(cls)[1:]):
        params.append(f"a{i}")
        ns[f"e{i}"] = encode
        items.append(f"a{i}" if encode is None else f"e{i}(a{i})")
    source = f"def pack({', '.join(params)}):\n    return dump([{', '.join(items)}])\n"
    exec(source, ns)  # generated from our own field specs only
    pack: Callable[..., bytes] = ns["pack"]
    return pack


def row_decoder(cls: type[_T]) -> Callable[[str, list[Any]], _T]:
    """Builds ``cls`` from a sending node and a row of ``row_packer``; raises
    ``ClusterProtocolError`` when the row has the wrong length or a field the wrong type.
    """
    spec = _spec(cls)[1:]
    ns: dict[str, Any] = {"cls": cls, "BAD": ClusterProtocolError}
    lines = [f"if len(row) != {len(spec) + 1}: raise BAD"]
    for i, (_name, _key, check, _encode, _default) in enumerate(spec):
        ns[f"d{i}"] = check
        lines += [f"x{i} = row[{i + 1}]", *_check_lines(f"x{i}", check, f"d{i}")]
    args = ", ".join(["node", *(f"x{i}" for i in range(len(spec)))])
    body = "".join(f"    {line}\n" for line in lines)
    exec(f"def decode(node, row):\n{body}    return cls({args})\n", ns)  # our own specs only
    decode: Callable[[str, list[Any]], _T] = ns["decode"]
    return decode


_Codec = tuple[Callable[[Any], dict[str, Any]], Callable[[dict[Any, Any]], Any]]
_CODECS: dict[type, _Codec] = {}


def _codec(cls: type) -> _Codec:
    """(encode, decode) of ``cls``, generated once from its fields (as dataclasses does).

    ``encode`` builds the map (with ``v`` and ``op`` for envelopes); ``decode`` builds the
    instance from a map and raises ``KeyError`` or ``ClusterProtocolError`` when malformed.
    """
    found = _CODECS.get(cls)
    if found is not None:
        return found
    ns: dict[str, Any] = {"cls": cls}
    items: list[str] = []
    if hasattr(cls, "OP"):  # an envelope
        items.append(f"'v': {VERSION!r}")
        if cls.OP:
            items.append(f"'op': {cls.OP!r}")
    lines: list[str] = []
    for i, (name, key, decode, encode, default) in enumerate(_spec(cls)):
        ns[f"d{i}"], ns[f"e{i}"], ns[f"m{i}"] = decode, encode, default
        items.append(f"{key!r}: " + (f"self.{name}" if encode is None else f"e{i}(self.{name})"))
        check = _check_lines(f"x{i}", decode, f"d{i}")
        if default is MISSING:
            lines += [f"x{i} = env[{key!r}]", *check]
        else:
            lines += [f"if {key!r} in env:", f"    x{i} = env[{key!r}]"]
            lines += [f"    {line}" for line in check] + ["else:", f"    x{i} = m{i}"]
    args = ", ".join(f"x{i}" for i in range(len(_spec(cls))))
    body = "".join(f"    {line}\n" for line in lines)
    ns["BAD"] = ClusterProtocolError
    source = (
        f"def encode(self):\n    return {{{', '.join(items)}}}\n"
        f"def decode(env):\n{body}    return cls({args})\n"
    )
    exec(source, ns)  # generated from our own field names and keys only
    found = _CODECS[cls] = (ns["encode"], ns["decode"])
    return found


def decoder(cls: type[_T]) -> Callable[[dict[Any, Any]], _T]:
    """``cls``'s generated decoder: builds it from a map, raises ``KeyError`` or
    ``ClusterProtocolError`` when malformed (without naming the fault: ``_from_fields`` does).
    """
    decode: Callable[[dict[Any, Any]], _T] = _codec(cls)[1]
    return decode


class _Wire:
    """What envelopes and records share: the field-driven map codec."""

    __slots__ = ()

    def _fields_map(self) -> dict[str, Any]:
        return _codec(type(self))[0](self)

    @classmethod
    def _from_fields(cls: type[_T], env: dict[Any, Any]) -> _T:
        try:
            found: _T = _codec(cls)[1](env)
        except (KeyError, ClusterProtocolError):
            return cls._explain(env)  # the slow path names the fault
        return found

    @classmethod
    def _explain(cls: type[_T], env: dict[Any, Any]) -> _T:
        kwargs: dict[str, Any] = {}
        for name, key, decode, _encode, default in _spec(cls):
            if key in env:
                try:
                    kwargs[name] = decode(env[key])
                except ClusterProtocolError as exc:
                    raise ClusterProtocolError(f"{cls.__name__}.{key} {exc}") from None
            elif default is MISSING:
                raise ClusterProtocolError(f"{cls.__name__} without {key!r}")
        return cls(**kwargs)


class Record(_Wire):
    """A value stored in a per-node hash (cluster.md, "Keys"): a plain msgpack map."""

    __slots__ = ()

    def to_map(self) -> dict[str, Any]:
        """The record as a map (for nesting in an envelope)."""
        return self._fields_map()

    def pack(self) -> bytes:
        """The record as msgpack bytes."""
        return _dump(self.to_map())

    @classmethod
    def from_map(cls: type[_T], value: Any) -> _T:
        """Check and build the record from a decoded map."""
        if type(value) is not dict:
            raise ClusterProtocolError(f"{cls.__name__} must be a map")
        return cls._from_fields(value)

    @classmethod
    def unpack(cls: type[_T], data: bytes | str) -> _T:
        """Decode and check a record read from Redis."""
        return cls._from_fields(load(data))


def nested(cls: type[Record]) -> Decode:
    return cls.from_map


def as_map(value: Record) -> dict[str, Any]:
    return value.to_map()


class Envelope(_Wire):
    """A message between nodes: ``{v, op, n, …}`` packed with msgpack."""

    __slots__ = ()

    OP: ClassVar[str] = ""
    """The ``op`` value (empty for event envelopes, whose channel names them)."""

    def to_map(self) -> dict[str, Any]:
        """The envelope as a map, version and kind included."""
        return self._fields_map()

    def pack(self) -> bytes:
        """The envelope as msgpack bytes."""
        data: bytes = _PACKER.pack(_codec(type(self))[0](self))
        return data


def decode_envelope(env: dict[Any, Any], table: dict[str, type[_E]], channel: str) -> _E:
    version = env.get("v")
    if version != VERSION:
        raise ClusterProtocolError(f"unsupported cluster protocol version {version!r}")
    op = env.get("op")
    cls = table.get(op) if type(op) is str else None
    if cls is None:
        raise ClusterProtocolError(f"unknown {channel} envelope op {op!r}")
    return cls._from_fields(env)


_E = TypeVar("_E", bound=Envelope)
