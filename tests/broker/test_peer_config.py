"""``[cluster] peer`` / ``--peer`` / ``BROKER_PEER`` and ``peer_advertise``: where direct links
between nodes are taken (broker/cluster/peers.py), merged and checked by ``load_settings``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.cluster.link import ClusterTiming
from broker.cluster.peers import PeerTLS
from broker.config import ConfigError, load_settings
from tests.support.certs import Authority, NodeCert
from tests.support.processes import ROOT

REDIS = {"BROKER_REDIS": "redis://127.0.0.1:6379/0"}


def _config(tmp_path: Path, cluster: str, server: str = "") -> str:
    path = tmp_path / "broker.toml"
    path.write_text(f"[server]\n{server}\n[cluster]\n{cluster}\n", encoding="utf-8")
    return str(path)


def test_the_default_is_a_free_loopback_port_advertised_as_bound() -> None:
    settings = load_settings(environ={})
    assert (settings.peer, settings.peer_advertise) == ("127.0.0.1:0", None)
    assert load_settings(environ=REDIS).peer == "127.0.0.1:0"


@pytest.mark.parametrize("off", ["off", "OFF", " off ", "none", ""])
def test_off_turns_direct_links_off_from_flag_environment_or_file(tmp_path: Path, off: str) -> None:
    assert load_settings(peer=off, environ={}).peer is None
    assert load_settings(environ={"BROKER_PEER": off}).peer is None
    assert load_settings(_config(tmp_path, f'peer = "{off}"'), environ={}).peer is None


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'peer = "127.0.0.1:7001"')
    env = {"BROKER_PEER": "127.0.0.1:7002"}
    assert load_settings(path, environ={}).peer == "127.0.0.1:7001"
    assert load_settings(path, environ=env).peer == "127.0.0.1:7002"
    assert load_settings(path, peer="127.0.0.1:7003", environ=env).peer == "127.0.0.1:7003"
    assert load_settings(path, peer="127.0.0.1:7003", environ={"BROKER_PEER": "off"}).peer == (
        "127.0.0.1:7003"
    )
    assert load_settings(path, peer="off", environ=env).peer is None
    assert load_settings(path, environ={"BROKER_PEER": "off"}).peer is None


@pytest.mark.parametrize("address", ["0.0.0.0:7070", "[::1]:7070", "node-a.internal:0", " h:1 "])
def test_addresses_that_parse(address: str) -> None:
    assert load_settings(peer=address, environ={}).peer == address.strip()


@pytest.mark.parametrize("bad", ["7070", "host", "host:port", "host:70000", ":7070", "h:-1"])
def test_malformed_addresses_are_config_errors_naming_the_place(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--peer {bad!r} is not host:port")):
        load_settings(peer=bad, environ={})
    with pytest.raises(ConfigError, match=r"BROKER_PEER .* is not host:port"):
        load_settings(environ={"BROKER_PEER": bad})
    with pytest.raises(ConfigError, match=r"\[cluster\] peer .* is not host:port"):
        load_settings(_config(tmp_path, f'peer = "{bad}"'), environ={})
    with pytest.raises(ConfigError, match=r"BROKER_PEER_ADVERTISE .* is not host:port"):
        load_settings(environ={"BROKER_PEER_ADVERTISE": bad})
    with pytest.raises(ConfigError, match=r"\[cluster\] peer_advertise .* is not host:port"):
        load_settings(_config(tmp_path, f'peer_advertise = "{bad}"'), environ={})


def test_values_of_the_wrong_type_in_the_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[cluster\] peer: expected str"):
        load_settings(_config(tmp_path, "peer = 7070"), environ={})
    with pytest.raises(ConfigError, match=r"\[cluster\] peer_advertise must be a string"):
        load_settings(_config(tmp_path, "peer_advertise = 7070"), environ={})


def test_advertise_from_file_or_environment(tmp_path: Path) -> None:
    path = _config(tmp_path, 'peer = "0.0.0.0:7070"\npeer_advertise = "node-a.internal:7070"')
    settings = load_settings(path, environ={})
    assert (settings.peer, settings.peer_advertise) == ("0.0.0.0:7070", "node-a.internal:7070")
    env = {"BROKER_PEER_ADVERTISE": "10.0.0.5:7171"}
    assert load_settings(path, environ=env).peer_advertise == "10.0.0.5:7171"
    assert load_settings(environ=env).peer_advertise == "10.0.0.5:7171"


def test_workers_take_free_ports_a_fixed_peer_address_is_refused(tmp_path: Path) -> None:
    assert load_settings(workers="2", environ=REDIS).peer == "127.0.0.1:0"
    assert load_settings(workers="2", peer="0.0.0.0:0", environ=REDIS).workers == 2
    assert load_settings(workers="2", peer="off", environ=REDIS).peer is None
    refused = "2 workers cannot share one peer address"
    with pytest.raises(ConfigError, match=refused):
        load_settings(workers="2", peer="127.0.0.1:7070", environ=REDIS)
    with pytest.raises(ConfigError, match=refused):
        load_settings(workers="2", environ={**REDIS, "BROKER_PEER": "127.0.0.1:7070"})
    with pytest.raises(ConfigError, match=refused):
        load_settings(workers="2", environ={**REDIS, "BROKER_PEER_ADVERTISE": "h:7070"})
    path = _config(tmp_path, 'peer = "127.0.0.1:7070"', server="workers = 3")
    with pytest.raises(ConfigError, match="3 workers cannot share one peer address"):
        load_settings(path, environ=REDIS)
    # with "off" from the environment the file's fixed address does not matter
    assert load_settings(path, environ={**REDIS, "BROKER_PEER": "off"}).workers == 3
    # one process may take a fixed port
    assert load_settings(peer="127.0.0.1:7070", environ=REDIS).peer == "127.0.0.1:7070"


def _broker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", "--port", "0", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BROKER_")},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_command_line_refuses_a_shared_or_malformed_peer_address() -> None:
    redis = ("--redis", "redis://127.0.0.1:6379/0")
    done = _broker("--workers", "2", *redis, "--peer", "127.0.0.1:7070")
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert "2 workers cannot share one peer address" in done.stderr
    done = _broker(*redis, "--peer", "nonsense")
    assert done.returncode == 2
    assert "--peer 'nonsense' is not host:port" in done.stderr


def test_a_peer_address_in_use_stops_the_broker_with_a_message_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the peer listener starts before Redis is reached: an unreachable Redis is fine
        done = _broker("--redis", "redis://127.0.0.1:1/0", "--peer", f"127.0.0.1:{port}")
    assert done.returncode == 1
    said = done.stdout + done.stderr  # the log goes to stdout
    assert f"cannot listen for direct links on 127.0.0.1:{port} ([cluster] peer)" in said
    assert "address already in use" in said


# --- TLS on direct links ----------------------------------------------------------------------
def _tls_lines(node: NodeCert) -> str:
    return "\n".join(
        f'peer_tls_{part} = "{path}"'
        for part, path in (("cert", node.cert), ("key", node.key), ("ca", node.ca))
    )


def test_peer_tls_from_the_file_or_the_environment(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    first, second = authority.issue("a"), authority.issue("b")
    assert load_settings(environ={}).peer_tls is None
    from_file = load_settings(_config(tmp_path, _tls_lines(first)), environ={}).peer_tls
    assert from_file == PeerTLS(str(first.cert), str(first.key), str(first.ca))
    env = {
        "BROKER_PEER_TLS_CERT": str(second.cert),
        "BROKER_PEER_TLS_KEY": str(second.key),
        "BROKER_PEER_TLS_CA": str(second.ca),
    }
    assert load_settings(environ=env).peer_tls == PeerTLS(*env.values())
    # each variable beats its key in the file
    mixed = load_settings(
        _config(tmp_path, _tls_lines(first)), environ={"BROKER_PEER_TLS_CERT": str(first.cert)}
    ).peer_tls
    assert mixed == from_file


def test_peer_tls_refuses_a_partial_or_broken_set_with_a_clear_error(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    node, other = authority.issue("a"), authority.issue("b")
    partial = f'peer_tls_cert = "{node.cert}"\npeer_tls_key = "{node.key}"'
    with pytest.raises(ConfigError, match="missing: peer_tls_ca"):
        load_settings(_config(tmp_path, partial), environ={})
    with pytest.raises(ConfigError, match="peer_tls_ca: no such file"):
        load_settings(_config(tmp_path, partial + '\npeer_tls_ca = "/nowhere.pem"'), environ={})
    wrong_key = _tls_lines(node).replace(str(node.key), str(other.key))
    with pytest.raises(ConfigError, match="cannot load the certificates"):
        load_settings(_config(tmp_path, wrong_key), environ={})
    with pytest.raises(ConfigError, match="peer_tls_cert: expected str"):
        load_settings(_config(tmp_path, "peer_tls_cert = 7"), environ={})


def test_peer_retry_reaches_the_links_and_must_be_positive(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, "peer_retry = 2.5"), environ={})
    assert settings.cluster_timing["peer_retry"] == 2.5
    assert ClusterTiming(**settings.cluster_timing).peer_retry == 2.5
    assert ClusterTiming().peer_retry == 10.0  # the default
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match="peer_retry must be positive"):
            load_settings(_config(tmp_path, f"peer_retry = {bad}"), environ={})
    with pytest.raises(ConfigError, match="peer_retry: expected int or float"):
        load_settings(_config(tmp_path, 'peer_retry = "soon"'), environ={})
