"""The WAMP meta API: wamp.session.*, wamp.subscription.*, wamp.registration.* procedures.

Each procedure is a plain function ``(realm, caller, args, kwargs) → (args, kwargs)``
installed into the realm's dealer as an internal procedure. Meta *events*
(on_join, on_create, …) are published by the roles themselves.

In a cluster the answers cover every node: local state plus ``realm.remote`` (what the
backend knows of other nodes); registrations need nothing extra because remote
callees live in the local dealer as stand-ins. Kills of sessions on other nodes go
through ``realm.cluster.kill``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol_spec import errors
from protocol_spec import meta as names
from protocol_spec.uri import MATCH_EXACT, MATCH_POLICIES, is_reserved, is_valid_uri

from .history_meta import GET_EVENTS, get_events
from .pubsub import DeliveryFilter
from .registration import InternalError
from .session import Testament

if TYPE_CHECKING:
    from .realm import Realm
    from .session import Session

__all__ = ["KillHook", "install_meta_api"]

Reply = tuple[list[Any] | None, dict[str, Any] | None]
MetaProcedure = Callable[["Realm", "Session", list[Any], dict[str, Any]], Reply]
KillHook = Callable[["Session", str, str | None], None]
"""How the meta API asks the router to end a session: (session, reason, message)."""

_PROCEDURES: dict[str, MetaProcedure] = {}


def _procedure(uri: str) -> Callable[[MetaProcedure], MetaProcedure]:
    def register(func: MetaProcedure) -> MetaProcedure:
        _PROCEDURES[uri] = func
        return func

    return register


def install_meta_api(realm: Realm, kill: KillHook) -> None:
    """Install every meta procedure into ``realm.dealer.internal``."""
    for uri, func in _PROCEDURES.items():
        realm.dealer.internal[uri] = _bind(realm, func)
    realm.dealer.internal[GET_EVENTS] = lambda s, a, k: get_events(realm, s, a, k)
    realm.dealer.internal[names.SESSION_KILL] = _bind_kill(realm, kill, _kill_one)
    realm.dealer.internal[names.SESSION_KILL_BY_AUTHID] = _bind_kill(realm, kill, _kill_authid)
    realm.dealer.internal[names.SESSION_KILL_BY_AUTHROLE] = _bind_kill(realm, kill, _kill_authrole)
    realm.dealer.internal[names.SESSION_KILL_ALL] = _bind_kill(realm, kill, _kill_all)
    for uri in names.BROKER_PROCEDURES:  # answered by the server (broker.console.procedures)
        realm.dealer.internal[uri] = _not_running


def _not_running(caller: Session, args: list[Any], kwargs: dict[str, Any]) -> Reply:
    """A ``wamp.broker.*`` procedure of a router that runs without a server (tests)."""
    raise InternalError(errors.NO_SUCH_PROCEDURE, "this router runs without node status")


def _bind(
    realm: Realm, func: MetaProcedure
) -> Callable[[Session, list[Any], dict[str, Any]], Reply]:
    return lambda session, args, kwargs: func(realm, session, args, kwargs)


def _arg(args: list[Any], index: int, kind: type, name: str) -> Any:
    if len(args) <= index or not isinstance(args[index], kind) or isinstance(args[index], bool):
        raise InternalError(errors.INVALID_ARGUMENT, f"argument {name} ({kind.__name__}) missing")
    return args[index]


def _authroles_filter(args: list[Any]) -> set[str] | None:
    if not args or args[0] is None:
        return None
    roles = args[0]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InternalError(errors.INVALID_ARGUMENT, "filter_authroles must be a list of strings")
    return set(roles)


# --- sessions ---------------------------------------------------------------------------
@_procedure(names.SESSION_COUNT)
def _session_count(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    roles = _authroles_filter(args)
    count = sum(1 for s in realm.sessions.values() if roles is None or s.authrole in roles)
    count += sum(
        1 for i in realm.remote.sessions.values() if roles is None or i["authrole"] in roles
    )
    return [count], None


@_procedure(names.SESSION_LIST)
def _session_list(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    roles = _authroles_filter(args)
    ids = [s.id for s in realm.sessions.values() if roles is None or s.authrole in roles]
    ids += [
        sid
        for sid, info in realm.remote.sessions.items()
        if roles is None or info["authrole"] in roles
    ]
    return [ids], None


@_procedure(names.SESSION_GET)
def _session_get(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    session_id = _arg(args, 0, int, "session")
    session = realm.sessions.get(session_id)
    if session is None:
        remote = realm.remote.sessions.get(session_id)
        if remote is None:
            raise InternalError(errors.NO_SUCH_SESSION, "no session with this ID")
        return [remote], None
    return [session.info()], None


Selector = Callable[["Realm", "Session", list[Any]], tuple[list["Session"], str, Any, int]]
"""Pick a kill's local victims; also (selector, value, count) for other nodes."""


