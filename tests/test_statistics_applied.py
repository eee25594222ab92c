"""Issue 14: Statistics (住基法 30条の15) count the updates that were applied, never their replays."""

from __future__ import annotations

from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from tests.conftest import Server
from tests.notices import Municipality, fresh_resident
from tests.test_audit_calls import entries

P = prefecture_pb2
TOWN = "244724"  # 南伊勢町: no other test of this module sends its notices


def updates_counted(server: Server, town: str = TOWN) -> int:
    """The month's Statistics count of updates applied for `town` (asked as the auditor)."""
    month = entries(server)[-1]["time"][:7]
    channel = secure_channel(
        Pki(server.settings.pki_path), "auditor/auditor-01", server.settings.prefecture_target
    )
    try:
        stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        stats = stub.Statistics(admin_pb2.StatisticsRequest(month=month), timeout=10)
    finally:
        channel.close()
    return int({c.key: c.count for c in stats.updates_by_municipality}.get(town, 0))


def test_replays_are_not_counted_as_updates(server: Server) -> None:
    town = Municipality(TOWN)
    stub = server.stub(f"municipal-cs/{TOWN}")
    code, number = fresh_resident()
    first = [town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number)]
    reply = stub.ApplyUpdate(P.ApplyUpdateRequest(notice=first[0]), timeout=10)
    assert not reply.replayed
    for _ in range(3):  # the CS did not hear the answer and sends the same notice again
        assert stub.ApplyUpdate(P.ApplyUpdateRequest(notice=first[0]), timeout=10).replayed
    assert updates_counted(server) == 1

    code, number = fresh_resident()
    second = town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number)
    stream = [P.ApplyUpdateRequest(notice=n) for n in (first[0], second, second)]
    response = stub.ApplyUpdates(iter(stream), timeout=10)
    assert response.replayed_count == 2
    assert updates_counted(server) == 2, "a stream counts only the notice it applied"
