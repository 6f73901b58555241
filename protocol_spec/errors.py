"""Error URIs, close reasons and the exception tree of the wire protocol.

Exception tree::

    WampError                   root of everything this package raises
    └── ProtocolError           the peer broke the protocol → ABORT protocol_violation
        └── DecodeError         bytes that are not a valid message for a serializer

Error URIs (``wamp.error.*``) travel in ERROR and ABORT messages; close reasons
(``wamp.close.*``) travel in GOODBYE; ``CloseCode`` names the WebSocket close codes
(RFC 6455 §7.4.1) a router uses. Use these constants, never string or number literals.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AUTHENTICATION_FAILED",
    "AUTHORIZATION_FAILED",
    "CANCELED",
    "CLOSE_CLOSE_REALM",
    "CLOSE_GOODBYE_AND_OUT",
    "CLOSE_KILLED",
    "CLOSE_NORMAL",
    "CLOSE_SYSTEM_SHUTDOWN",
    "FEATURE_NOT_SUPPORTED",
    "INVALID_ARGUMENT",
    "INVALID_URI",
    "LIMIT_EXCEEDED",
    "NETWORK_FAILURE",
    "NOT_AUTHORIZED",
    "NO_AUTH_METHOD",
    "NO_ELIGIBLE_CALLEE",
    "NO_SUCH_PRINCIPAL",
    "NO_SUCH_PROCEDURE",
    "NO_SUCH_REALM",
    "NO_SUCH_REGISTRATION",
    "NO_SUCH_ROLE",
    "NO_SUCH_SESSION",
    "NO_SUCH_SUBSCRIPTION",
    "PAYLOAD_SIZE_EXCEEDED",
    "PROCEDURE_ALREADY_EXISTS",
    "PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT",
    "PROTOCOL_VIOLATION",
    "RATE_LIMIT_EXCEEDED",
    "RUNTIME_ERROR",
    "SLOW_CONSUMER",
    "TIMEOUT",
    "UNAVAILABLE",
    "CloseCode",
    "DecodeError",
    "ProtocolError",
    "WampError",
]


class WampError(Exception):
    """Root of the exceptions raised by protocol_spec."""


class ProtocolError(WampError):
    """The peer sent something the protocol forbids.

    The message is a short human-readable reason; routers put it in the ABORT
    details as ``message`` and close the transport.
    """


class DecodeError(ProtocolError):
    """The bytes or text received cannot be decoded by the negotiated serializer."""


# --- error URIs (ERROR / ABORT) ---------------------------------------------------
INVALID_URI = "wamp.error.invalid_uri"
NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
PROCEDURE_ALREADY_EXISTS = "wamp.error.procedure_already_exists"
PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT = (
    "wamp.error.procedure_exists_with_different_invocation_policy"
)
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
INVALID_ARGUMENT = "wamp.error.invalid_argument"
CANCELED = "wamp.error.canceled"
TIMEOUT = "wamp.error.timeout"
PAYLOAD_SIZE_EXCEEDED = "wamp.error.payload_size_exceeded"
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
NOT_AUTHORIZED = "wamp.error.not_authorized"
AUTHORIZATION_FAILED = "wamp.error.authorization_failed"
AUTHENTICATION_FAILED = "wamp.error.authentication_failed"
NO_AUTH_METHOD = "wamp.error.no_auth_method"
NO_SUCH_REALM = "wamp.error.no_such_realm"
NO_SUCH_ROLE = "wamp.error.no_such_role"
NO_SUCH_PRINCIPAL = "wamp.error.no_such_principal"
NO_SUCH_SESSION = "wamp.error.no_such_session"
NO_ELIGIBLE_CALLEE = "wamp.error.no_eligible_callee"
FEATURE_NOT_SUPPORTED = "wamp.error.feature_not_supported"
UNAVAILABLE = "wamp.error.unavailable"
NETWORK_FAILURE = "wamp.error.network_failure"
RUNTIME_ERROR = "wamp.error.runtime_error"
SLOW_CONSUMER = "wamp.error.slow_consumer"
"""Not in the spec: the reason a router gives when it drops a peer that reads too slowly."""

LIMIT_EXCEEDED = "broker.error.limit_exceeded"
"""Not in the spec: ERROR URI when a session holds too many subscriptions, registrations
or pending calls."""
RATE_LIMIT_EXCEEDED = "broker.error.rate_limit_exceeded"
"""Not in the spec: ABORT reason when a session sends faster than its message rate allows."""

# --- close reasons (GOODBYE) ------------------------------------------------------
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
CLOSE_CLOSE_REALM = "wamp.close.close_realm"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_KILLED = "wamp.close.killed"
CLOSE_NORMAL = "wamp.close.normal"


# --- WebSocket close codes (RFC 6455 §7.4.1) ----------------------------------------------
class CloseCode(IntEnum):
    """The WebSocket close codes a router sends when it closes a transport."""

    NORMAL = 1000
    """GOODBYE exchanged, ABORT sent, or the peer went quiet after GOODBYE."""
    GOING_AWAY = 1001
    """The router is shutting down."""
    PROTOCOL_ERROR = 1002
    """The peer broke the WAMP protocol (after ABORT ``protocol_violation``)."""
    POLICY_VIOLATION = 1008
    """Rate limit, HELLO timeout or a slow consumer."""
    MESSAGE_TOO_BIG = 1009
    """A frame over ``max_message_size``."""
    INTERNAL_ERROR = 1011
    """A bug in the router while handling this connection, or a keepalive timeout."""
    TRY_AGAIN_LATER = 1013
    """The node has ``max_sessions`` connections."""
