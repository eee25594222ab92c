"""A call refused for its certificate is recorded with the identity the certificate claims and its serial
(keys `claimed` and `serial`, present only when set): such entries hash, chain, verify and are found by the
readers like every other; entries without them stay byte for byte what they were."""

from __future__ import annotations

import json
from pathlib import Path

from server.audit.entries import AuditEvent, canonical, encode_entry, parse_entry
from server.audit.keys import AuditKeys
from server.audit.query import query
from server.audit.trail import AuditTrail
from server.audit.verify import verify

POLICE = "spiffe://juki.mie/agency/police"
LOOKUP = "/juki.v1.Prefecture/Lookup"


def refused(claimed: str = POLICE, serial: str = "3f2a") -> AuditEvent:
    return AuditEvent("", "", LOOKUP, "p", "UNAUTHENTICATED", claimed=claimed, serial=serial)


def test_claimed_entry_is_canonical_and_parses() -> None:
    digest, line = encode_entry(refused('a"b\\c'), 3, "2025-04-01T09:00:00.000000+09:00", "ab" * 32)
    entry = json.loads(line)
    assert line == canonical(entry) + "\n" and entry["hash"] == digest
    assert parse_entry(line.encode()) == entry
    assert (entry["claimed"], entry["serial"], entry["caller"]) == ('a"b\\c', "3f2a", "")


def test_entries_without_a_claim_have_no_new_keys() -> None:
    _, line = encode_entry(AuditEvent("c", "r", LOOKUP, "p", "OK"), 1, "t", "00" * 32)
    assert "claimed" not in json.loads(line) and "serial" not in json.loads(line)


def test_unknown_keys_are_still_no_entry() -> None:
    _, line = encode_entry(refused(), 1, "t", "00" * 32)
    entry = json.loads(line)
    assert parse_entry((canonical({**entry, "extra": ""}) + "\n").encode()) is None
    assert parse_entry((canonical({**entry, "serial": 7}) + "\n").encode()) is None


def test_a_trail_with_claims_verifies_and_is_queried(tmp_path: Path) -> None:
    keys = AuditKeys.load_or_create(tmp_path / "keys.json")
    directory = tmp_path / "audit"
    with AuditTrail.open(directory, keys) as trail:
        trail.append(AuditEvent(POLICE, "agency", LOOKUP, "p", "OK"))
        trail.append(refused())
        trail.append(AuditEvent(POLICE, "agency", LOOKUP, "p", "OK"))
        trail.checkpoint()
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.entries == 3, [str(p) for p in report.problems]
    (entry,) = query(directory, outcome="UNAUTHENTICATED")
    assert (entry["claimed"], entry["serial"]) == (POLICE, "3f2a")
