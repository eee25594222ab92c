"""Issue 12 item 8: no call holds the event loop for more than a few milliseconds.

Scans (Statistics over the audit trail, Reconcile's digests, 4情報 finds, and searches past the event
loop's budget of index entries) run in worker threads, so LMDB readers in threads must never make a reader
on the event loop wait; a Reconcile's ranges are capped. (Ping p99 while each runs, before and after:
`python -m bench.loop_stall`.)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2

from clients.channel import error_details
from server.storage.lmdbenv import LmdbEnv
from tests.conftest import Server

P = prefecture_pb2


def test_a_long_read_in_a_thread_does_not_make_other_readers_wait(tmp_path: Path) -> None:
    env = LmdbEnv(tmp_path / "env", ["records"], map_size=1 << 20)
    env.write_sync(lambda txn: txn.put(b"k", b"v", db=env.dbs["records"]))
    scanning, release = threading.Event(), threading.Event()

    def long_scan() -> None:
        with env.read():
            scanning.set()
            release.wait(10)

    scanner = threading.Thread(target=long_scan)
    scanner.start()
    try:
        assert scanning.wait(5)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(_read(env)))
        reader.start()
        reader.join(5)
        assert got == [b"v"], "a reader waited for another reader's transaction"
    finally:
        release.set()
        scanner.join(5)
        env.close()


def _read(env: LmdbEnv) -> bytes:
    with env.read() as txn:
        return bytes(txn.get(b"k", db=env.dbs["records"]))


def test_a_reconcile_with_too_many_ranges_is_refused(server: Server) -> None:
    ranges = P.ReconcileRanges(
        municipality_code="242012",
        prefix_length=6,
        ranges=[P.RangeDigest(prefix=f"{i:06d}", digest=bytes(32), count=1) for i in range(10_001)],
    )
    stub = server.stub("municipal-cs/242012")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Reconcile(iter([P.ReconcileRequest(ranges=ranges)]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(info.value)[0]] == ["ranges.ranges"]
