"""The consortium PKI: files, modes, SANs, chain, key formats, no silent overwrite; keys over
time: a renewed SuperLink certificate trusted by sites that hold the CA, a rotated site key
admitted and the old one refused (real SuperLink and SuperNodes on loopback)."""

from __future__ import annotations

import ipaddress
import ssl
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
from tests.deploy_fixtures import Consortium, Processes, fedumit_argv, free_port, wait_for

pytestmark = pytest.mark.slow


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


def _sans(certificate: x509.Certificate) -> set:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(extension.value)


def test_renewal_issues_a_new_superlink_key_and_certificate_from_the_same_ca(
    tmp_path: Path, capsys
) -> None:
    init_pki(tmp_path, ["link.example.org", "10.1.2.3"])
    pki = Pki(tmp_path)
    ca, ca_key = pki.ca_cert.read_bytes(), pki.ca_key.read_bytes()
    old, old_key = _cert(pki.server_cert), pki.server_key.read_bytes()

    assert main(["pki", "renew-superlink", "--out", str(tmp_path)]) == 0
    assert "link.example.org, 10.1.2.3" in capsys.readouterr().out
    new = _cert(pki.server_cert)
    assert (pki.ca_cert.read_bytes(), pki.ca_key.read_bytes()) == (ca, ca_key)
    new.verify_directly_issued_by(_cert(pki.ca_cert))
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert _sans(new) == _sans(old)
    assert pki.server_key.read_bytes() != old_key and _mode(pki.server_key) == 0o600
    key = load_pem_private_key(pki.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == new.public_key().public_numbers()

    renew = ["pki", "renew-superlink", "--out", str(tmp_path), "--superlink-host", "b.org"]
    assert main(renew) == 0
    names = _cert(pki.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert {"b.org", "localhost"} == set(names.value.get_values_for_type(x509.DNSName))


def test_renewal_needs_the_cas_own_key(tmp_path: Path, capsys) -> None:
    init_pki(tmp_path, ["link"])
    other = tmp_path / "other"
    init_pki(other, ["link"])
    Pki(tmp_path).ca_key.write_bytes(Pki(other).ca_key.read_bytes())
    assert main(["pki", "renew-superlink", "--out", str(tmp_path)]) == 2
    assert "is not the key of" in capsys.readouterr().err
    Pki(tmp_path).ca_key.unlink()
    assert main(["pki", "renew-superlink", "--out", str(tmp_path)]) == 2
    assert "renewing needs the CA's certificate and key" in capsys.readouterr().err


@pytest.fixture
def consortium(tmp_path: Path, processes: Processes) -> Consortium:
    """A SuperLink and hospital-a's registered SuperNode, online (it never runs a round)."""
    consortium = Consortium(tmp_path, processes, model_spec=tmp_path / "model.toml")
    archive = tmp_path / "archives" / "hospital-a"
    archive.mkdir(parents=True)
    consortium.start([archive])
    return consortium


def test_a_rotated_site_key_is_admitted_and_the_old_one_refused(consortium: Consortium) -> None:
    c, pki = consortium, Pki(consortium.pki)
    old_key = c.root / "hospital-a-old.key"
    old_key.write_bytes(pki.site_key("hospital-a").read_bytes())
    [before] = c.supernodes()
    assert pki.site_node("hospital-a").read_text().strip() == before["node-id"]

    printed = c.fedumit(
        "pki", "rotate-site", "hospital-a", "--out", str(c.pki), "--federation", c.federation
    )
    new_node = pki.site_node("hospital-a").read_text().strip()
    assert f"registered as SuperNode {new_node}" in printed and new_node != before["node-id"]
    assert f"SuperNode {before['node-id']} (the old key) unregistered" in printed
    assert pki.retired_public_key("hospital-a", int(before["node-id"])).is_file()
    assert pki.site_key("hospital-a").read_bytes() != old_key.read_bytes()

    c.processes.stop(c.nodes["hospital-a"])  # the site restarts its SuperNode with the new key
    c.start_site("hospital-a", "rotated")
    wait_for(lambda: c.statuses() == ["online"], 120, "hospital-a online with its new key")
    assert [n["node-id"] for n in c.supernodes()] == [new_node]

    argv = fedumit_argv(
        "supernode", "--site", str(c.site_configs["hospital-a"]),
        "--superlink", f"127.0.0.1:{c.port}", "--root-cert", str(pki.ca_cert),
        "--auth-key", str(old_key), "--runtime-port", str(free_port()),
    )  # fmt: skip
    stale = c.processes.start("hospital-a-old-key", argv, cwd=c.root)
    assert stale.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in c.processes.log("hospital-a-old-key")
    assert [(n["node-id"], n["status"]) for n in c.supernodes()] == [(new_node, "online")]


def test_a_renewed_superlink_certificate_is_trusted_by_sites_holding_the_ca(
    consortium: Consortium,
) -> None:
    c, pki = consortium, Pki(consortium.pki)
    ca = pki.ca_cert.read_bytes()
    old = _cert(pki.server_cert)
    c.fedumit("pki", "renew-superlink", "--out", str(c.pki))
    assert pki.ca_cert.read_bytes() == ca  # nothing to send to the sites

    c.processes.stop(c.nodes["hospital-a"])  # signs off: offline until it connects again
    assert c.statuses() == ["offline"]
    c.processes.stop(c.link)
    c.start_superlink("superlink-renewed")  # waits for a handshake verified by ca.crt alone
    served = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", c.port), ca_certs=str(pki.ca_cert)).encode()
    )
    assert served == _cert(pki.server_cert) and served.serial_number != old.serial_number
    c.start_site("hospital-a", "renewed")  # the same site config, PKI folder and ca.crt
    wait_for(lambda: c.statuses() == ["online"], 120, "hospital-a online, trusting the CA only")
