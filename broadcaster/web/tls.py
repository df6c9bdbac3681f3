"""HTTPS for the controller: the site's own certificate, or a local one made on first run.

A browser lets a page use the microphone only in a secure context: on localhost, or over HTTPS.
A site with its own certificate gives `--tls-cert`/`--tls-key`. Otherwise `--tls auto` makes,
once, a small local certificate authority and a server certificate signed by it, under
`<data>/tls/`: install `ca.pem` on the office's and the cadres' devices (README: "Trusting the
console's certificate") and every later server certificate is trusted too. The private keys
are written 0600. This is the only module that makes certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broadcaster.errors import InvalidInput

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity Apple's devices accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    """Where a controller's certificate and key are (and the local CA, when made here)."""

    cert: Path
    key: Path
    ca: Path | None = None


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context serving the certificate; InvalidInput naming the file that is wrong."""
    for label, path in (("certificate", files.cert), ("key", files.key)):
        if not path.is_file():
            raise InvalidInput(f"the TLS {label} file {path} does not exist", code="tls_missing")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(
            f"the TLS certificate {files.cert} and key {files.key} cannot be used together: {exc}",
            code="tls_invalid",
        ) from None
    return ctx


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        if not h or h in ("0.0.0.0", "::"):
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _make_ca(directory: Path, site: str, now: dt.datetime) -> tuple[x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "broadcaster"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"broadcaster local CA ({site})"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", key)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, directory / "ca.key"


def _current(cert_path: Path, hosts: list[str], now: dt.datetime) -> bool:
    """True if the server certificate exists, covers the hosts, and is not near its end."""
    if not cert_path.is_file():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(_names(hosts)) <= set(san)


def auto_certificate(
    data_dir: Path, hosts: list[str], site: str = "site", now: dt.datetime | None = None
) -> TlsFiles:
    """The local CA and a server certificate for `hosts` under <data>/tls, made if missing,
    remade when they no longer cover the hosts or near their end (the CA is kept)."""
    now = now or dt.datetime.now(dt.UTC)
    d = data_dir / "tls"
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")
    if _current(files.cert, hosts, now):
        return files
    if (d / "ca.pem").is_file() and (d / "ca.key").is_file():
        ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
        ca_key = _load_key(d / "ca.key")
    else:
        ca, ca_key_path = _make_ca(d, site, now)
        ca_key = _load_key(ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"broadcaster controller ({site})")])
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.key, key)
    files.cert.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    return files


def choose(
    data_dir: Path, host: str, site: str, *, auto: bool, cert: str | None, key: str | None
) -> TlsFiles | None:
    """The TLS files `broadcaster serve` was asked for: the site's own, a local one, or none."""
    if auto and (cert or key):
        raise InvalidInput(
            "give either --tls auto or --tls-cert/--tls-key, not both", code="tls_conflict"
        )
    if auto:
        return auto_certificate(data_dir, [host], site)
    if bool(cert) != bool(key):
        raise InvalidInput(
            "--tls-cert and --tls-key go together: give both files", code="tls_missing"
        )
    return TlsFiles(Path(cert), Path(key)) if cert and key else None
