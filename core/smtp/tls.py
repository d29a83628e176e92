"""The STARTTLS certificate: the configured one, or one made on first start.

With ``tls_cert`` empty the listener uses ``<data_dir>/tls/smtp.crt`` and
``smtp.key``, created self-signed for ``hostname`` when they do not exist.
Opportunistic STARTTLS between MTAs does not verify certificates (RFC 7435),
so a self-signed one gives encryption from the first start; an operator who
wants a verifiable one sets ``tls_cert`` and ``tls_key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

VALID_DAYS = 3650


def default_paths(data_dir: Path | str) -> tuple[Path, Path]:
    folder = Path(data_dir) / "tls"
    return folder / "smtp.crt", folder / "smtp.key"


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """Write a new key (0600) and a self-signed certificate for ``hostname``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt = x509.DNSName(hostname)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)
    log.info("event=tls_generated cert=%s host=%s", cert_path, hostname)


def server_context(settings) -> ssl.SSLContext:
    """The SSLContext for STARTTLS, generating the certificate if needed."""
    if settings.tls_cert:
        cert_path = Path(settings.tls_cert)
        key_path = Path(settings.tls_key) if settings.tls_key else None
    else:
        cert_path, key_path = default_paths(settings.data_dir)
        if not cert_path.exists() or not key_path.exists():
            generate_self_signed(cert_path, key_path, settings.hostname)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_path), str(key_path) if key_path else None)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(
            f"cannot load the TLS certificate {cert_path} (setting tls_cert) "
            f"with key {key_path} (setting tls_key): {exc}; fix the files or "
            f"empty both settings to use a generated certificate"
        ) from None
    return context
