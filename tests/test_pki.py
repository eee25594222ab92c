"""Tests for server.identity.pki on real files in tmp_path."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.identity.pki import (
    DEV_IDENTITIES,
    MIE_MUNICIPALITIES,
    ROLES,
    SERVER_ROLES,
    Pki,
    SpiffeId,
    load_revoked_serials,
    spiffe_id_of_pem,
)

TD = "juki.mie"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    p = Pki(tmp_path / "pki")
    p.create_ca(TD)
    return p


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _self_signed(sans: list[x509.GeneralName] | None) -> bytes:
    """A throwaway self-signed certificate with the given SANs (or no SAN extension at all)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "municipal-cs/242012")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1234)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_create_ca_and_refuse_overwrite(tmp_path: Path) -> None:
    p = Pki(tmp_path / "pki")
    assert not p.exists()
    p.create_ca(TD)
    assert p.exists()
    assert p.trust_domain() == TD
    assert _mode(p.ca_key_path) == 0o600
    ca = _load(p.ca_cert_path)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca
    # The empty CRL is written and verifies against the new CA.
    assert p.crl_path.exists()
    assert load_revoked_serials(p.crl_path, p.ca_cert_path) == frozenset()

    before = p.ca_key_path.read_bytes()
    with pytest.raises(FileExistsError):
        p.create_ca(TD)
    assert p.ca_key_path.read_bytes() == before


def test_create_ca_rejects_bad_trust_domain(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Pki(tmp_path).create_ca("Juki.Mie:443")


def test_issue_chains_to_ca_with_only_spiffe_san(pki: Pki) -> None:
    info = pki.issue("municipal-cs", "242012")
    assert info.name == "municipal-cs/242012"
    assert info.spiffe == SpiffeId(TD, "municipal-cs", "242012")
    assert (info.cert_path, info.key_path) == pki.cert_paths("municipal-cs", "242012")
    assert _mode(info.key_path) == 0o600

    ca = _load(pki.ca_cert_path)
    cert = _load(info.cert_path)
    cert.verify_directly_issued_by(ca)
    ca_pub = ca.public_key()
    assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    # Leaf only, no chain appended.
    assert info.cert_path.read_bytes().count(b"BEGIN CERTIFICATE") == 1

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("spiffe://juki.mie/municipal-cs/242012")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert cert.serial_number == info.serial > 0

    key = serialization.load_pem_private_key(info.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == cert.public_key()

    assert spiffe_id_of_pem(info.cert_path.read_bytes()) == (info.spiffe, info.serial)


def test_server_roles_have_localhost_sans(pki: Pki) -> None:
    for role in sorted(SERVER_ROLES):
        cert = _load(pki.issue(role, "24").cert_path)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}/{role}/24"]
        # the role's own name (peers check it: no other server role can pose as this one), and localhost
        assert san.get_values_for_type(x509.DNSName) == [f"{role}.{TD}", "localhost"]
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        }
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}


def test_issue_refuses_existing_unless_overwrite(pki: Pki) -> None:
    first = pki.issue("operator", "op-0001")
    with pytest.raises(FileExistsError):
        pki.issue("operator", "op-0001")
    second = pki.issue("operator", "op-0001", overwrite=True)
    assert second.serial != first.serial
    assert _mode(second.key_path) == 0o600


def test_issue_validates_names_and_needs_ca(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError):
        pki.issue("root", "x")
    with pytest.raises(ValueError):
        pki.issue("operator", "../../ca")
    with pytest.raises(ValueError):
        pki.cert_paths("operator", "a/b")
    with pytest.raises(FileNotFoundError):
        Pki(tmp_path / "empty").issue("operator", "op-0001")


def test_revoke_puts_serial_in_crl(pki: Pki) -> None:
    a = pki.issue("agency", "police")
    b = pki.issue("department", "tax")
    c = pki.issue("auditor", "auditor-01")

    assert pki.revoke("agency/police").revoked
    assert load_revoked_serials(pki.crl_path, pki.ca_cert_path) == {a.serial}
    assert pki.revoke(b.serial).name == "department/tax"
    assert pki.revoke(str(b.serial)).revoked  # idempotent, and serial given as a string
    assert load_revoked_serials(pki.crl_path, pki.ca_cert_path) == {a.serial, b.serial}

    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > datetime.now(UTC) + timedelta(days=6)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3

    with pytest.raises(KeyError):
        pki.revoke("agency/nobody")
    with pytest.raises(KeyError):
        pki.revoke(12345)
    assert not [p for p in pki.directory.iterdir() if p.name.endswith(".tmp")]

    listed = {i.name: i.revoked for i in pki.list()}
    assert listed == {a.name: True, b.name: True, c.name: False}


