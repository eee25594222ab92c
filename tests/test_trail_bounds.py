"""Issue 12 item 5: nothing a caller types reaches the audit trail, a metric or a statistic unchecked and
unbounded. A refused call with an 8 MB purpose, request id or resident code adds an entry of a few hundred
bytes (the value recorded as <invalid>, or no subject at all); an unknown method of a 4 KB name too; the
month's Statistics answer stays small and readable."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2

from clients.channel import secure_channel
from server.audit.query import query
from server.identity.pki import Pki
from server.services.auditing import MAX_STATISTICS_COUNTS, OTHERS, bounded_counts
from tests.conftest import Server, make_server

P = prefecture_pb2
BIG = 8_000_000  # under the 8 MiB message cap
ENTRY_BOUND = 2048  # bytes one refused call may add to the trail


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("trail"), pki_dir, seeded=100, with_national=False)
    srv.start()
    yield srv
    srv.stop_all()


def trail_dir(server: Server) -> Path:
    return server.settings.path(server.settings.audit_dir)


def trail_bytes(server: Server) -> int:
    """The bytes of the trail's entries (its segments): checkpoints, tree and index files grow on their own
    schedule (every few seconds), whatever the calls carried."""
    return sum(p.stat().st_size for p in trail_dir(server).rglob("trail-*.log") if p.is_file())


def entries(server: Server) -> list[dict[str, Any]]:
    return list(query(trail_dir(server)))


def one_more_entry(server: Server, call: Callable[[], Any]) -> tuple[dict[str, Any], int]:
    """(the entry a call added, the bytes the trail grew by)."""
    before, size = len(entries(server)), trail_bytes(server)
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() != grpc.StatusCode.OK
    deadline = time.monotonic() + 10
    while len(after := entries(server)) == before:
        assert time.monotonic() < deadline, "no entry written"
        time.sleep(0.05)
    assert len(after) == before + 1
    return after[-1], trail_bytes(server) - size


REFUSED_LOOKUPS = [
    ("purpose-8MB-operator", "operator/op-0001", {"resident_code": "12345678901", "purpose": "p" * BIG}),
    ("purpose-8MB-agency", "agency/police", {"resident_code": "12345678901", "purpose": "P" * BIG}),
    ("request_id-8MB", "operator/op-0001",
     {"resident_code": "12345678901", "purpose": "identity-check", "request_id": "r" * BIG}),
    ("resident_code-8MB", "operator/op-0001", {"resident_code": "1" * BIG, "purpose": "identity-check"}),
    ("purpose-control-chars", "agency/police", {"resident_code": "12345678901", "purpose": "x\x1b[2J\n" * 9}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("identity", "fields"), [c[1:] for c in REFUSED_LOOKUPS], ids=[c[0] for c in REFUSED_LOOKUPS]
)
def test_a_refused_call_adds_a_bounded_entry_whatever_it_carried(
    server: Server, identity: str, fields: dict[str, str]
) -> None:
    stub = server.stub(identity)
    entry, grown = one_more_entry(server, lambda: stub.Lookup(P.LookupRequest(**fields), timeout=30))
    assert grown < ENTRY_BOUND
    assert entry["outcome"] in ("PERMISSION_DENIED", "INVALID_ARGUMENT")
    if len(fields["purpose"]) > 64 or "\x1b" in fields["purpose"]:
        assert entry["purpose"] == "<invalid>"
    if len(fields.get("request_id", "")) > 64:
        assert entry["request_id"] == "<invalid>"
    if len(fields["resident_code"]) != 11:
        assert entry["subjects"] in ([], ())


def test_an_unknown_method_of_a_long_name_is_recorded_bounded(server: Server) -> None:
    channel = secure_channel(
        Pki(server.settings.pki_path), "operator/op-0001", server.settings.prefecture_target
    )
    server._channels.append(channel)
    call: Any = channel.unary_unary("/juki.v1.Prefecture/" + "X" * 4000)
    entry, grown = one_more_entry(server, lambda: call(b"", timeout=10))
    assert entry["method"] == "<invalid>" and entry["outcome"] == "PERMISSION_DENIED"
    assert grown < ENTRY_BOUND
    call = channel.unary_unary("/juki.v1.Prefecture/NoSuchMethod")
    entry, _ = one_more_entry(server, lambda: call(b"", timeout=10))
    assert entry["method"] == "/juki.v1.Prefecture/NoSuchMethod"  # a method name of its form is kept


def test_the_months_statistics_stay_small_after_refusals_with_huge_purposes(server: Server) -> None:
    police = server.stub("agency/police")
    for n in range(3):
        with pytest.raises(grpc.RpcError):
            police.Lookup(
                P.LookupRequest(resident_code="12345678901", purpose=f"{n}" * 5_000_000), timeout=30
            )
    channel = secure_channel(
        Pki(server.settings.pki_path), "auditor/auditor-01", server.settings.prefecture_target
    )
    server._channels.append(channel)
    admin: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    month = time.strftime("%Y-%m", time.gmtime(time.time() + 9 * 3600))  # JST
    answer = admin.Statistics(admin_pb2.StatisticsRequest(month=month), timeout=30)
    assert answer.ByteSize() < 64 * 1024
    keys = [count.key for count in answer.provisions]
    assert "spiffe://juki.mie/agency/police <invalid> PERMISSION_DENIED" in keys
    assert all(len(key) < 200 for key in keys)


def test_a_statistics_list_holds_at_most_its_bound_and_sums_the_rest() -> None:
    counts = Counter(
        {f"spiffe://juki.mie/agency/a{n:05d} p OK": 1 for n in range(MAX_STATISTICS_COUNTS + 500)}
    )
    listed = bounded_counts(counts)
    assert len(listed) == MAX_STATISTICS_COUNTS
    assert listed[-1].key == OTHERS and listed[-1].count == 501
    assert sum(c.count for c in listed) == sum(counts.values())
    few = Counter({"b": 2, "a": 1})
    assert [(c.key, c.count) for c in bounded_counts(few)] == [("a", 1), ("b", 2)]
