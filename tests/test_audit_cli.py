"""`juki audit verify|query|report` on a real trail: each tampering fails verification and is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from server.audit import AuditEvent, AuditKeys, AuditTrail

CODES = ["10000000001", "10000000002", "10000000003"]


def build_trail(directory: Path, keys: AuditKeys, entries: int = 12) -> None:
    with AuditTrail.open(directory, keys) as trail:
        for i in range(entries):
            code = CODES[i % len(CODES)]
            trail.append(
                AuditEvent(
                    caller="spiffe://juki.mie/agency/police"
                    if i % 2
                    else "spiffe://juki.mie/operator/op-0001",
                    role="agency" if i % 2 else "operator",
                    method="/juki.v1.Prefecture/Provide" if i % 2 else "/juki.v1.Prefecture/Search",
                    purpose="bt6-police-driving-licence" if i % 2 else "identity-check",
                    outcome="OK" if i % 5 else "PERMISSION_DENIED",
                    subjects=(trail.subject_hash(code),),
                    items=("resident_code", "name"),
                    count=1,
                    kind="provision" if i % 2 else "",
                )
            )


@pytest.fixture()
def trail(tmp_path: Path) -> tuple[Path, Path]:
    keys = AuditKeys.generate()
    directory = tmp_path / "trail"
    build_trail(directory, keys)
    auditor = tmp_path / "auditor.json"
    keys.write_auditor_keys(auditor)
    return directory, auditor


def juki_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients", "audit", *args], capture_output=True, text=True, timeout=60
    )


def segment(directory: Path) -> Path:
    return next(directory.glob("trail-*.log"))


def edit_byte(directory: Path) -> None:
    path = segment(directory)
    data = bytearray(path.read_bytes())
    at = data.index(b'"purpose":"identity-check"', len(data) // 2) + 12
    data[at] = ord("X")
    path.write_bytes(bytes(data))


def delete_line(directory: Path) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + lines[6:]))


def swap_lines(directory: Path) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_bytes(b"".join(lines))


def truncate_tail(directory: Path) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))


def forge_rechained(directory: Path) -> None:
    """Someone with write access but without the signing key rebuilds a consistent trail."""
    shutil.rmtree(directory)
    build_trail(directory, AuditKeys.generate())


@pytest.mark.parametrize(
    ("tamper", "kinds"),
    [
        (edit_byte, {"edited"}),
        (delete_line, {"deleted", "chain_break"}),
        (swap_lines, {"reordered", "chain_break"}),
        (truncate_tail, {"truncated"}),
        (forge_rechained, {"checkpoint_signature", "checkpoint_mismatch"}),
    ],
)
def test_verify_fails_and_names_each_tampering(
    trail: tuple[Path, Path], tamper: Callable[[Path], None], kinds: set[str]
) -> None:
    directory, auditor = trail
    assert (
        juki_audit("verify", "--no-witness", "--dir", str(directory), "--keys", str(auditor)).returncode == 0
    )
    tamper(directory)
    done = juki_audit("verify", "--no-witness", "--dir", str(directory), "--keys", str(auditor))
    assert done.returncode == 1
    named = {
        line.split(":", 1)[0] for line in done.stdout.splitlines() if line and not line.startswith("FAILED")
    }
    assert named & kinds, done.stdout


def test_the_untouched_trail_verifies(trail: tuple[Path, Path]) -> None:
    directory, auditor = trail
    done = juki_audit("verify", "--no-witness", "--dir", str(directory), "--keys", str(auditor))
    assert done.returncode == 0 and done.stdout.startswith("OK: 12 entries in 1 segment(s)")


def test_query_by_subject_hashes_the_code_the_auditor_types(trail: tuple[Path, Path]) -> None:
    directory, auditor = trail
    done = juki_audit("query", "--dir", str(directory), "--keys", str(auditor), "--subject", CODES[0])
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(found) == 4  # entries 0, 3, 6, 9
    assert CODES[0] not in done.stdout and CODES[0] not in done.stderr
    refused = juki_audit(
        "query", "--dir", str(directory), "--keys", str(auditor), "--outcome", "PERMISSION_DENIED"
    )
    assert len(refused.stdout.splitlines()) == 3  # entries 0, 5, 10
    by_operator = juki_audit(
        "query", "--dir", str(directory), "--keys", str(auditor), "--operator", "op-0001"
    )
    assert len(by_operator.stdout.splitlines()) == 6


def test_monthly_report_as_markdown_and_json(trail: tuple[Path, Path], tmp_path: Path) -> None:
    directory, _ = trail
    month = json.loads(segment(directory).read_text().splitlines()[0])["time"][:7]
    out, data = tmp_path / "report.md", tmp_path / "report.json"
    done = juki_audit(
        "report", "--dir", str(directory), "--month", month, "--out", str(out), "--json", str(data)
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert "spiffe://juki.mie/operator/op-0001" in text
    assert json.loads(data.read_text(encoding="utf-8"))
    for code in CODES:
        assert code not in text


def test_the_fuhyo_trail_by_name_and_the_report_of_the_current_month(
    trail: tuple[Path, Path], tmp_path: Path
) -> None:
    """`--server fuhyo` reads the 附票 server's trail and keys of the settings (no --dir/--keys), and the
    monthly report defaults to the current month (the trail was written just now)."""
    directory, auditor = trail
    config = tmp_path / "juki.toml"
    config.write_text(f'fuhyo_audit_dir = "{directory}"\nfuhyo_auditor_keys_file = "{auditor}"\n')

    def juki(*args: str) -> subprocess.CompletedProcess[str]:
        return juki_audit_with(config, *args)

    by_operator = juki("query", "--server", "fuhyo", "--operator", "op-0001")
    assert by_operator.returncode == 0 and len(by_operator.stdout.splitlines()) == 6
    done = juki("verify", "--server", "fuhyo", "--no-witness")
    assert done.returncode == 0 and done.stdout.startswith("OK: 12 entries"), done.stdout + done.stderr
    report = juki("report", "--server", "fuhyo")
    assert report.returncode == 0 and "spiffe://juki.mie/operator/op-0001" in report.stdout


def juki_audit_with(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(config), "audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- against a witnessed checkpoint (--checkpoint FILE): each way of shortening or rewriting is named ------


def _witnessed_trail(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A trail of 12 entries closed cleanly, its shutdown checkpoint cosigned by a witness: (trail, auditor
    keys, witnessed note file, witness public key file)."""
    from server.audit.keys import WitnessKey
    from server.audit.witness import Witness

    keys = AuditKeys.generate()
    directory = tmp_path / "trail"
    build_trail(directory, keys)
    auditor = tmp_path / "auditor.json"
    keys.write_auditor_keys(auditor)
    witness_key = WitnessKey.load_or_create(tmp_path / "witness.json", "juki.mie/witness/test")
    witness_key.write_public(tmp_path / "witness.pub.json")
    witness = Witness(
        witness_key.name, witness_key.signing_key, tmp_path / "state", lambda _: keys.public_key
    )
    last = json.loads((directory / "checkpoints.log").read_text().splitlines()[-1])
    witness.add_checkpoint(0, [], last["note"])
    held = witness.held(last["note"].split("\n")[0])
    assert held is not None
    note = tmp_path / "witnessed.note"
    note.write_text(held.note, encoding="utf-8")
    return directory, auditor, note, tmp_path / "witness.pub.json"


