"""The one-port listener: what the first octet selects, the switches that turn transports
off, RawSocket and long-poll through TLS and on uvloop, and the [[listener]] settings."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest

from broker.config import ConfigError, settings_from_toml
from tests.support.certs import self_signed
from tests.support.processes import start_broker
from tests.support.rawsocket import rawsocket_join


def test_rawsocket_and_longpoll_through_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "broker.toml"
    config.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    proc = start_broker("--config", str(config))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert rawsocket_join(tls)[0] == 2  # rss://
        conn = http.client.HTTPSConnection("127.0.0.1", proc.port, timeout=10, context=context)
        conn.request("POST", "/lp/open", body=b'{"protocols": ["wamp.2.json"]}')
        response = conn.getresponse()
        assert response.status == 200 and "transport" in json.loads(response.read())
        conn.close()
    finally:
        proc.stop()


def test_rawsocket_on_uvloop() -> None:
    proc = start_broker("--uvloop")
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            assert rawsocket_join(sock)[0] == 2
    finally:
        proc.stop()


def test_transports_can_be_switched_off_on_the_main_port(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[server]\nrawsocket = false\nlongpoll_path = ""\n')
    proc = start_broker("--config", str(config))
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
            sock.sendall(b"\x7f\xf1\x00\x00")  # not HTTP either: 400 and close
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 ")
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        conn.request("POST", "/lp/open", body=b'{"protocols": ["wamp.2.json"]}')
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        proc.stop()


def test_http_keeps_the_connection_alive_between_requests() -> None:
    proc = start_broker()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        for _ in range(3):
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n")
        conn.close()
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[listener]]\nhost = "127.0.0.1"\n', "give a port (TCP) or a path"),
        ('[[listener]]\nport = 9000\npath = "/tmp/x.sock"\n', "give a port (TCP) or a path"),
        ('[[listener]]\ntype = "websocket"\nport = 9000\n', 'only "rawsocket"'),
        ('[[listener]]\npath = "/tmp/x.sock"\nmode = 4096\n', "mode"),
        ("[[listener]]\nport = 9000\nbacklog = 5\n", "unknown key(s) backlog"),
        ('[server]\nlongpoll_path = "lp"\n', "longpoll_path"),
        ('[server]\nlongpoll_path = "/ws"\n', "longpoll_path"),
        ("[server]\nrawsocket = 1\n", "rawsocket"),
    ],
)
def test_bad_listener_settings_are_config_errors(toml: str, message: str) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_toml(tomllib.loads(toml), {})


def test_listener_settings_are_read() -> None:
    import tomllib

    settings = settings_from_toml(
        tomllib.loads(
            '[server]\nlongpoll_path = "/poll/"\n\n'
            "[limits]\nlongpoll_receive_timeout = 5\nlongpoll_session_timeout = 60\n\n"
            '[[listener]]\nport = 9000\n\n[[listener]]\npath = "/run/w.sock"\nmode = 0o600\n'
        ),
        {},
    )
    t = settings.transport
    assert t.longpoll_path == "/poll" and t.longpoll_receive_timeout == 5
    assert t.longpoll_session_timeout == 60
    assert [(x.port, x.path, x.mode) for x in t.listeners] == [
        (9000, None, 0o660),
        (None, "/run/w.sock", 0o600),
    ]
    assert t.listeners[1].address == "rs://unix:/run/w.sock"
