"""SPEC §4.4 with real processes: the national server's witness cosigns the prefectural server's checkpoints,
the auditor fetches the witnessed checkpoint and proofs over mTLS and checks them with the public keys
only, and a server whose trail was rolled back is refused by the witness and raises the alert metric.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, witness_pb2, witness_pb2_grpc

from clients.channel import error_details, secure_channel
from server.audit import verify
from server.audit.keys import AuditorKeys, load_witness_public
from server.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from server.audit.note import Note, verify_cosignature, verify_note
from server.audit.verify import Witnessed
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.test_metrics_endpoint import scrape

ORIGIN = "juki.mie/audit/prefecture"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    server = make_server(
        tmp_path_factory.mktemp("witnessing"),
        pki_dir,
        seeded=20,
        elsewhere=5,
        audit_checkpoint_interval=0.2,
        audit_heartbeat_interval=0.5,
    )
    server.start()
    yield server
    server.stop_all()


def channel(server: Server, identity: str, target: str) -> grpc.Channel:
    return secure_channel(Pki(server.settings.pki_path), identity, target)


def witness_stub(server: Server, identity: str = "auditor/auditor-01") -> Any:
    return witness_pb2_grpc.WitnessStub(channel(server, identity, server.settings.national_target))  # type: ignore[no-untyped-call]


def admin_stub(server: Server, identity: str = "auditor/auditor-01") -> Any:
    return admin_pb2_grpc.AdminStub(channel(server, identity, server.settings.prefecture_target))  # type: ignore[no-untyped-call]


def calls(server: Server, n: int) -> None:
    stub = server.stub("monitor/monitor-01")
    for _ in range(n):
        stub.Ping(prefecture_pb2.PingRequest(), timeout=5)


def witnessed(server: Server, at_least: int) -> str:
    """The witness's newest checkpoint of the prefectural trail, once it covers `at_least` entries."""
    stub = witness_stub(server)
    deadline = time.monotonic() + 15
    while True:
        try:
            note = str(
                stub.GetCheckpoint(witness_pb2.GetCheckpointRequest(origin=ORIGIN), timeout=5).checkpoint
            )
            if Note.parse(note).checkpoint().size >= at_least:
                return note
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        assert time.monotonic() < deadline, "the prefectural trail was never witnessed"
        time.sleep(0.1)


def keys_of(server: Server) -> tuple[AuditorKeys, str, Any]:
    s = server.settings
    auditor = AuditorKeys.load(s.path(s.auditor_keys_file))
    name, witness_key = load_witness_public(s.path(s.witness_public_file))
    return auditor, name, witness_key


def test_checkpoints_are_cosigned_by_the_national_witness(srv: Server) -> None:
    calls(srv, 5)
    note = witnessed(srv, 5)
    auditor, name, witness_key = keys_of(srv)
    parsed, checkpoint = verify_note(note, ORIGIN, auditor.public_key)
    assert checkpoint.origin == ORIGIN and checkpoint.size >= 5
    assert verify_cosignature(parsed, name, witness_key) > 0


def test_the_auditor_gets_proofs_that_verify_with_the_public_key_only(srv: Server) -> None:
    calls(srv, 3)
    witnessed(srv, 8)
    auditor, _, _ = keys_of(srv)
    stub = admin_stub(srv)
    proof = stub.InclusionProof(admin_pb2.InclusionProofRequest(seq=2), timeout=5)
    _, older = verify_note(proof.checkpoint, ORIGIN, auditor.public_key)
    assert proof.leaf_index == 1 and proof.tree_size == older.size >= 8
    verify_inclusion(1, older.size, leaf_hash(proof.entry.encode()), list(proof.hashes), older.root)
    assert '"seq":2,' in proof.entry
    calls(srv, 3)
    witnessed(srv, older.size + 3)
    between = stub.ConsistencyProof(admin_pb2.ConsistencyProofRequest(first=older.size), timeout=5)
    _, first = verify_note(between.first_checkpoint, ORIGIN, auditor.public_key)
    _, second = verify_note(between.second_checkpoint, ORIGIN, auditor.public_key)
    assert first == older and second.size > first.size
    verify_consistency(first.size, second.size, first.root, second.root, list(between.hashes))


def test_proofs_are_for_the_auditor_only_and_bad_requests_name_the_field(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(srv, "admin/admin-01").InclusionProof(admin_pb2.InclusionProofRequest(seq=1), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "seq" not in (info.value.details() or "") and not error_details(info.value)[0]
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(srv).InclusionProof(admin_pb2.InclusionProofRequest(seq=0, trail="../x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in error_details(info.value)[0]} == {"seq", "trail"}
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(srv).InclusionProof(admin_pb2.InclusionProofRequest(seq=10**9), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:  # only the record servers submit checkpoints
        witness_stub(srv, "agency/police").AddCheckpoint(witness_pb2.AddCheckpointRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        witness_stub(srv, "prefectural-server/24").AddCheckpoint(
            witness_pb2.AddCheckpointRequest(checkpoint="not a note", consistency_proof=[b"x"]), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in error_details(info.value)[0]} == {"checkpoint", "consistency_proof"}


def test_juki_audit_verify_on_a_running_server(srv: Server) -> None:
    """While the server writes, the entries of the last checkpoint intervals are not witnessed yet: with
    --live they are no failure; the national trail, witnessed by the national server itself, verifies too."""
    import subprocess
    import sys

    calls(srv, 3)
    witnessed(srv, 1)
    for server in ("prefecture", "national"):
        done = subprocess.run(
            [sys.executable, "-m", "clients", "--config", str(srv.config), "audit", "verify", "--live",
             "--server", server],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK: " in done.stdout and "witnessed size" in done.stdout


def _refusals(server: Server) -> float:
    _, text = scrape(server, "monitor/monitor-01")
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("juki_audit_witness_refusals_total")
    )


def test_a_rolled_back_trail_is_refused_by_the_witness_and_raises_the_alert_metric(srv: Server) -> None:
    audit_dir = srv.settings.path(srv.settings.audit_dir)
    calls(srv, 2)
    assert srv.stop() == 0
    copy = audit_dir.with_name("audit-copy")
    shutil.copytree(audit_dir, copy)  # an older copy of the trail
    srv.start()
    calls(srv, 10)
    size = Note.parse(witnessed(srv, 1)).checkpoint().size
    assert srv.stop() == 0
    note = witnessed(srv, size)
    auditor, name, witness_key = keys_of(srv)
    held = Witnessed(note, name, witness_key)
    assert verify(audit_dir, auditor.public_key, witnessed=held).ok  # stopped: every entry witnessed
    shutil.rmtree(audit_dir)
    shutil.move(copy, audit_dir)  # rolled back to the older copy
    report = verify(
        audit_dir, auditor.public_key, witnessed=Witnessed(witnessed(srv, size), name, witness_key)
    )
    assert {p.kind for p in report.problems} >= {"witness_truncated"}
    srv.start()
    calls(srv, 1)
    deadline = time.monotonic() + 15
    while _refusals(srv) < 1:
        assert time.monotonic() < deadline, "the witness never refused the rolled-back trail"
        time.sleep(0.1)
    assert Note.parse(witnessed(srv, 1)).checkpoint().size >= size  # the witness kept what it had
