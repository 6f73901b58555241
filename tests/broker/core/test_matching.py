"""UriMap: one structure for exact, prefix and wildcard matching in both roles."""

from __future__ import annotations

from broker.core.matching import UriMap


def build() -> UriMap[str]:
    uris: UriMap[str] = UriMap()
    uris.set("com.app.user.get", "exact", "exact")
    uris.set("com.app.", "prefix", "short-prefix")
    uris.set("com.app.user", "prefix", "long-prefix")
    uris.set("com..user.get", "wildcard", "wild-late")
    uris.set("com.app..get", "wildcard", "wild-early")
    return uris


def test_best_prefers_exact_then_longest_prefix_then_wildcard() -> None:
    uris = build()
    assert uris.best("com.app.user.get") == "exact"
    assert uris.best("com.app.user.set") == "long-prefix"
    assert uris.best("com.app.order") == "short-prefix"
    uris.remove("com.app.", "prefix")
    uris.remove("com.app.user", "prefix")
    assert uris.best("com.app.item.get") == "wild-early"
    assert uris.best("com.web.user.get") == "wild-late"
    assert uris.best("org.web.user.get") is None


def test_matching_returns_every_match() -> None:
    uris = build()
    assert sorted(uris.matching("com.app.user.get")) == sorted(
        ["exact", "short-prefix", "long-prefix", "wild-late", "wild-early"]
    )
    assert uris.matching("com.app.user.get.more") == ["short-prefix", "long-prefix"]
    assert uris.matching("net.x") == []


def test_wildcard_needs_the_same_number_of_components() -> None:
    uris: UriMap[str] = UriMap()
    uris.set("a..c", "wildcard", "w")
    assert uris.matching("a.b.c") == ["w"]
    assert uris.matching("a.b.c.d") == []
    assert uris.matching("a.c") == []


def test_get_remove_and_len() -> None:
    uris = build()
    assert len(uris) == 5
    assert uris.get("com..user.get", "wildcard") == "wild-late"
    assert uris.get("com.app.", "exact") is None
    uris.remove("com..user.get", "wildcard")
    uris.remove("com.app..get", "wildcard")
    uris.remove("never", "exact")
    assert len(uris) == 3
    assert sorted(uris.values()) == ["exact", "long-prefix", "short-prefix"]


def test_pattern_matches_agrees_with_the_map() -> None:
    from broker.core.matching import pattern_matches

    uris = build()
    entries = [
        ("exact", "com.app.user.get", "exact"),
        ("prefix", "com.app.", "short-prefix"),
        ("prefix", "com.app.user", "long-prefix"),
        ("wildcard", "com..user.get", "wild-late"),
        ("wildcard", "com.app..get", "wild-early"),
    ]
    for uri in ["com.app.user.get", "com.app.user.set", "com.web.user.get", "org.x", "com.app"]:
        expected = sorted(uris.matching(uri))
        assert sorted(v for m, p, v in entries if pattern_matches(m, p, uri)) == expected
