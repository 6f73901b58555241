"""Test support: real broker and redis-server processes on free loopback ports."""
