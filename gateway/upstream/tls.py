"""Extra certificate authorities a provider's TLS certificate is verified against (``ca_file``).

A provider behind a private CA (an internal proxy, a self-hosted model server, the bench's mock
with its self-signed certificate) is trusted through ``providers[].ca_file``: a PEM file of one or
more CA certificates, added to the system's roots (never replacing them). Verification itself is
never turned off.
"""

from __future__ import annotations

import ssl

from cryptography import x509


def read_ca_file(path: str) -> bytes:
    """The PEM bytes of ``path``; raises ``ValueError`` naming the problem (checked at load)."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{path!r} holds no PEM certificate") from None
    if not certs:  # pragma: no cover - load_pem_x509_certificates raises instead
        raise ValueError(f"{path!r} holds no PEM certificate")
    return pem


def ca_file_problem(path: str) -> str | None:
    """What is wrong with ``ca_file`` (for ``gateway check-config``), or None."""
    try:
        read_ca_file(path)
    except ValueError as exc:
        return str(exc)
    return None


def ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """A verifying client context with the system roots plus ``ca_file`` (None: the default)."""
    if ca_file is None:
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=read_ca_file(ca_file).decode("ascii"))
    return ctx
