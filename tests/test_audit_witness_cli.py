"""`juki witness serve` (a witness on its own), `juki audit verify` against it, `juki audit prove` and
`juki audit check-proof`: real processes, real certificates, the command line as an auditor types it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from juki.v1 import prefecture_pb2, witness_pb2, witness_pb2_grpc

from clients.channel import secure_channel
from server.audit.entries import list_segments
from server.identity.pki import Pki
from tests.conftest import Server, free_port, make_server

ORIGIN = "juki.mie/audit/prefecture"


def juki(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(server.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[tuple[Server, str, Path]]:
    """A prefectural server (no national peer) whose checkpoints go to a standalone witness; stopped after
    a few calls, so that every entry is witnessed."""
    port = free_port()
    srv = make_server(
        tmp_path_factory.mktemp("witness-cli"),
        pki_dir,
        seeded=10,
        with_national=False,
        audit_extra_witness=f"127.0.0.1:{port}",
        audit_checkpoint_interval=0.2,
    )
    witness_dir = srv.settings.home / "witness"
    log = (srv.settings.home / "witness.log").open("wb")
    command = ["witness", "serve", "--port", str(port), "--dir", str(witness_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients", "--config", str(srv.config), *command],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while b"ready" not in (srv.settings.home / "witness.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, "the witness did not start"
            time.sleep(0.05)
        srv.start()
        stub = srv.stub("monitor/monitor-01")
        for _ in range(6):
            stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
        assert srv.stop() == 0
        yield srv, f"127.0.0.1:{port}", witness_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_standalone_witness_cosigned_the_shutdown_checkpoint(setup: tuple[Server, str, Path]) -> None:
    srv, target, _ = setup
    channel = secure_channel(Pki(srv.settings.pki_path), "auditor/auditor-01", target)
    stub = witness_pb2_grpc.WitnessStub(channel)  # type: ignore[no-untyped-call]
    note = stub.GetCheckpoint(witness_pb2.GetCheckpointRequest(origin=ORIGIN), timeout=5).checkpoint
    last = json.loads(
        (srv.settings.path(srv.settings.audit_dir) / "checkpoints.log").read_text().splitlines()[-1]
    )
    assert last["kind"] == "shutdown" and note.startswith(last["note"])  # the same note, plus the cosignature
    assert "\u2014 juki.mie/witness/standalone " in note
    with pytest.raises(grpc.RpcError) as info:
        stub.GetCheckpoint(witness_pb2.GetCheckpointRequest(origin="juki.mie/audit/nowhere"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def test_verify_against_the_witness_and_a_cut_tail_named(
    setup: tuple[Server, str, Path], tmp_path: Path
) -> None:
    srv, target, witness_dir = setup
    key = str(witness_dir / "witness.pub.json")
    done = juki(srv, "audit", "verify", "--witness", target, "--witness-key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: " in done.stdout and "witnessed size" in done.stdout
    audit_dir = srv.settings.path(srv.settings.audit_dir)
    copy = tmp_path / "copy"
    shutil.copytree(audit_dir, copy)
    segment = copy / list_segments(copy)[-1]
    segment.write_bytes(b"".join(segment.read_bytes().splitlines(keepends=True)[:-2]))
    checkpoints = copy / "checkpoints.log"
    checkpoints.write_bytes(b"".join(checkpoints.read_bytes().splitlines(keepends=True)[:1]))
    alone = juki(srv, "audit", "verify", "--dir", str(copy), "--no-witness")
    assert alone.returncode == 0  # the directory alone cannot tell
    done = juki(srv, "audit", "verify", "--dir", str(copy), "--witness", target, "--witness-key", key)
    assert done.returncode == 1
    assert (
        "witness_truncated" in done.stdout and "missing (tail cut, trail rolled back or wiped)" in done.stdout
    )
    note = tmp_path / "witnessed.note"
    channel = secure_channel(Pki(srv.settings.pki_path), "auditor/auditor-01", target)
    stub = witness_pb2_grpc.WitnessStub(channel)  # type: ignore[no-untyped-call]
    note.write_text(stub.GetCheckpoint(witness_pb2.GetCheckpointRequest(origin=ORIGIN), timeout=5).checkpoint)
    channel.close()
    done = juki(srv, "audit", "verify", "--dir", str(copy), "--checkpoint", str(note), "--witness-key", key)
    assert done.returncode == 1 and "witness_truncated" in done.stdout


def test_prove_and_check_a_proof_with_the_public_key_alone(
    setup: tuple[Server, str, Path], tmp_path: Path
) -> None:
    srv, _, witness_dir = setup
    proof = tmp_path / "inclusion.json"
    done = juki(srv, "audit", "prove", "inclusion", "--seq", "3", "--out", str(proof))
    assert done.returncode == 0, done.stderr
    auditor = str(srv.settings.path(srv.settings.auditor_keys_file))
    done = juki(srv, "audit", "check-proof", str(proof), "--key", auditor)
    assert done.returncode == 0 and done.stdout.startswith(f"OK: entry seq 3 is in {ORIGIN}"), done.stdout
    body = json.loads(proof.read_text())
    body["entry"] = body["entry"].replace('"count":0', '"count":1')
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(body))
    done = juki(srv, "audit", "check-proof", str(forged), "--key", auditor)
    assert done.returncode == 1 and done.stdout.startswith("FAILED: inclusion proof")
    between = tmp_path / "consistency.json"
    first = json.loads(
        (srv.settings.path(srv.settings.audit_dir) / "checkpoints.log").read_text().splitlines()[1]
    )
    done = juki(srv, "audit", "prove", "consistency", "--first", str(first["seq"]), "--out", str(between))
    assert done.returncode == 0, done.stderr
    done = juki(srv, "audit", "check-proof", str(between), "--key", auditor)
    assert done.returncode == 0 and "extends its tree of size" in done.stdout, done.stdout
    with_witness = juki(
        srv,
        "audit",
        "check-proof",
        str(between),
        "--key",
        auditor,
        "--witness-key",
        str(witness_dir / "witness.pub.json"),
    )
    assert (
        with_witness.returncode == 1 and "not cosigned" in with_witness.stdout
    )  # local notes: the log's only
