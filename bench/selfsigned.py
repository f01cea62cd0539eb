"""A throwaway CA and a server certificate for 127.0.0.1 / localhost (the mock's TLS listener).

Made at start: the CA certificate goes to the path the caller names (what a client trusts: the
provider's ``ca_file``), the server's certificate and key beside it. Two certificates rather than
one self-signed leaf because rustls (pyreqwest) rightly refuses a CA certificate used as a
server's own.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically: whoever waits for the file never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def write_certificates(ca_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the CA to ``ca_path``; returns the server's (certificate, key) paths beside it.

    The server certificate names localhost, 127.0.0.1 and ::1 and is valid for one day.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("llm-gateway bench CA"))
        .issuer_name(_name("llm-gateway bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost")] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = Path(ca_path)
    cert_file = ca_file.with_name(ca_file.name + ".server.pem")
    key_file = ca_file.with_name(ca_file.name + ".server.key")
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(key_file, key_pem, 0o600)
    _write(cert_file, leaf.public_bytes(pem) + ca.public_bytes(pem))
    _write(ca_file, ca.public_bytes(pem))  # last: its presence means all three are there
    return cert_file, key_file
