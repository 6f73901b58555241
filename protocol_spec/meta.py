"""The WAMP meta API by name: meta-event topics and meta procedures (wamp.md, "Meta API").

Routers publish the ``ON_*`` topics themselves; the procedures are answered by the
router as internal callees. Use these constants, never string literals.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BROKER_NODE_LIST",
    "BROKER_ON_STATUS",
    "BROKER_PROCEDURES",
    "BROKER_REGISTRATION_PAGE",
    "BROKER_SESSION_PAGE",
    "BROKER_STATS_RATES",
    "BROKER_SUBSCRIPTION_PAGE",
    "PROCEDURES",
    "REGISTRATION_COUNT_CALLEES",
    "REGISTRATION_GET",
    "REGISTRATION_LIST",
    "REGISTRATION_LIST_CALLEES",
    "REGISTRATION_LOOKUP",
    "REGISTRATION_MATCH",
    "REGISTRATION_ON_CREATE",
    "REGISTRATION_ON_DELETE",
    "REGISTRATION_ON_REGISTER",
    "REGISTRATION_ON_UNREGISTER",
    "SESSION_ADD_TESTAMENT",
    "SESSION_COUNT",
    "SESSION_FLUSH_TESTAMENTS",
    "SESSION_GET",
    "SESSION_KILL",
    "SESSION_KILL_ALL",
    "SESSION_KILL_BY_AUTHID",
    "SESSION_KILL_BY_AUTHROLE",
    "SESSION_LIST",
    "SESSION_ON_JOIN",
    "SESSION_ON_LEAVE",
    "SUBSCRIPTION_COUNT_SUBSCRIBERS",
    "SUBSCRIPTION_GET",
    "SUBSCRIPTION_GET_EVENTS",
    "SUBSCRIPTION_LIST",
    "SUBSCRIPTION_LIST_SUBSCRIBERS",
    "SUBSCRIPTION_LOOKUP",
    "SUBSCRIPTION_MATCH",
    "SUBSCRIPTION_ON_CREATE",
    "SUBSCRIPTION_ON_DELETE",
    "SUBSCRIPTION_ON_HISTORY_GAP",
    "SUBSCRIPTION_ON_SUBSCRIBE",
    "SUBSCRIPTION_ON_UNSUBSCRIBE",
    "TOPICS",
]

# --- meta events (topics the router publishes) -----------------------------------------
SESSION_ON_JOIN: Final = "wamp.session.on_join"
"""Args: [session details] (as ``wamp.session.get`` answers)."""
SESSION_ON_LEAVE: Final = "wamp.session.on_leave"
"""Args: [session ID, authid, authrole]."""
SUBSCRIPTION_ON_CREATE: Final = "wamp.subscription.on_create"
"""Args: [session ID, subscription details]."""
SUBSCRIPTION_ON_SUBSCRIBE: Final = "wamp.subscription.on_subscribe"
"""Args: [session ID, subscription ID]."""
SUBSCRIPTION_ON_UNSUBSCRIBE: Final = "wamp.subscription.on_unsubscribe"
"""Args: [session ID, subscription ID]."""
SUBSCRIPTION_ON_DELETE: Final = "wamp.subscription.on_delete"
"""Args: [session ID, subscription ID]."""
SUBSCRIPTION_ON_HISTORY_GAP: Final = "wamp.subscription.on_history_gap"
"""Ours (Redis backend): Args [subscription ID], kwargs {topic, reason, missed}."""
REGISTRATION_ON_CREATE: Final = "wamp.registration.on_create"
"""Args: [session ID, registration details]."""
REGISTRATION_ON_REGISTER: Final = "wamp.registration.on_register"
"""Args: [session ID, registration ID]."""
REGISTRATION_ON_UNREGISTER: Final = "wamp.registration.on_unregister"
"""Args: [session ID, registration ID]."""
REGISTRATION_ON_DELETE: Final = "wamp.registration.on_delete"
"""Args: [session ID, registration ID]."""

# --- router-specific (this project's console; wamp.md "Router-specific meta API") -------
BROKER_ON_STATUS: Final = "wamp.broker.on_status"
"""Args: [node status] (as ``wamp.broker.node_list`` describes its own node); each node
publishes it once a second in the console's realm."""
BROKER_NODE_LIST: Final = "wamp.broker.node_list"
BROKER_SESSION_PAGE: Final = "wamp.broker.session_page"
BROKER_SUBSCRIPTION_PAGE: Final = "wamp.broker.subscription_page"
BROKER_REGISTRATION_PAGE: Final = "wamp.broker.registration_page"
BROKER_STATS_RATES: Final = "wamp.broker.stats_rates"


