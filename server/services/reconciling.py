"""整合 (Reconcile) for any record server: range digests first, then the records of the differing ranges
only, each difference streamed, a summary last. What a record is (a ResidentRecord, or a FuhyoRecord),
its municipality and its compared items come in as `ReconcileKind`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from juki.v1 import prefecture_pb2

from server.domain.errors import DomainError, ErrorKind
from server.domain.reconcile import differing_items, range_digests, validate_ranges, validate_record
from server.services.batching import invalid
from server.services.chain import current_caller
from server.storage.record_file import RecordFile

P = prefecture_pb2
# Ranges a Reconcile may send: 10,000 covers prefix_length 4 of any municipality; more only costs time.
MAX_RECONCILE_RANGES = 10_000


@dataclass(frozen=True)
class ReconcileKind:
    """`digests(municipality)`: (code, record digest) of every record it has here, in code order.
    `municipality(record)`: the municipality a sent record names. `theirs(record)`: its compared items.
    `ours(tx, code)`: (municipality, compared items) of the record held here, None when none."""

    digests: Callable[[str], Awaitable[list[tuple[str, bytes]]]]
    municipality: Callable[[Any], str]
    theirs: Callable[[Any], tuple[str, ...]]
    ours: Callable[[Any, str], tuple[str, tuple[str, ...]] | None]
    items: tuple[str, ...]


async def reconcile(
    store: RecordFile[Any], kind: ReconcileKind, requests: AsyncIterator[Any]
) -> AsyncIterator[P.ReconcileResponse]:
    municipality = current_caller().id
    iterator = requests.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return
    ranges = first.ranges
    if first.WhichOneof("part") != "ranges" or not 1 <= ranges.prefix_length <= 6:
        raise invalid("ranges", "the first message carries ranges with prefix_length 1–6")
    validate_ranges(ranges)
    if ranges.municipality_code != municipality:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "a municipality reconciles its own records only",
            "OTHER_MUNICIPALITY",
        )
    if len(ranges.ranges) > MAX_RECONCILE_RANGES:
        raise invalid("ranges.ranges", f"at most {MAX_RECONCILE_RANGES:,} ranges (a shorter prefix_length)")
    theirs = {r.prefix: r.digest for r in ranges.ranges}
    digests = await kind.digests(municipality)  # computed now: none is stored
    ours = {r.prefix: r.digest for r in range_digests(digests, ranges.prefix_length)}
    differing = sorted(p for p in theirs.keys() | ours.keys() if theirs.get(p) != ours.get(p))
    yield P.ReconcileResponse(send_ranges=P.RangeRequest(prefixes=differing))
    wanted = set(differing)
    seen: set[str] = set()
    summary = P.ReconcileSummary(ranges=len(theirs.keys() | ours.keys()), ranges_differing=len(wanted))
    async for request in iterator:
        record = request.record
        if request.WhichOneof("part") == "record":
            validate_record(request)
        if (
            request.WhichOneof("part") != "record"
            or record.resident_code[: ranges.prefix_length] not in wanted
        ):
            raise invalid("record", "only records of the ranges asked for")
        if kind.municipality(record) != municipality:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED, "a record of another municipality", "OTHER_MUNICIPALITY"
            )
        summary.records_received += 1
        seen.add(record.resident_code)
        difference = _compare(store, kind, record, municipality)
        if difference is not None:
            if difference.kind == P.DIFFERENCE_KIND_MISSING_HERE:
                summary.missing_here += 1
            else:
                summary.items_differ += 1
            yield P.ReconcileResponse(difference=difference)
    missing = await asyncio.to_thread(_missing, store, municipality, ranges.prefix_length, wanted, seen)
    for code in missing:
        summary.missing_there += 1
        yield P.ReconcileResponse(
            difference=P.ReconcileDifference(resident_code=code, kind=P.DIFFERENCE_KIND_MISSING_THERE)
        )
    yield P.ReconcileResponse(summary=summary)


def _missing(
    store: RecordFile[Any], municipality: str, prefix_length: int, wanted: set[str], seen: set[str]
) -> list[str]:
    """Our codes in the wanted ranges that the municipality did not send (a scan: in a thread)."""
    with store.reader() as tx:
        return [
            code
            for code in tx.municipality_codes(municipality)
            if code[:prefix_length] in wanted and code not in seen
        ]


def _compare(
    store: RecordFile[Any], kind: ReconcileKind, theirs: Any, municipality: str
) -> P.ReconcileDifference | None:
    code = theirs.resident_code
    with store.reader() as tx:
        held = kind.ours(tx, code)
    if held is None or held[0] != municipality:
        return P.ReconcileDifference(resident_code=code, kind=P.DIFFERENCE_KIND_MISSING_HERE)
    items = differing_items(held[1], kind.theirs(theirs), kind.items)
    if not items:
        return None
    return P.ReconcileDifference(resident_code=code, kind=P.DIFFERENCE_KIND_ITEMS_DIFFER, items=items)
