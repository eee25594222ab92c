"""Issue 12 item 6: one change cannot stall the prefecture's propagation (real processes on loopback).

The relay bounds its batches in bytes as well as in count (below the national server's receive cap); a
change the national server refuses for good is set aside (its own table, `juki_outbox_set_aside`, `juki
outbox status`), the later changes of its municipality are held behind it (the national server takes a
municipality's sequence numbers in order), and every other municipality's changes keep flowing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from juki.v1 import national_pb2, national_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.app import open_store
from server.identity.credentials import PeerChannel
from server.identity.pki import Pki
from server.propagation.relay import OutboxRelay
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_metrics_endpoint import scrape

P = prefecture_pb2
R = records_pb2
CAP = 16 << 10  # every server's receive cap here: a batch of the relay's default 500 changes is ~120 KiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("aside"), pki_dir, max_message_bytes=CAP, relay_idle_poll=0.2)
    srv.start()
    yield srv
    srv.stop_all()


def _births(town: Municipality, n: int) -> list[P.ChangeNotice]:
    notices = []
    for _ in range(n):
        code, number = fresh_resident()
        notices.append(town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2024-05-01"))
    return notices


def _apply(server: Server, town: str, notices: list[P.ChangeNotice]) -> None:
    stub = server.stub(f"municipal-cs/{town}")
    response = stub.ApplyUpdates(iter([P.ApplyUpdateRequest(notice=n) for n in notices]), timeout=30)
    assert response.last_applied_sequence == notices[-1].sequence


def _national_last(server: Server, stream: str) -> int:
    reader = server.open_national_reader()
    try:
        with reader.reader() as tx:
            return tx.last_sequence(stream)
    finally:
        reader.env.close()


def _outbox(server: Server) -> tuple[int, tuple[int, int]]:
    reader = server.open_reader()
    try:
        with reader.reader() as tx:
            return tx.outbox_depth(), tx.aside_counts()
    finally:
        reader.env.close()


def _until(check: Any, what: str) -> None:
    for _ in range(300):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(what)


def test_a_backlog_larger_than_the_peers_message_cap_is_delivered_in_batches_bounded_in_bytes(
    server: Server,
) -> None:
    town = Municipality("242071")  # 鈴鹿市
    notices = _births(town, 300)
    assert sum(len(n.SerializeToString()) for n in notices) > 2 * CAP
    _apply(server, "242071", notices)
    _until(lambda: _national_last(server, "242071") == 300, "the backlog did not reach the national server")
    assert _outbox(server) == (0, (0, 0))


def test_a_change_refused_for_good_is_set_aside_and_the_other_municipalities_keep_flowing(
    server: Server,
) -> None:
    stuck, flowing = Municipality("242080"), Municipality("242098")  # 名張市, 尾鷲市
    # The national server already holds 名張市's sequence 1 with other content: the prefecture's is refused
    # as a conflict, for good.
    code, number = fresh_resident()
    other = Municipality("242080").notice(
        code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2024-05-01"
    )
    channel = secure_channel(
        Pki(server.settings.pki_path), "prefectural-server/24", server.settings.national_target
    )
    national: Any = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
    national.NotifyUpdates(
        national_pb2.NotifyUpdatesRequest(
            prefecture_code="24",
            changes=[national_pb2.PropagatedChange(file=national_pb2.CHANGE_FILE_RESIDENT, notice=other)],
        ),
        timeout=10,
    )
    channel.close()
    # one stream interleaving both towns' notices, so that they share the relay's batches
    stuck_notices, flowing_notices = _births(stuck, 3), _births(flowing, 3)
    _apply(server, "242080", stuck_notices)
    _apply(server, "242098", flowing_notices)
    _until(lambda: _national_last(server, "242098") == 3, "the other municipality's changes were stalled")
    _until(lambda: _outbox(server) == (0, (1, 2)), "the refused change was not set aside")
    assert _national_last(server, "242080") == 1  # only what it held before

    status = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(server.config), "outbox", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "set aside (refused)   1" in status.stdout
    assert "held behind them      2" in status.stdout
    assert "242080 sequence 1  refused  FAILED_PRECONDITION:CONFLICTING_REPLAY" in status.stdout
    assert "242080 sequence 3  held" in status.stdout
    for notice in stuck_notices:  # no personal data in what the status shows
        assert notice.resident_code not in status.stdout and notice.my_number not in status.stdout

    http_status, text = scrape(server, "monitor/monitor-01")
    assert http_status == 200
    assert 'juki_outbox_set_aside{state="refused"} 1.0' in text
    assert 'juki_outbox_set_aside{state="held"} 2.0' in text

    # the flow goes on for the others while 名張市 waits
    more = _births(flowing, 2)
    _apply(server, "242098", more)
    _until(lambda: _national_last(server, "242098") == 5, "later changes of the others were stalled")
    # requeued, the stream is tried again in its order: still refused, set aside again (nothing lost)
    requeue = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(server.config), "outbox", "requeue", "242080"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert requeue.returncode == 0, requeue.stderr
    assert "3 change(s) of 242080 back in the outbox" in requeue.stdout
    _until(lambda: _outbox(server) == (0, (1, 2)), "the requeued stream was not set aside again")


def test_a_refusal_by_the_peer_that_is_not_for_good_is_retried(server: Server) -> None:
    """A national server that is down is waited for: nothing is set aside."""
    town = Municipality("242101")  # 亀山市
    server.stop_national()
    try:
        _apply(server, "242101", _births(town, 2))
        time.sleep(1.0)
        assert _outbox(server)[1] == (1, 2)  # what the previous test set aside, nothing more
    finally:
        server.start_national()
    _until(lambda: _national_last(server, "242101") == 2, "not delivered after the national server came back")


# --- the relay in this process, over a real store, against a real national server with a small cap ------
def _queue(store: Any, notices: list[P.ChangeNotice]) -> None:
    def put(tx: Any) -> None:
        for notice in notices:
            change = national_pb2.PropagatedChange(
                file=national_pb2.CHANGE_FILE_RESIDENT,
                notice=notice,
                applied_at="2026-11-01T00:00:00.000+09:00",
            )
            tx.enqueue_outbox(change.SerializeToString(), int(time.time() * 1000))

    store.apply_sync(put)


def _settle(store: Any, relay: OutboxRelay, aside: tuple[int, int]) -> None:
    """Run the relay until the outbox is empty and `aside` (refused, held) changes are set aside."""

    async def until_settled() -> None:
        task = asyncio.create_task(relay.run())
        try:
            for _ in range(300):
                with store.reader() as tx:
                    if tx.outbox_depth() == 0 and tx.aside_counts() == aside:
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("the outbox did not settle")
        finally:
            relay.stop()
            await task

    asyncio.run(until_settled())


def _relay(srv: Server, store: Any, **options: Any) -> OutboxRelay:
    pki = Pki(srv.settings.pki_path)
    return OutboxRelay(
        store,
        PeerChannel(pki, "prefectural-server/24", srv.settings.national_target, peer="national"),
        prefecture_code="24",
        backoff_max=0.2,
        idle_poll=0.1,
        **options,
    )


@pytest.mark.parametrize(
    ("max_change_bytes", "reason"), [(1 << 20, "RESOURCE_EXHAUSTED"), (2048, "TOO_LARGE")]
)
def test_a_change_larger_than_the_peer_takes_is_set_aside_and_the_rest_flow(
    tmp_path: Path, pki_dir: Path, max_change_bytes: int, reason: str
) -> None:
    """The national server's cap is 4 KiB: a 6 KiB change is refused by it (RESOURCE_EXHAUSTED), or not
    even sent when the relay knows it is too large; the small changes around it are delivered."""
    srv = make_server(tmp_path / "srv", pki_dir, seeded=0, elsewhere=0, max_message_bytes=4096)
    srv.start_national()
    store = open_store(srv.settings)
    try:
        small, big_town = Municipality("242110"), Municipality("242128")  # 鳥羽市, 熊野市
        big = _births(big_town, 2)
        big[0].four_info.address = "三重県熊野市" + "井戸町" * 700  # 6 KiB: more than the peer takes
        _queue(store, [*_births(small, 10), big[0], big[1], *_births(small, 10)])
        _settle(store, _relay(srv, store, batch_bytes=2048, max_change_bytes=max_change_bytes), (1, 1))
        with store.reader() as tx:
            aside = tx.aside_changes(10)
        assert [(a.stream, a.held, a.reason) for a in aside] == [
            ("242128", False, reason),
            ("242128", True, "HELD_BEHIND_SET_ASIDE"),
        ]
        assert _national_last(srv, "242110") == 20 and _national_last(srv, "242128") == 0
    finally:
        store.env.close()
        srv.stop_national()


def test_a_change_refused_for_the_identity_it_came_with_is_set_aside(tmp_path: Path, pki_dir: Path) -> None:
    """A change of another prefecture's municipality (名古屋市) is refused for this server's identity
    (PERMISSION_DENIED, the whole request): narrowed to that change, set aside; the others are delivered."""
    srv = make_server(tmp_path / "srv", pki_dir, seeded=0, elsewhere=0)
    srv.start_national()
    store = open_store(srv.settings)
    try:
        mie = Municipality("242144")  # いなべ市
        _queue(store, [*_births(mie, 5), *_births(Municipality("231002"), 1), *_births(mie, 5)])
        _settle(store, _relay(srv, store), (1, 0))
        with store.reader() as tx:
            aside = tx.aside_changes(10)
        assert [(a.stream, a.reason) for a in aside] == [("231002", "PERMISSION_DENIED:OTHER_PREFECTURE")]
        assert _national_last(srv, "242144") == 10
    finally:
        store.env.close()
        srv.stop_national()
