"""The push data plane's TLS material, made on the controller (one push's identities).

Every chunk server of a push (the controller's, one per node) gets its own
key and self-signed certificate, made here with ``cryptography`` (the standard
library cannot write X.509) for this push only: ECDSA P-256, the curve every
OpenSSL a node may have speaks. A node's key and certificate travel to it over
its SSH connection in ``content.begin`` (never any of the controller's own
key material); the fingerprints (:func:`shoal.agent.tlspin.fingerprint`) are
what every connecting side pins. Nothing is kept on disk: the key lives in the
memory of the process serving with it, and dies with the push.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.agent.tlspin import fingerprint, server_context

#: Validity is not checked (pins are), but some TLS stacks refuse expired certificates.
VALID = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Identity:
    """A chunk server's key and certificate (PEM) and the fingerprint it is pinned by."""

    cert_pem: str
    key_pem: str
    fingerprint: str

    def wire(self) -> dict[str, str]:
        """What ``content.begin`` carries to the node that serves with it."""
        return {"cert": self.cert_pem, "key": self.key_pem}

    def context(self) -> ssl.SSLContext:
        """A server context (for the controller's own chunk servers)."""
        with tempfile.TemporaryDirectory(prefix="shoal-tls-") as scratch:
            return server_context(self.cert_pem, self.key_pem, Path(scratch))


def make_identity(name: str) -> Identity:
    """A fresh key and self-signed certificate for the chunk server of ``name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"shoal-push {name}"[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + VALID)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return Identity(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem,
        fingerprint(cert.public_bytes(serialization.Encoding.DER)),
    )
