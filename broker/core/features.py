"""Features the router announces in WELCOME.Details.roles.

Announce a feature only once it works end to end: protocol_spec/README.md's feature
table is checked against these dicts by a test.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BROKER_FEATURES", "DEALER_FEATURES", "welcome_roles"]

BROKER_FEATURES: Final[dict[str, bool]] = {
    "publisher_exclusion": True,
    "subscriber_blackwhite_listing": True,
    "publisher_identification": True,
    "pattern_based_subscription": True,
    "event_retention": True,
    "event_history": True,
    "subscription_meta_api": True,
    "session_meta_api": True,
    "testament_meta_api": True,
}

DEALER_FEATURES: Final[dict[str, bool]] = {
    "caller_identification": True,
    "call_canceling": True,
    "call_timeout": True,
    "progressive_call_results": True,
    "pattern_based_registration": True,
    "shared_registration": True,
    "registration_meta_api": True,
    "session_meta_api": True,
    "testament_meta_api": True,
}


def welcome_roles() -> dict[str, dict[str, dict[str, bool]]]:
    """Return a fresh ``roles`` dict for WELCOME.Details."""
    return {
        "broker": {"features": dict(BROKER_FEATURES)},
        "dealer": {"features": dict(DEALER_FEATURES)},
    }
