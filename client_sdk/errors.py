"""The exceptions the client SDK raises.

Exception tree::

    ClientError                 root of everything client_sdk raises
    ├── ApplicationError        an ERROR reply (uri, args, kwargs), or raised by a handler
    ├── JoinError               the router refused the session (ABORT before WELCOME)
    ├── SessionClosed           the session ended; pending requests fail with it
    │   └── TransportLost       … because the connection dropped without GOODBYE
    ├── NotConnected            a Client has no joined session (fail-fast mode)
    └── ProtocolViolation       the router broke the protocol; the SDK aborted

Error URIs are the constants of ``protocol_spec.errors`` (``RUNTIME_ERROR``,
``CANCELED``, ``TIMEOUT``, ``NO_SUCH_PROCEDURE`` …); compare ``error.uri`` with them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApplicationError",
    "ClientError",
    "JoinError",
    "NotConnected",
    "ProtocolViolation",
    "SessionClosed",
    "TransportLost",
]


class ClientError(Exception):
    """Root of the exceptions raised by client_sdk."""


class ApplicationError(ClientError):
    """A WAMP error: an error URI with positional and keyword payload.

    Raised by ``call`` when the router or callee answers with ERROR, and raised by
    procedure handlers to answer a call with that exact error. ``args`` is the
    positional payload (a tuple, as for every exception) and ``kwargs`` the keyword
    payload; both travel unchanged over the wire.
    """

    def __init__(self, uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args)
        self.uri = uri
        self.kwargs: dict[str, Any] = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_application_error, (type(self), self.uri, self.args, self.kwargs))

    def __str__(self) -> str:
        if self.args and isinstance(self.args[0], str):
            return f"{self.uri}: {self.args[0]}"
        if self.args or self.kwargs:
            return f"{self.uri}: args={list(self.args)!r} kwargs={self.kwargs!r}"
        return self.uri

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.uri!r}, args={list(self.args)!r}, kwargs={self.kwargs!r})"
        )


def _rebuild_application_error(
    cls: type[ApplicationError], uri: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> ApplicationError:
    return cls(uri, *args, **kwargs)


class JoinError(ClientError):
    """The router answered HELLO (or AUTHENTICATE) with ABORT.

    ``reason`` is the ABORT reason URI (for example ``wamp.error.no_such_realm`` or
    ``wamp.error.authentication_failed``), ``message`` the router's explanation if any.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


class SessionClosed(ClientError):
    """The session is closed: the operation cannot be started or cannot complete.

    ``reason`` is the GOODBYE/ABORT reason URI or a ``wamp.error.*`` URI describing
    why the SDK closed the session; ``message`` a human-readable explanation.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(
            f"session closed ({reason}): {message}" if message else f"session closed ({reason})"
        )
        self.reason = reason
        self.message = message


class TransportLost(SessionClosed):
    """The connection dropped without a closing handshake; the outcome of pending calls is unknown."""


class NotConnected(ClientError):
    """A ``Client`` has no joined session right now (it may be reconnecting)."""


class ProtocolViolation(ClientError):
    """The router sent something WAMP forbids; the SDK answered with ABORT and closed."""
