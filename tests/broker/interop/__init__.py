"""Interoperability tests: standard WAMP clients (Autobahn|Python, raw JSON) against a real broker."""
