"""Optional TLS for the data plane, with a cluster CA, on top of the per-migration token.

The token says *which transfer* a connection belongs to; TLS says *which
hosts* may talk at all and keeps disk contents private on the wire.  With
contexts from :func:`server_context` and :func:`client_context` both ends
present certificates signed by the cluster CA (mutual TLS) and the sender
checks that the receiver's certificate names the address it dialled.

:func:`make_ca` and :func:`make_host_cert` create a small CA and host
certificates (ECDSA P-256) with the ``cryptography`` package: enough for
tests, the benchmark and small clusters; a real deployment can use any CA
that issues certificates with the host's IP or name in subjectAltName.

Note that TLS turns off nothing else: chunks are still checksummed (TLS
protects the wire, the sums also catch a bad disk or buffer) but the
kernel cannot splice file pages into an encrypted stream, so expect the
throughput of the cipher (AES-GCM with AES-NI: ~1-2 GB/s per core).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "ferry cluster CA", days: int = 3650) -> CertPair:
    """Create a self-signed CA certificate and key in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "ca", cert, key)


def make_host_cert(
    ca: CertPair, directory: Path, name: str, hosts: list[str], days: int = 825
) -> CertPair:
    """Issue a certificate for ``hosts`` (IP addresses or DNS names), usable
    both as TLS server and client (a host sends and receives)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _write(directory, name, cert, key)


def server_context(
    host: CertPair, ca_cert: Path, require_client_cert: bool = True
) -> ssl.SSLContext:
    """Context for :class:`~ferry.transfer.server.TransferServer` (``ssl_context=``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(host.cert, host.key)
    ctx.load_verify_locations(ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context(ca_cert: Path, host: CertPair | None = None) -> ssl.SSLContext:
    """Context for :func:`~ferry.transfer.client.send_files` (``ssl_context=``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca_cert)
    if host is not None:
        ctx.load_cert_chain(host.cert, host.key)
    return ctx


def _write(directory: Path, stem: str, cert: object, key: object) -> CertPair:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertPair(cert_path, key_path)
