"""SIGHUP reloads the TLS certificate files without a restart (real broker processes).

A renewed certificate written over the same files is served to connections made after the
signal; open connections keep working; files that do not load are refused and the
broker keeps serving the certificate it had. ``broker --workers 2`` passes the signal on
to every worker. (The direct links' reload is tested in cluster/test_peers.py.)
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.certs import self_signed
from tests.support.processes import BrokerProcess, start_broker, start_redis
from tests.support.rawsocket import exchange, rawsocket_join


def served(port: int) -> bytes:
    """The certificate (DER) a new TLS connection to ``port`` is shown."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only looking at what is served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def _config(tmp_path: Path, cert: Path, key: Path) -> Path:
    config = tmp_path / "broker.toml"
    config.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n', encoding="utf-8")
    return config


def test_sighup_serves_a_renewed_certificate_and_open_sessions_stay(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    proc = start_broker("--config", str(_config(tmp_path, cert, key)))
    try:
        first = served(proc.port)
        assert first == der(cert)
        context = ssl.create_default_context(cafile=str(cert))  # trusts the first one only
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as session:
                assert rawsocket_join(session)[0] == 2  # WELCOME
                self_signed(tmp_path)  # the renewal: a new certificate and key, same files
                renewed = der(cert)
                assert renewed != first
                proc.signal(signal.SIGHUP)
                proc.wait_for_output("reloaded the TLS certificate files of the listeners")
                assert served(proc.port) == renewed  # new connections get the new one
                answer = exchange(session, [48, 1, {}, "wamp.session.count"])
                assert answer[:2] == [50, 1]  # RESULT: the open session still works
        assert "restart" not in proc.output.lower()
    finally:
        proc.stop()


def test_sighup_with_files_that_do_not_load_keeps_the_old_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    proc = start_broker("--config", str(_config(tmp_path, cert, key)))
    try:
        before = served(proc.port)
        key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        proc.signal(signal.SIGHUP)
        proc.wait_for_output("cannot reload the TLS files of the listeners .the old ones stay.")
        assert served(proc.port) == before  # still served, still running
        assert proc.proc.poll() is None
    finally:
        proc.stop()


def test_sighup_without_tls_reloads_nothing_and_keeps_running() -> None:
    proc = start_broker()
    try:
        proc.signal(signal.SIGHUP)
        proc.wait_for_output("SIGHUP: nothing reloaded")
        assert proc.proc.poll() is None
    finally:
        proc.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_supervisor_passes_sighup_to_every_worker(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    redis = start_redis()
    proc: BrokerProcess | None = None
    try:
        args = ["--workers", "2", "--redis", redis.url, "--supervisor-port", "0"]
        proc = start_broker(*args, "--config", str(_config(tmp_path, cert, key)))
        proc.wait_for_output(r"all 2 workers ready", timeout=30)
        self_signed(tmp_path)
        proc.signal(signal.SIGHUP)
        line = "reloaded the TLS certificate files of the listeners"
        proc.wait_for_output(rf"\[[^\]]*0\].*{line}")  # each worker logs with its node ID
        proc.wait_for_output(rf"\[[^\]]*1\].*{line}")
        renewed = der(cert)
        for _ in range(8):  # the kernel spreads connections over both workers
            assert served(proc.port) == renewed
    finally:
        if proc is not None:
            proc.stop(30)
        redis.kill()
