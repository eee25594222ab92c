"""The revocation list fails closed: a missing, unverifiable or older CRL never un-revokes anyone."""

from __future__ import annotations

import shutil
from pathlib import Path

from server.identity.peers import RevocationList
from server.identity.pki import Pki


def make(tmp_path: Path) -> tuple[Pki, int]:
    pki = Pki(tmp_path / "pki")
    pki.create_ca("juki.mie")
    serial = pki.issue("agency", "police").serial
    return pki, serial


def test_revocation_is_picked_up_when_the_file_changes(tmp_path: Path) -> None:
    pki, serial = make(tmp_path)
    crl = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=0)
    assert not crl.is_revoked(serial)
    pki.revoke("agency/police")
    assert crl.is_revoked(serial)


def test_a_deleted_crl_keeps_the_list_in_force(tmp_path: Path) -> None:
    pki, serial = make(tmp_path)
    pki.revoke("agency/police")
    crl = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=0)
    pki.crl_path.unlink()
    assert crl.is_revoked(serial)
    crl.reload()
    assert crl.is_revoked(serial)


def test_an_older_crl_written_back_does_not_unrevoke(tmp_path: Path) -> None:
    pki, serial = make(tmp_path)
    old = tmp_path / "old-crl.pem"
    shutil.copy(pki.crl_path, old)  # validly signed, but from before the revocation
    pki.revoke("agency/police")
    crl = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=0)
    shutil.copy(old, pki.crl_path)
    crl.reload()
    assert crl.is_revoked(serial)


def test_a_crl_of_another_ca_is_ignored(tmp_path: Path) -> None:
    pki, serial = make(tmp_path)
    pki.revoke("agency/police")
    crl = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=0)
    other = Pki(tmp_path / "other")
    other.create_ca("juki.mie")
    shutil.copy(other.crl_path, pki.crl_path)
    crl.reload()
    assert crl.is_revoked(serial)