def test_list_sorted_with_revoked_flag(pki: Pki) -> None:
    assert pki.list() == []
    pki.issue("operator", "op-0002")
    pki.issue("admin", "admin-01")
    revoked = pki.issue("monitor", "monitor-01")
    pki.revoke(revoked.name)
    infos = pki.list()
    assert [i.name for i in infos] == ["admin/admin-01", "monitor/monitor-01", "operator/op-0002"]
    assert [i.revoked for i in infos] == [False, True, False]
    assert all(i.not_before.tzinfo is not None for i in infos)


def test_crl_from_other_ca_is_rejected(tmp_path: Path, pki: Pki) -> None:
    other = Pki(tmp_path / "other")
    other.create_ca(TD)  # same subject, different key: only the signature tells them apart
    other.revoke(other.issue("operator", "op-0001").serial)
    with pytest.raises(ValueError):
        load_revoked_serials(other.crl_path, pki.ca_cert_path)

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a crl")
    with pytest.raises(ValueError):
        load_revoked_serials(garbage, pki.ca_cert_path)


def test_missing_crl_is_empty(tmp_path: Path, pki: Pki) -> None:
    assert load_revoked_serials(tmp_path / "absent.pem", pki.ca_cert_path) == frozenset()


def test_expired_issuance(pki: Pki) -> None:
    now = datetime.now(UTC)
    info = pki.issue(
        "operator", "op-0001", not_before=now - timedelta(days=2), not_after=now - timedelta(days=1)
    )
    assert info.not_after < now
    assert _load(info.cert_path).not_valid_after_utc < now

    only_end = pki.issue("operator", "op-0002", not_after=now - timedelta(hours=1))
    assert only_end.not_before < only_end.not_after < now

    with pytest.raises(ValueError):
        pki.issue("operator", "op-0003", not_before=now, not_after=now - timedelta(days=1))


@pytest.mark.parametrize(
    "uri",
    [
        "https://juki.mie/operator/op-0001",
        "SPIFFE://juki.mie/operator/op-0001",
        "spiffe:/juki.mie/operator/op-0001",
        "spiffe://juki.mie/root/op-0001",
        "spiffe://juki.mie/operator/op-0001/extra",
        "spiffe://juki.mie/operator",
        "spiffe://juki.mie/operator/",
        "spiffe://juki.mie/operator/op 0001",
        "spiffe://juki.mie/operator/op%2F0001",
        "spiffe://juki.mie/operator/op-0001?x=1",
        "spiffe://juki.mie/operator/op-0001#frag",
        "spiffe://juki.mie/operator/..",
        "spiffe://juki.mie/operator/" + "a" * 65,
        "spiffe://juki.mie:443/operator/op-0001",
        "spiffe://user@juki.mie/operator/op-0001",
        "spiffe:///operator/op-0001",
        "spiffe://Juki.Mie/operator/op-0001",
        "spiffe://juki.mie//operator/op-0001",
        "spiffe://juki.mie/operator/op-0001\n",
    ],
)
def test_spiffe_parse_rejects(uri: str) -> None:
    with pytest.raises(ValueError):
        SpiffeId.parse(uri)


def test_spiffe_parse_roundtrip() -> None:
    sid = SpiffeId.parse("spiffe://juki.mie/municipal-cs/242012")
    assert (sid.trust_domain, sid.role, sid.id) == ("juki.mie", "municipal-cs", "242012")
    assert str(sid) == sid.uri == "spiffe://juki.mie/municipal-cs/242012"
    assert SpiffeId.parse("spiffe://juki.mie/operator/" + "A.b_c-9" * 9 + "x") is not None
    with pytest.raises(ValueError):
        SpiffeId("juki.mie", "operator", "a/b")


def test_spiffe_id_of_pem_errors() -> None:
    with pytest.raises(ValueError):
        spiffe_id_of_pem(_self_signed(None))
    with pytest.raises(ValueError):
        spiffe_id_of_pem(_self_signed([x509.DNSName("localhost")]))
    with pytest.raises(ValueError):
        spiffe_id_of_pem(
            _self_signed(
                [
                    x509.UniformResourceIdentifier("spiffe://juki.mie/operator/a"),
                    x509.UniformResourceIdentifier("spiffe://juki.mie/operator/b"),
                ]
            )
        )
    with pytest.raises(ValueError):
        spiffe_id_of_pem(_self_signed([x509.UniformResourceIdentifier("spiffe://juki.mie/root/a")]))
    with pytest.raises(ValueError):
        spiffe_id_of_pem(b"not a pem")
    sid, serial = spiffe_id_of_pem(
        _self_signed([x509.UniformResourceIdentifier("spiffe://juki.mie/municipal-cs/242012")])
    )
    assert (sid, serial) == (SpiffeId(TD, "municipal-cs", "242012"), 1234)


