"""The consortium PKI: a CA, the SuperLink's TLS certificate, one auth key pair per site.

Layout of a PKI folder::

    ca.crt, ca.key                  consortium CA (EC P-384); ca.key stays with the coordinator
    superlink.crt, superlink.key    SuperLink TLS certificate (SANs: the given hosts)
    sites/NAME.key, sites/NAME.pub  a site's SuperNode authentication key pair (EC P-384,
                                    OpenSSH format, what ``flower-supernode`` and
                                    ``flwr supernode register`` read)
    sites/NAME.node                 the SuperLink's node id for that key (see deploy.registry)
    sites/retired/NAME-ID.pub       public keys rotated out, by the node id they had

Private keys are written with mode 0600; an existing file is never replaced without ``force``.
Keys change over time: :func:`renew_superlink` issues a new SuperLink certificate from the same
CA (sites keep trusting it), and :mod:`deploy.registry` rotates a site's key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol import SITE_NAME

CURVE = ec.SECP384R1
CA_DAYS = 3650
SERVER_DAYS = 825
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")  # SuperExec reaches the SuperLink locally


class PkiError(RuntimeError):
    """A PKI file is missing, or exists and would be overwritten."""


@dataclass(frozen=True)
class Pki:
    """Paths inside one PKI folder."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The consortium CA certificate (sites trust this)."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's TLS certificate."""
        return self.root / "superlink.crt"

    @property
    def server_key(self) -> Path:
        """The SuperLink's TLS private key."""
        return self.root / "superlink.key"

    def site_key(self, name: str) -> Path:
        """A site's SuperNode authentication private key."""
        return self.root / "sites" / f"{check_site_name(name)}.key"

    def site_public_key(self, name: str) -> Path:
        """A site's SuperNode authentication public key (the coordinator registers it)."""
        return self.root / "sites" / f"{check_site_name(name)}.pub"

    def site_node(self, name: str) -> Path:
        """The node id the SuperLink gave the site's registered key."""
        return self.root / "sites" / f"{check_site_name(name)}.node"

    def retired_public_key(self, name: str, node_id: int) -> Path:
        """Where a rotated-out public key is kept, by the node id it had."""
        return self.root / "sites" / "retired" / f"{check_site_name(name)}-{node_id}.pub"


def check_site_name(name: str) -> str:
    """``name`` if it is a safe file name for a site, else :class:`PkiError`."""
    if not SITE_NAME.match(name):
        raise PkiError(f"site name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def init_pki(root: Path, hosts: list[str], force: bool = False) -> Pki:
    """Create the CA and the SuperLink certificate for ``hosts`` (DNS names or IPs)."""
    pki = Pki(root)
    _refuse_existing([pki.ca_cert, pki.ca_key, pki.server_cert, pki.server_key], force)
    if not hosts:
        raise PkiError("give at least one SuperLink host name or IP address")
    ca_key = ec.generate_private_key(CURVE())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedUMIT consortium CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    write_file(pki.ca_key, _private_pem(ca_key), secret=True, force=force)
    write_file(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), force=force)
    _issue_server_certificate(pki, ca_key, ca_cert, hosts, force=force)
    return pki


def renew_superlink(root: Path, hosts: list[str] | None = None) -> Pki:
    """A new SuperLink key and certificate from the existing CA, replacing the old pair.

    Sites trust it without any change (they hold the CA); the SuperLink serves it once
    restarted. ``hosts`` defaults to the names and addresses of the current certificate.
    """
    pki = Pki(root)
    for path in (pki.ca_cert, pki.ca_key):
        if not path.is_file():
            raise PkiError(f"{path} not found: renewing needs the CA's certificate and key")
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
        raise PkiError(f"{pki.ca_key} is not the key of {pki.ca_cert}")
    if not hosts:
        if not pki.server_cert.is_file():
            raise PkiError(f"{pki.server_cert} not found: give the SuperLink's hosts")
        hosts = certificate_hosts(x509.load_pem_x509_certificate(pki.server_cert.read_bytes()))
    _issue_server_certificate(pki, ca_key, ca_cert, hosts, force=True)
    return pki


def certificate_hosts(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is for, its common name first, without
    the local names every SuperLink certificate carries."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    listed = [
        *(str(name.value) for name in names),
        *sans.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)),
    ]
    hosts = [host for host in dict.fromkeys(listed) if host not in LOCAL_HOSTS]
    return hosts or listed[:1]


def add_site(root: Path, name: str, force: bool = False) -> Pki:
    """Create ``name``'s SuperNode authentication key pair (OpenSSH-format EC P-384)."""
    pki = Pki(root)
    write_site_key_pair(pki.site_key(name), pki.site_public_key(name), name, force=force)
    return pki


def write_site_key_pair(private: Path, public: Path, name: str, force: bool = False) -> None:
    """A new SuperNode authentication key pair for site ``name`` at the given paths."""
    _refuse_existing([private, public], force)
    key = ec.generate_private_key(CURVE())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_file(private, private_bytes, secret=True, force=force)
    write_file(public, public_bytes + f" fedumit-{name}\n".encode(), force=force)


def _issue_server_certificate(
    pki: Pki,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: list[str],
    force: bool,
) -> None:
    """A new SuperLink key and its certificate for ``hosts``, signed by the CA."""
    server_key = ec.generate_private_key(CURVE())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server_cert = (
        _builder(server_name, ca_cert.subject, server_key.public_key(), SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    write_file(pki.server_key, _private_pem(server_key), secret=True, force=force)
    write_file(pki.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), force=force)


def write_file(path: Path, data: bytes, *, secret: bool = False, force: bool = False) -> None:
    """Write ``data`` atomically (mode 0600 when ``secret``); refuse to replace unless ``force``."""
    if path.exists() and not force:
        raise PkiError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    mode = 0o600 if secret else 0o644
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise PkiError(f"refusing to overwrite {', '.join(existing)} (pass --force to replace)")


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOCAL_HOSTS]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
