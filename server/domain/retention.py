"""Retention (SPEC §6.4): removed persons (消除者) and their history are erased 150 years after removal.

A person's history goes with the person: the versions of a resident who is still registered are part of
their file and stay. Dead persons keep their My Number with the record until then (prefectural server).
The job logs and counts erasures, never identities.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from server.observability import metrics
from server.storage.record_file import RecordFile

log = logging.getLogger(__name__)

RETENTION_YEARS = 150
BATCH = 1000


@dataclass(frozen=True)
class Erasure:
    persons: int
    history: int


def cutoff(today: dt.date, years: int = RETENTION_YEARS) -> str:
    """The first removal date still kept on `today` (29 Feb becomes 28 Feb in a year without it)."""
    try:
        return today.replace(year=today.year - years).isoformat()
    except ValueError:
        return today.replace(year=today.year - years, day=28).isoformat()


async def erase_expired_persons(
    store: RecordFile[Any], today: dt.date, years: int = RETENTION_YEARS
) -> Erasure:
    """Erase every person removed more than `years` before `today`, in write batches of BATCH persons (on
    the store's one writer, between other writes)."""
    keep_from = cutoff(today, years)
    persons = history = 0
    while True:
        erased, erased_history = await store.erase_removed_before(keep_from, BATCH)
        persons += erased
        history += erased_history
        if erased < BATCH:
            break
    if persons:
        metrics.RETENTION_ERASED.labels("person").inc(persons)
        metrics.RETENTION_ERASED.labels("history").inc(history)
        log.info("removed persons past retention erased", extra={"persons": persons, "history": history})
    return Erasure(persons, history)