def test_ensure_dev(tmp_path: Path) -> None:
    p = Pki(tmp_path / "dev")
    issued = p.ensure_dev(TD, DEV_IDENTITIES)
    assert p.exists()
    assert len(issued) == len(DEV_IDENTITIES) == len(MIE_MUNICIPALITIES) + 12
    assert {i.name for i in p.list()} == {f"{r}/{i}" for r, i in DEV_IDENTITIES}
    assert {r for r, _ in DEV_IDENTITIES} == set(ROLES)
    assert p.ensure_dev(TD, DEV_IDENTITIES) == []

    # A certificate that lost its key is re-issued.
    p.cert_paths("admin", "admin-01")[1].unlink()
    assert [i.name for i in p.ensure_dev(TD, DEV_IDENTITIES)] == ["admin/admin-01"]

    with pytest.raises(ValueError):
        p.ensure_dev("other.domain", DEV_IDENTITIES)


# --- replacing revokes; every certificate ever issued can be revoked (the issuance log) --------------


def test_overwrite_revokes_the_replaced_certificate(pki: Pki) -> None:
    first = pki.issue("agency", "police")
    second = pki.issue("agency", "police", overwrite=True)
    third = pki.issue("agency", "police", overwrite=True)
    assert load_revoked_serials(pki.crl_path, pki.ca_cert_path) == {first.serial, second.serial}
    assert {i.name: i.revoked for i in pki.list()} == {"agency/police": False}
    assert [i.serial for i in pki.issued()] == [first.serial, second.serial, third.serial]


def test_every_certificate_ever_issued_can_be_revoked_by_serial(pki: Pki) -> None:
    gone = pki.issue("agency", "education")
    gone.cert_path.unlink()  # its file is gone; the issuance log still knows it
    kept = pki.issue("department", "tax")
    assert pki.revoke(f"{gone.serial:x}").name == "agency/education"  # hex as `pki issue` prints it
    assert pki.revoke(f"0x{kept.serial:X}").serial == kept.serial
    assert pki.revoke(str(kept.serial)).serial == kept.serial  # decimal; idempotent
    assert load_revoked_serials(pki.crl_path, pki.ca_cert_path) == {gone.serial, kept.serial}
    replaced = pki.issue("department", "tax", overwrite=True)
    assert pki.revoke(kept.serial).revoked  # a replaced one, again: no error
    assert replaced.serial not in load_revoked_serials(pki.crl_path, pki.ca_cert_path)
    for unknown in ("0x1234", "nonsense", "agency/nobody", 99):
        with pytest.raises(KeyError):
            pki.revoke(unknown)
    line = pki.issued_path.read_text().splitlines()[0]
    assert f'"serial": "{gone.serial:x}"' in line and '"name": "agency/education"' in line


def _juki(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    juki = Path(sys.executable).with_name("juki")
    return subprocess.run(
        [str(juki), "--home", str(home), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_revokes_a_replaced_certificate_and_refuses_unknown_ones_in_one_line(tmp_path: Path) -> None:
    assert _juki(tmp_path, "pki", "init").returncode == 0
    old = _juki(tmp_path, "pki", "issue", "agency", "fire")
    serial = old.stdout.split("serial=")[1].split()[0]
    replaced = _juki(tmp_path, "pki", "issue", "agency", "fire", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    again = _juki(tmp_path, "pki", "revoke", serial)
    assert again.returncode == 0 and f"serial={serial}" in again.stdout, again.stderr
    listing = _juki(tmp_path, "pki", "list", "--all").stdout.splitlines()
    assert [line.split()[-1] for line in listing] == ["REVOKED", "valid"]
    for unknown in ("0xdeadbeef", "agency/nobody", "not-a-serial"):
        refused = _juki(tmp_path, "pki", "revoke", unknown)
        assert refused.returncode == 2
        assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr and "KeyError" not in refused.stderr
    exists = _juki(tmp_path, "pki", "issue", "agency", "fire")
    assert exists.returncode == 2 and len(exists.stderr.strip().splitlines()) == 1, exists.stderr
    again = _juki(tmp_path, "pki", "init")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr


def test_ensure_dev_reissues_a_server_certificate_without_its_role_name(pki: Pki) -> None:
    """Certificates of an older jukinet lack the role's DNS name, which peers now check: re-issued."""
    from server.identity import pki as pki_module

    real = pki_module.server_dns_name
    pki_module.server_dns_name = lambda role, domain: "localhost"  # type: ignore[assignment]
    try:
        old = pki.issue("national", "old-style")
    finally:
        pki_module.server_dns_name = real
    issued = pki.ensure_dev(TD, [("national", "old-style"), ("agency", "police")])
    assert [info.spiffe.uri for info in issued if info.spiffe.role == "national"] == [
        f"spiffe://{TD}/national/old-style"
    ]
    cert = _load(pki.cert_paths("national", "old-style")[0])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"national.{TD}" in san.get_values_for_type(x509.DNSName)
    assert cert.serial_number != old.serial
    assert old.serial in pki_module.load_revoked_serials(pki.crl_path, pki.ca_cert_path)