def _cut_checkpoints(directory: Path, keep: int) -> None:
    path = directory / "checkpoints.log"
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:keep]))


def _rehash(line: bytes, prev: str, **changes: object) -> bytes:
    from server.audit.entries import canonical, sha256_hex

    entry = {k: v for k, v in json.loads(line).items() if k != "hash"}
    entry.update(changes, prev=prev)
    return (canonical({**entry, "hash": sha256_hex(canonical(entry).encode())}) + "\n").encode()


def cut_tail_and_checkpoint(directory: Path) -> None:
    truncate_tail(directory)
    _cut_checkpoints(directory, 1)


def delete_last_checkpoint(directory: Path) -> None:
    _cut_checkpoints(directory, 1)


def older_checkpoints_and_cut_trail(directory: Path) -> None:
    _cut_checkpoints(directory, 1)
    path = segment(directory)
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]))


def wipe(directory: Path) -> None:
    segment(directory).unlink()
    _cut_checkpoints(directory, 1)


def edit_and_rehash_the_last(directory: Path) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    prev = json.loads(lines[-2])["hash"]
    lines[-1] = _rehash(lines[-1], prev, caller="spiffe://juki.mie/agency/education")
    path.write_bytes(b"".join(lines))
    _cut_checkpoints(directory, 1)


def append_forgery(directory: Path) -> None:
    path = segment(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    path.write_bytes(b"".join([*lines, _rehash(lines[-1], last["hash"], seq=last["seq"] + 1)]))


@pytest.mark.parametrize(
    ("tamper", "kind", "words"),
    [
        (cut_tail_and_checkpoint, "witness_truncated", "seq 11–12 missing"),
        (delete_last_checkpoint, "witness_checkpoint_deleted", "last checkpoint lines were deleted"),
        (older_checkpoints_and_cut_trail, "witness_truncated", "seq 4–12 missing"),
        (wipe, "witness_truncated", "no entry (wiped)"),
        (edit_and_rehash_the_last, "witness_mismatch", "first at trail-"),
        (append_forgery, "unwitnessed", "seq 13–13 come after the witnessed checkpoint"),
    ],
)
def test_verify_against_a_witnessed_checkpoint_names_each_tampering(
    tmp_path: Path, tamper: Callable[[Path], None], kind: str, words: str
) -> None:
    directory, auditor, note, witness_pub = _witnessed_trail(tmp_path)
    witnessed = ("--checkpoint", str(note), "--witness-key", str(witness_pub))
    done = juki_audit("verify", "--dir", str(directory), "--keys", str(auditor), *witnessed)
    assert done.returncode == 0, done.stdout + done.stderr
    tamper(directory)
    alone = juki_audit("verify", "--no-witness", "--dir", str(directory), "--keys", str(auditor))
    assert alone.returncode == 0, alone.stdout  # the directory alone cannot tell (issue 15)
    done = juki_audit("verify", "--dir", str(directory), "--keys", str(auditor), *witnessed)
    assert done.returncode == 1
    named = [line for line in done.stdout.splitlines() if line.startswith(f"{kind}: ")]
    assert named and words in named[0], done.stdout
