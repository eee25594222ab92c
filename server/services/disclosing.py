"""開示 (Disclose) for any record server: the person's record as this server shows it, every provision of it
and every refused call concerning them from this server's trails, each with its inclusion proof."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from juki.v1 import prefecture_pb2, records_pb2

from server.audit.disclosure import Disclosure, Listed
from server.domain import validation as val
from server.domain.errors import Violations, nobody
from server.domain.limits import check_message
from server.storage.record_file import RecordFile

# (read transaction, the record) → the view of it the resident sees
View = Callable[[Any, records_pb2.ResidentRecord], Message]


async def disclose(
    store: RecordFile[Any],
    request: prefecture_pb2.DiscloseRequest,
    provisions: Callable[[str], Disclosure] | None,
    view: View,
    response: Callable[..., Any],
) -> Any:
    """The `response` message (record, provisions, checkpoints); NOT_FOUND for nobody held here."""
    v = Violations()
    check_message(v, request)
    val.check_resident_code(v, "resident_code", request.resident_code)
    val.check_request_id(v, "request_id", request.request_id)
    v.raise_if_any()
    with store.reader() as tx:
        record = tx.get(request.resident_code)
        shown = view(tx, record) if record is not None else None
    if shown is None or provisions is None:
        raise nobody()
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(None, provisions, request.resident_code)
    return response(
        record=shown,
        provisions=[disclosed_entry(e) for e in found.entries],
        checkpoints=[
            prefecture_pb2.TrailCheckpoint(trail=t, checkpoint=note) for t, note in found.checkpoints.items()
        ],
    )


def disclosed_entry(e: Listed) -> prefecture_pb2.ProvisionEntry:
    """One listed audit entry as the resident sees it (the line itself only when it is theirs alone)."""
    entry = e.entry
    return prefecture_pb2.ProvisionEntry(
        time=entry["time"],
        recipient=entry["caller"],
        purpose=entry["purpose"],
        outcome=entry["outcome"],
        method=entry["method"],
        seq=e.seq,
        trail=e.trail,
        tree_size=e.tree_size,
        inclusion_proof=e.proof,
        leaf_hash=e.leaf,
        entry=e.line.decode() if len(entry["subjects"]) == 1 else "",
    )
