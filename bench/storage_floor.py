"""The storage floor: the same records read in this process, no RPC at all.

`lmdb_read` is a read transaction and the record's parse (what the server's Lookup starts with);
`inprocess_lookup` adds what the handler does after it — unseal the My Number, build the 8-item view,
serialize the response — so the gap between it and the RPC is the transport and the chain.
"""

from __future__ import annotations

import time
from typing import Any

from juki.v1 import prefecture_pb2

from bench.driver import new_histogram
from bench.stats import summarise
from server.app import open_store
from server.domain.minimise import resident_view
from server.settings import Settings


def storage_floor(settings: Settings, codes: list[str], *, seconds: float) -> list[dict[str, Any]]:
    store = open_store(settings)
    rows = []
    try:
        for name, full in (("lmdb_read", False), ("inprocess_lookup", True)):
            histogram = new_histogram()
            calls, i = 0, 0
            started = time.perf_counter()
            deadline = started + seconds
            while True:
                code = codes[i % len(codes)]
                i += 1
                t0 = time.perf_counter_ns()
                with store.reader() as tx:
                    record = tx.get(code)
                    number = tx.my_number(code) if full and record is not None else ""
                if full and record is not None:
                    view = resident_view(record, number)
                    prefecture_pb2.LookupResponse(record=view).SerializeToString()
                histogram.record_value(max(1, time.perf_counter_ns() - t0))
                calls += 1
                if calls % 256 == 0 and time.perf_counter() >= deadline:
                    break
            elapsed = time.perf_counter() - started
            rows.append({"scenario": name, "in_flight": 1, **summarise(histogram, calls, elapsed)})
    finally:
        store.env.close()
    return rows
