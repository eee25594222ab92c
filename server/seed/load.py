"""Streams a synthetic population into the resident store in large write transactions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from server.seed.population import SeedEntry
from server.storage.residents import ResidentStore

BATCH = 20_000


@dataclass(frozen=True)
class LoadReport:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def load(
    store: ResidentStore,
    entries: Iterable[SeedEntry],
    *,
    batch: int = BATCH,
    progress: Callable[[int], object] | None = None,
) -> LoadReport:
    """Write every entry (history first, then the current version); one durable transaction per batch."""
    started = time.perf_counter()
    total = 0
    chunk: list[SeedEntry] = []

    def write(txn: Any) -> None:
        tx = store.bind(txn)
        for entry in chunk:
            for old in entry.history:
                tx.add_history(old, old.my_number)
            tx.put_record(entry.record, entry.record.my_number)

    for entry in entries:
        chunk.append(entry)
        if len(chunk) >= batch:
            store.env.write_sync(write)
            total += len(chunk)
            if progress:
                progress(len(chunk))
            chunk = []
    if chunk:
        store.env.write_sync(write)
        total += len(chunk)
        if progress:
            progress(len(chunk))
    return LoadReport(total, time.perf_counter() - started)
