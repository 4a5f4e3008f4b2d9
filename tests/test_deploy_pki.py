"""The consortium PKI: files, modes, SANs, chain, key formats, no silent overwrite."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)

from deploy.pki import Pki, PkiError, add_site, init_pki
from fedumit.cli import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_ca_and_server_certificate_with_sans(tmp_path: Path) -> None:
    assert (
        main(
            ["pki", "init", "--out", str(tmp_path), "--superlink-host", "link.example.org,10.1.2.3"]
        )
        == 0
    )
    pki = Pki(tmp_path)
    assert _mode(pki.ca_key) == 0o600 and _mode(pki.server_key) == 0o600
    assert not _mode(pki.ca_cert) & 0o022
    ca, server = _cert(pki.ca_cert), _cert(pki.server_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp384r1"
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"link.example.org", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    ips = set(sans.get_values_for_type(x509.IPAddress))
    assert {ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1")} <= ips
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = load_pem_private_key(pki.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()


def test_site_key_pair_is_openssh_ec_p384(tmp_path: Path) -> None:
    assert main(["pki", "add-site", "hospital-a", "--out", str(tmp_path)]) == 0
    pki = Pki(tmp_path)
    assert _mode(pki.site_key("hospital-a")) == 0o600
    private = load_ssh_private_key(pki.site_key("hospital-a").read_bytes(), password=None)
    public = load_ssh_public_key(pki.site_public_key("hospital-a").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()


def test_rerun_never_overwrites_without_force(tmp_path: Path, capsys) -> None:
    init_pki(tmp_path, ["link"])
    add_site(tmp_path, "hospital-a")
    pki = Pki(tmp_path)
    before = {p: p.read_bytes() for p in (pki.ca_key, pki.server_key, pki.site_key("hospital-a"))}
    assert main(["pki", "init", "--out", str(tmp_path), "--superlink-host", "link"]) == 2
    assert main(["pki", "add-site", "hospital-a", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert all(path.read_bytes() == data for path, data in before.items())
    add_site(tmp_path, "hospital-a", force=True)
    assert pki.site_key("hospital-a").read_bytes() != before[pki.site_key("hospital-a")]
    assert _mode(pki.site_key("hospital-a")) == 0o600


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden"])
def test_unsafe_site_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PkiError):
        add_site(tmp_path, name)