def _bind_kill(
    realm: Realm,
    kill: KillHook,
    select: Selector,
) -> Callable[[Session, list[Any], dict[str, Any]], Reply]:
    def run(caller: Session, args: list[Any], kwargs: dict[str, Any]) -> Reply:
        reason = kwargs.get("reason", errors.CLOSE_KILLED)
        message = kwargs.get("message")
        if not isinstance(reason, str) or not is_valid_uri(reason):
            raise InternalError(errors.INVALID_URI, "reason must be a URI")
        if message is not None and not isinstance(message, str):
            raise InternalError(errors.INVALID_ARGUMENT, "message must be a string")
        victims, selector, value, remote = select(realm, caller, args)
        for victim in victims:
            kill(victim, reason, message)
        if remote:
            realm.cluster.kill(realm.name, selector, value, caller.id, reason, message)
        if select is _kill_one:
            return None, None
        return [len(victims) + remote], None

    return run


def _kill_one(
    realm: Realm, caller: Session, args: list[Any]
) -> tuple[list[Session], str, Any, int]:
    target = _arg(args, 0, int, "session")
    if target == caller.id:
        raise InternalError(errors.NO_SUCH_SESSION, "a session cannot kill itself")
    session = realm.sessions.get(target)
    if session is None:
        if target in realm.remote.sessions:
            return [], "session", target, 1
        raise InternalError(errors.NO_SUCH_SESSION, "no session with this ID")
    return [session], "session", target, 0


def _remote_count(realm: Realm, key: str, value: Any) -> int:
    return sum(1 for info in realm.remote.sessions.values() if info.get(key) == value)


def _kill_authid(
    realm: Realm, caller: Session, args: list[Any]
) -> tuple[list[Session], str, Any, int]:
    authid = _arg(args, 0, str, "authid")
    local = [s for s in realm.sessions.values() if s.authid == authid and s is not caller]
    return local, "authid", authid, _remote_count(realm, "authid", authid)


def _kill_authrole(
    realm: Realm, caller: Session, args: list[Any]
) -> tuple[list[Session], str, Any, int]:
    authrole = _arg(args, 0, str, "authrole")
    local = [s for s in realm.sessions.values() if s.authrole == authrole and s is not caller]
    return local, "authrole", authrole, _remote_count(realm, "authrole", authrole)


def _kill_all(
    realm: Realm, caller: Session, args: list[Any]
) -> tuple[list[Session], str, Any, int]:
    local = [s for s in realm.sessions.values() if s is not caller]
    return local, "all", None, len(realm.remote.sessions)


