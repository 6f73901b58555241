"""Benchmarks for the WAMP router: load generator, websockets floor, comparison runner.

Run from the repository root, e.g. ``python -m bench.loadgen rpc --url ws://127.0.0.1:8080/ws``.
"""
