"""``wampc``: a command-line WAMP client.

::

    wampc sub com.example.tick --count 3          # one JSON line per event
    wampc sub com.example.tick --resume           # reconnect, fetch what was missed
    wampc pub com.example.tick 42 '"text"' --kw unit='"s"'
    wampc call com.example.add 2 3                # prints {"args": [5], "kwargs": {}}
    wampc register com.example.echo               # answers calls with their arguments

Every ARG is parsed as JSON; an ARG that is not valid JSON is taken as a string.
Connection options (``--url``, ``--realm``, ``--serializer``) and authentication
options (``--authid``, ``--authrole``, ``--ticket``, ``--secret``, ``--private-key``;
or the environment variables ``WAMPC_TICKET``, ``WAMPC_SECRET``,
``WAMPC_PRIVATE_KEY``) go before or after the command. ``sub`` and ``register``
report readiness on stderr ("subscribed to …", "registered …").

``sub --resume`` keeps reconnecting (``client_sdk.Client``) and after each re-join
prints first the events it missed, fetched from the router's event history
(their lines carry ``"replayed": true``), then the live ones, each once; stderr
says "resumed TOPIC: N replayed, complete" (or "with a gap") after each recovery
and prints one JSON line ``{"gap": reason, ...}`` for every gap it could not fill.

Exit status: 0 success, 1 the router or callee answered with an error, 2 usage
error, 3 cannot connect or join, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .auth import AnonymousAuth, Authenticator, CryptosignAuth, TicketAuth, WampCraAuth
from .client import Client, ClientSubscription
from .connection import connect
from .errors import ApplicationError, ClientError, JoinError, SessionClosed
from .session import Session
from .values import CallOptions, CallResult, Event, Gap, PublishOptions

__all__ = ["build_parser", "main", "parse_value"]

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
DEFAULT_REALM = "realm1"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130


def parse_value(text: str) -> Any:
    """Parse one command-line argument as JSON, falling back to the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_kw(items: Sequence[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--kw expects KEY=JSON, got {item!r}")
        kwargs[key] = parse_value(value)
    return kwargs


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"router URL (default {DEFAULT_URL})"
    )
    group.add_argument(
        "--realm", default=argparse.SUPPRESS, help=f"realm (default {DEFAULT_REALM})"
    )
    group.add_argument(
        "--serializer",
        choices=("json", "msgpack", "cbor"),
        default=argparse.SUPPRESS,
        help="default json",
    )
    group.add_argument("--authid", default=argparse.SUPPRESS)
    group.add_argument("--authrole", default=argparse.SUPPRESS)
    group.add_argument("--ticket", default=argparse.SUPPRESS, help="ticket auth (or WAMPC_TICKET)")
    group.add_argument(
        "--secret", default=argparse.SUPPRESS, help="wampcra secret (or WAMPC_SECRET)"
    )
    group.add_argument(
        "--private-key",
        default=argparse.SUPPRESS,
        help="cryptosign Ed25519 seed: 64 hex digits or @FILE (or WAMPC_PRIVATE_KEY)",
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log to stderr"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the ``wampc`` argument parser."""
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="wampc", description="A command-line WAMP client.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = commands.add_parser("sub", parents=[common], help="print events as JSON lines")
    sub.add_argument("topic")
    sub.add_argument("--match", choices=("exact", "prefix", "wildcard"), default="exact")
    sub.add_argument("--get-retained", action="store_true", help="receive the retained event first")
    sub.add_argument("--count", type=int, default=None, help="exit after N events")
    sub.add_argument(
        "--resume",
        action="store_true",
        help="reconnect when the connection drops and fetch the missed events (event history)",
    )

    pub = commands.add_parser("pub", parents=[common], help="publish an event")
    pub.add_argument("topic")
    pub.add_argument("args", nargs="*", metavar="ARG", help="positional payload (JSON)")
    pub.add_argument(
        "--kw", action="append", default=[], metavar="KEY=JSON", help="keyword payload"
    )
    pub.add_argument(
        "--acknowledge", action="store_true", help="wait for the router's acknowledgement"
    )
    pub.add_argument("--retain", action="store_true", help="ask the router to retain the event")
    pub.add_argument("--include-me", action="store_true", help="deliver to this session too")

    call = commands.add_parser(
        "call", parents=[common], help="call a procedure and print its result"
    )
    call.add_argument("procedure")
    call.add_argument("args", nargs="*", metavar="ARG", help="positional arguments (JSON)")
    call.add_argument(
        "--kw", action="append", default=[], metavar="KEY=JSON", help="keyword arguments"
    )
    call.add_argument("--timeout", type=float, default=None, help="router-side timeout in seconds")
    call.add_argument("--progress", action="store_true", help="print progressive results too")

    reg = commands.add_parser("register", parents=[common], help="register an echo procedure")
    reg.add_argument("procedure")
    reg.add_argument("--match", choices=("exact", "prefix", "wildcard"), default="exact")
    reg.add_argument(
        "--invoke", choices=("single", "roundrobin", "random", "first", "last"), default="single"
    )
    reg.add_argument("--count", type=int, default=None, help="exit after N invocations")
    return parser


def _auth(ns: argparse.Namespace) -> list[Authenticator]:
    authid = getattr(ns, "authid", None)
    authrole = getattr(ns, "authrole", None)
    ticket = getattr(ns, "ticket", None) or os.environ.get("WAMPC_TICKET")
    secret = getattr(ns, "secret", None) or os.environ.get("WAMPC_SECRET")
    private_key = getattr(ns, "private_key", None) or os.environ.get("WAMPC_PRIVATE_KEY")
    methods: list[Authenticator] = []
    if private_key:
        if private_key.startswith("@"):
            private_key = Path(private_key[1:]).read_text().strip()
        methods.append(CryptosignAuth(authid, private_key, authrole=authrole))
    if secret:
        if authid is None:
            raise argparse.ArgumentTypeError("--secret (wampcra) needs --authid")
        methods.append(WampCraAuth(authid, secret, authrole=authrole))
    if ticket:
        methods.append(TicketAuth(authid, ticket, authrole=authrole))
    if not methods and (authid or authrole):
        methods.append(AnonymousAuth(authid, authrole=authrole))
    return methods


def _result_json(result: CallResult) -> dict[str, Any]:
    out: dict[str, Any] = {"args": result.args, "kwargs": result.kwargs}
    if result.progress:
        out["progress"] = True
    return out


async def _until_done(session: Session, done: asyncio.Event) -> int:
    """Wait for ``done`` (EXIT_OK) or for the session to end first (EXIT_CONNECT)."""
    closed = asyncio.ensure_future(session.wait_closed())
    finished = asyncio.ensure_future(done.wait())
    await asyncio.wait({closed, finished}, return_when=asyncio.FIRST_COMPLETED)
    finished.cancel()
    closed.cancel()
    return EXIT_OK if done.is_set() else EXIT_CONNECT


def _event_printer(ns: argparse.Namespace, done: asyncio.Event) -> Callable[[Event], None]:
    """A handler printing one JSON line per event; sets ``done`` after ``--count`` events."""
    remaining = ns.count

    def on_event(event: Event) -> None:
        nonlocal remaining
        if done.is_set():
            return
        line: dict[str, Any] = {"topic": event.topic, "args": event.args, "kwargs": event.kwargs}
        if event.replayed:
            line["replayed"] = True
        _emit(line)
        if remaining is not None:
            remaining -= 1
            if remaining <= 0:
                done.set()

    return on_event


async def _sub(session: Session, ns: argparse.Namespace) -> int:
    done = asyncio.Event()
    if ns.count is not None and ns.count <= 0:
        return EXIT_OK
    on_event = _event_printer(ns, done)
    await session.subscribe(ns.topic, on_event, match=ns.match, get_retained=ns.get_retained)
    _note(f"subscribed to {ns.topic}")
    return await _until_done(session, done)


def _note_gap(gap: Gap) -> None:
    _note(
        json.dumps(
            {
                "gap": gap.reason,
                "topic": gap.topic,
                "after_publication": gap.after_publication,
                "replayed": gap.replayed,
            }
        )
    )


async def _report_recovery(sub: ClientSubscription) -> None:
    complete = await sub.recovered()
    state = "complete" if complete else "with a gap"
    _note(f"resumed {sub.topic}: {sub.replayed} replayed in all, {state}")


async def _sub_resume(ns: argparse.Namespace, auth: list[Authenticator]) -> int:
    """``sub --resume``: a reconnecting ``Client`` with a resuming subscription."""
    done = asyncio.Event()
    if ns.count is not None and ns.count <= 0:
        return EXIT_OK
    client = Client(
        getattr(ns, "url", DEFAULT_URL),
        getattr(ns, "realm", DEFAULT_REALM),
        serializer=getattr(ns, "serializer", "json"),
        auth=auth or None,
    )
    sub = await client.subscribe(
        ns.topic,
        _event_printer(ns, done),
        match=ns.match,
        get_retained=ns.get_retained,
        resume=True,
        on_gap=_note_gap,
    )
    reports: set[asyncio.Task[None]] = set()

    def on_join(session: Session) -> None:
        if client.joins > 1:
            task = asyncio.create_task(_report_recovery(sub))
            reports.add(task)
            task.add_done_callback(reports.discard)

    client.on_join(on_join)
    try:
        async with client:
            _note(f"subscribed to {ns.topic}")
            stopped = asyncio.ensure_future(client.wait_stopped())
            finished = asyncio.ensure_future(done.wait())
            await asyncio.wait({stopped, finished}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            finished.cancel()
    except JoinError as exc:
        _note(f"wampc: join refused: {exc}")
        return EXIT_CONNECT
    except (ClientError, TimeoutError) as exc:
        _note(f"wampc: {exc or 'no join in time'}")
        return EXIT_CONNECT
    return EXIT_OK if done.is_set() else EXIT_CONNECT


async def _pub(session: Session, ns: argparse.Namespace) -> int:
    options = PublishOptions(
        acknowledge=ns.acknowledge,
        retain=True if ns.retain else None,
        exclude_me=False if ns.include_me else None,
    )
    args = [parse_value(a) for a in ns.args]
    publication = await session.publish(ns.topic, *args, options=options, **_parse_kw(ns.kw))
    if publication is not None:
        _note(f"published {publication}")
    return EXIT_OK


async def _call(session: Session, ns: argparse.Namespace) -> int:
    args = [parse_value(a) for a in ns.args]
    kwargs = _parse_kw(ns.kw)
    options = CallOptions(timeout=ns.timeout)
    if ns.progress:
        async for result in session.call_progress(ns.procedure, *args, options=options, **kwargs):
            _emit(_result_json(result))
    else:
        _emit(_result_json(await session.call(ns.procedure, *args, options=options, **kwargs)))
    return EXIT_OK


async def _register(session: Session, ns: argparse.Namespace) -> int:
    remaining = ns.count
    done = asyncio.Event()

    def echo(*args: Any, details: Any = None, **kwargs: Any) -> CallResult:
        nonlocal remaining
        _emit(
            {"procedure": details.procedure or ns.procedure, "args": list(args), "kwargs": kwargs}
        )
        if remaining is not None:
            remaining -= 1
            if remaining <= 0:
                asyncio.get_running_loop().call_soon(done.set)
        return CallResult(list(args), kwargs)

    await session.register(
        ns.procedure, echo, match=ns.match, invoke=ns.invoke, details_arg="details"
    )
    _note(f"registered {ns.procedure}")
    return await _until_done(session, done)


_COMMANDS = {"sub": _sub, "pub": _pub, "call": _call, "register": _register}


async def run(ns: argparse.Namespace) -> int:
    """Connect, run the chosen command, leave; return the exit status."""
    try:
        auth = _auth(ns)
    except (argparse.ArgumentTypeError, OSError, ClientError) as exc:
        _note(f"wampc: {exc}")
        return EXIT_USAGE
    if ns.command == "sub" and ns.resume:
        return await _sub_resume(ns, auth)
    try:
        session = await connect(
            getattr(ns, "url", DEFAULT_URL),
            getattr(ns, "realm", DEFAULT_REALM),
            serializer=getattr(ns, "serializer", "json"),
            auth=auth or None,
        )
    except JoinError as exc:
        _note(f"wampc: join refused: {exc}")
        return EXIT_CONNECT
    except ClientError as exc:
        _note(f"wampc: {exc}")
        return EXIT_CONNECT
    try:
        return await _COMMANDS[ns.command](session, ns)
    except ApplicationError as exc:
        sys.stderr.write(
            json.dumps(
                {"error": exc.uri, "args": list(exc.args), "kwargs": exc.kwargs},
                default=_json_default,
            )
            + "\n"
        )
        return EXIT_ERROR
    except argparse.ArgumentTypeError as exc:
        _note(f"wampc: {exc}")
        return EXIT_USAGE
    except SessionClosed as exc:
        _note(f"wampc: {exc}")
        return EXIT_CONNECT
    finally:
        await session.leave()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wampc`` console script."""
    ns = build_parser().parse_args(argv)
    verbosity = getattr(ns, "verbose", 0)
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(run(ns))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