TOPICS: Final = frozenset(
    {
        SESSION_ON_JOIN,
        SESSION_ON_LEAVE,
        SUBSCRIPTION_ON_CREATE,
        SUBSCRIPTION_ON_SUBSCRIBE,
        SUBSCRIPTION_ON_UNSUBSCRIBE,
        SUBSCRIPTION_ON_DELETE,
        SUBSCRIPTION_ON_HISTORY_GAP,
        REGISTRATION_ON_CREATE,
        REGISTRATION_ON_REGISTER,
        REGISTRATION_ON_UNREGISTER,
        REGISTRATION_ON_DELETE,
        BROKER_ON_STATUS,
    }
)
"""Every meta-event topic."""

BROKER_PROCEDURES: Final = frozenset(
    {
        BROKER_NODE_LIST,
        BROKER_SESSION_PAGE,
        BROKER_SUBSCRIPTION_PAGE,
        BROKER_REGISTRATION_PAGE,
        BROKER_STATS_RATES,
    }
)
"""Router-specific procedures: every realm has them; the server answers them (console)."""

# --- meta procedures (answered by the router) ------------------------------------------
SESSION_COUNT: Final = "wamp.session.count"
SESSION_LIST: Final = "wamp.session.list"
SESSION_GET: Final = "wamp.session.get"
SESSION_KILL: Final = "wamp.session.kill"
SESSION_KILL_BY_AUTHID: Final = "wamp.session.kill_by_authid"
SESSION_KILL_BY_AUTHROLE: Final = "wamp.session.kill_by_authrole"
SESSION_KILL_ALL: Final = "wamp.session.kill_all"
SESSION_ADD_TESTAMENT: Final = "wamp.session.add_testament"
SESSION_FLUSH_TESTAMENTS: Final = "wamp.session.flush_testaments"
SUBSCRIPTION_LIST: Final = "wamp.subscription.list"
SUBSCRIPTION_LOOKUP: Final = "wamp.subscription.lookup"
SUBSCRIPTION_MATCH: Final = "wamp.subscription.match"
SUBSCRIPTION_GET: Final = "wamp.subscription.get"
SUBSCRIPTION_LIST_SUBSCRIBERS: Final = "wamp.subscription.list_subscribers"
SUBSCRIPTION_COUNT_SUBSCRIBERS: Final = "wamp.subscription.count_subscribers"
SUBSCRIPTION_GET_EVENTS: Final = "wamp.subscription.get_events"
"""Args: [subscription ID]; kwargs filter and order (wamp.md, "Event history")."""
REGISTRATION_LIST: Final = "wamp.registration.list"
REGISTRATION_LOOKUP: Final = "wamp.registration.lookup"
REGISTRATION_MATCH: Final = "wamp.registration.match"
REGISTRATION_GET: Final = "wamp.registration.get"
REGISTRATION_LIST_CALLEES: Final = "wamp.registration.list_callees"
REGISTRATION_COUNT_CALLEES: Final = "wamp.registration.count_callees"

PROCEDURES: Final = frozenset(
    {
        SESSION_COUNT,
        SESSION_LIST,
        SESSION_GET,
        SESSION_KILL,
        SESSION_KILL_BY_AUTHID,
        SESSION_KILL_BY_AUTHROLE,
        SESSION_KILL_ALL,
        SESSION_ADD_TESTAMENT,
        SESSION_FLUSH_TESTAMENTS,
        SUBSCRIPTION_LIST,
        SUBSCRIPTION_LOOKUP,
        SUBSCRIPTION_MATCH,
        SUBSCRIPTION_GET,
        SUBSCRIPTION_LIST_SUBSCRIBERS,
        SUBSCRIPTION_COUNT_SUBSCRIBERS,
        SUBSCRIPTION_GET_EVENTS,
        REGISTRATION_LIST,
        REGISTRATION_LOOKUP,
        REGISTRATION_MATCH,
        REGISTRATION_GET,
        REGISTRATION_LIST_CALLEES,
        REGISTRATION_COUNT_CALLEES,
        *BROKER_PROCEDURES,
    }
)
"""Every meta procedure this project's router answers."""
