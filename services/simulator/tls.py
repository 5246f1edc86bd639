"""A throwaway certificate, so the simulator can serve HTTPS as Airbnb does.

``sync-airbnb simulator --tls-dir DIR`` writes ``DIR/cert.pem`` and ``DIR/key.pem``
(a new key each start) and serves HTTPS with them. The certificate is
self-signed for ``127.0.0.1``, ``::1`` and ``localhost``; a client trusts it by
loading ``cert.pem`` as its CA file. It is marked a CA (and carries key
identifiers) because verifiers in strict mode, such as Python's since 3.13,
want those on a trust anchor.
"""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


def self_signed(now: datetime, days: int = 30) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for the loopback names, valid from ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sync-airbnb simulator")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # An hour back: a client whose clock is a little behind still accepts it.
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """Writes a fresh certificate and key into ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(datetime.now(UTC))
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    # HTTP/1.1 only: aiohttp serves no h2, and saying so lets a client settle ALPN at once.
    context.set_alpn_protocols(["http/1.1"])
    return context
