"""Test certificates: a self-signed one (wss) and a small CA issuing node certificates
(mutual TLS on direct links). EC P-256 keys, valid from five minutes ago for a day."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Authority", "NodeCert", "self_signed"]


def _names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        _builder("localhost", name, key)
        .add_extension(_names(("localhost", "127.0.0.1")), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(tmp, "cert", cert, key)


@dataclass(frozen=True)
class NodeCert:
    """A node's certificate, its key and the CA that signed it (PEM paths)."""

    cert: Path
    key: Path
    ca: Path


class Authority:
    """A certificate authority in ``folder`` (``<name>-ca.pem``) issuing node certificates."""

    def __init__(self, folder: Path, name: str = "test") -> None:
        self.folder, self.name = folder, name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self._cert = (
            _builder(f"{name} CA", self._subject, self._key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca, _ = _write(folder, f"{name}-ca", self._cert, self._key)

    def issue(self, node: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> NodeCert:
        """A certificate for ``node`` naming ``hosts``, good for dialing and accepting."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        cert = (
            _builder(node, self._subject, key)
            .add_extension(_names(hosts), critical=False)
            .add_extension(usage, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = _write(self.folder, f"{self.name}-{node}", cert, key)
        return NodeCert(cert_path, key_path, self.ca)