# --- testaments ---------------------------------------------------------------------------
@_procedure(names.SESSION_ADD_TESTAMENT)
def _add_testament(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    topic = _arg(args, 0, str, "topic")
    if not is_valid_uri(topic) or is_reserved(topic):
        raise InternalError(errors.INVALID_URI, "invalid testament topic")
    t_args = args[1] if len(args) > 1 else None
    t_kwargs = args[2] if len(args) > 2 else None
    if t_args is not None and not isinstance(t_args, list):
        raise InternalError(errors.INVALID_ARGUMENT, "testament args must be a list")
    if t_kwargs is not None and not isinstance(t_kwargs, dict):
        raise InternalError(errors.INVALID_ARGUMENT, "testament kwargs must be a dict")
    options = kw.get("publish_options") or {}
    scope = kw.get("scope", "destroyed")
    if scope not in ("destroyed", "detached") or not isinstance(options, dict):
        raise InternalError(errors.INVALID_ARGUMENT, "scope must be destroyed or detached")
    try:
        DeliveryFilter.from_options(options)
    except ValueError as exc:
        raise InternalError(errors.INVALID_ARGUMENT, f"publish_options: {exc}") from None
    caller.testaments.append(Testament(topic, t_args, t_kwargs, options, scope))
    if realm.cluster.distributed:
        realm.cluster.testaments_changed(realm.name, caller)
    return None, None


@_procedure(names.SESSION_FLUSH_TESTAMENTS)
def _flush_testaments(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    scope = kw.get("scope", "destroyed")
    kept = [t for t in caller.testaments if t.scope != scope]
    flushed = len(caller.testaments) - len(kept)
    caller.testaments = kept
    if flushed and realm.cluster.distributed:
        realm.cluster.testaments_changed(realm.name, caller)
    return [flushed], None


# --- subscriptions ------------------------------------------------------------------------
def _match_option(kw: dict[str, Any], args: list[Any], index: int) -> str:
    options = args[index] if len(args) > index and isinstance(args[index], dict) else kw
    match = options.get("match", MATCH_EXACT)
    if match not in MATCH_POLICIES:
        raise InternalError(errors.INVALID_ARGUMENT, f"invalid match policy {match!r}")
    return str(match)


@_procedure(names.SUBSCRIPTION_LIST)
def _sub_list(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    out: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
    for sub in realm.broker.subscriptions():
        out[sub.match].append(sub.id)
    for remote in realm.remote.subscriptions.values():
        if realm.broker.subscription(remote.id) is None:
            out[remote.match].append(remote.id)
    return [out], None


@_procedure(names.SUBSCRIPTION_LOOKUP)
def _sub_lookup(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    topic = _arg(args, 0, str, "topic")
    match = _match_option(kw, args, 1)
    sub = realm.broker.lookup(topic, match) or realm.remote.lookup(topic, match)
    return [sub.id if sub is not None else None], None


@_procedure(names.SUBSCRIPTION_MATCH)
def _sub_match(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    topic = _arg(args, 0, str, "topic")
    ids = [sub.id for sub in realm.broker.matching(topic)]
    ids += [sub.id for sub in realm.remote.matching(topic) if sub.id not in ids]
    return [ids or None], None


def _subscription(realm: Realm, args: list[Any]) -> tuple[dict[str, Any], list[int]]:
    """A subscription's description and its subscribers on every node."""
    sub_id = _arg(args, 0, int, "subscription")
    sub = realm.broker.subscription(sub_id)
    remote = realm.remote.subscriptions.get(sub_id)
    if sub is None and remote is None:
        raise InternalError(errors.NO_SUCH_SUBSCRIPTION, "no subscription with this ID")
    subscribers = list(sub.subscribers) if sub is not None else []
    if remote is not None:
        subscribers += remote.subscribers()
    info = sub.info() if sub is not None else remote.info()  # type: ignore[union-attr]
    return info, subscribers


@_procedure(names.SUBSCRIPTION_GET)
def _sub_get(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [_subscription(realm, args)[0]], None


@_procedure(names.SUBSCRIPTION_LIST_SUBSCRIBERS)
def _sub_subscribers(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [_subscription(realm, args)[1]], None


@_procedure(names.SUBSCRIPTION_COUNT_SUBSCRIBERS)
def _sub_count(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [len(_subscription(realm, args)[1])], None


# --- registrations ------------------------------------------------------------------------
@_procedure(names.REGISTRATION_LIST)
def _reg_list(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    out: dict[str, list[int]] = {"exact": [], "prefix": [], "wildcard": []}
    for reg in realm.dealer.registrations():
        out[reg.match].append(reg.id)
    return [out], None


@_procedure(names.REGISTRATION_LOOKUP)
def _reg_lookup(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    procedure = _arg(args, 0, str, "procedure")
    reg = realm.dealer.lookup(procedure, _match_option(kw, args, 1))
    return [reg.id if reg is not None else None], None


@_procedure(names.REGISTRATION_MATCH)
def _reg_match(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    procedure = _arg(args, 0, str, "procedure")
    reg = realm.dealer.best(procedure)
    return [reg.id if reg is not None else None], None


def _registration(realm: Realm, args: list[Any]) -> Any:
    reg = realm.dealer.registration(_arg(args, 0, int, "registration"))
    if reg is None:
        raise InternalError(errors.NO_SUCH_REGISTRATION, "no registration with this ID")
    return reg


@_procedure(names.REGISTRATION_GET)
def _reg_get(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [_registration(realm, args).info()], None


@_procedure(names.REGISTRATION_LIST_CALLEES)
def _reg_callees(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [[s.id for s in _registration(realm, args).callees]], None


@_procedure(names.REGISTRATION_COUNT_CALLEES)
def _reg_count(realm: Realm, caller: Session, args: list[Any], kw: dict[str, Any]) -> Reply:
    return [len(_registration(realm, args).callees)], None
