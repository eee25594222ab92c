"""`juki cs reconcile`: 整合 from a municipality's file of its residents.

The file is JSON lines of juki.v1.ResidentRecord, My Number in clear, as the municipality's system holds it.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
from juki.v1 import prefecture_pb2, records_pb2
from tqdm import tqdm

from clients.peer_cmds import _fail, _stub, json_lines
from server.domain.reconcile import range_digests, record_digest
from server.settings import Settings


def _records(path: Path) -> Iterator[records_pb2.ResidentRecord]:
    yield from json_lines(path, records_pb2.ResidentRecord, "juki cs export")


def reconcile(stub: Any, path: Path, municipality: str, prefix_length: int) -> tuple[list[Any], Any]:
    """Run the exchange; (differences, summary)."""
    digests = sorted((r.resident_code, record_digest(r, r.my_number)) for r in _records(path))
    ranges = prefecture_pb2.ReconcileRanges(
        municipality_code=municipality,
        prefix_length=prefix_length,
        ranges=[
            prefecture_pb2.RangeDigest(prefix=s.prefix, digest=s.digest, count=s.count)
            for s in range_digests(digests, prefix_length)
        ],
    )
    asked: queue.Queue[set[str]] = queue.Queue()

    def requests() -> Iterator[prefecture_pb2.ReconcileRequest]:
        yield prefecture_pb2.ReconcileRequest(ranges=ranges)
        wanted = asked.get()
        for record in tqdm(_records(path), total=len(digests), unit="rec", desc="sending differing ranges"):
            if record.resident_code[:prefix_length] in wanted:
                yield prefecture_pb2.ReconcileRequest(record=record)

    differences: list[Any] = []
    summary = None
    try:
        for response in stub.Reconcile(requests()):
            part = response.WhichOneof("part")
            if part == "send_ranges":
                asked.put(set(response.send_ranges.prefixes))
            elif part == "difference":
                differences.append(response.difference)
            else:
                summary = response.summary
    finally:
        asked.put(set())  # never leave the request thread waiting
    return differences, summary


@click.command("reconcile")
@click.option("--as", "identity", required=True, help="municipal-cs/<市町村コード>")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--prefix-length", default=3, show_default=True, help="digits of the resident code per range")
@click.pass_obj
def reconcile_cmd(settings: Settings, identity: str, path: Path, prefix_length: int) -> None:
    """整合: report what differs between the municipality's file and the prefectural server."""
    municipality = identity.partition("/")[2]
    try:
        differences, summary = reconcile(_stub(settings, identity), path, municipality, prefix_length)
    except grpc.RpcError as error:
        _fail(error)
        return
    for d in differences:
        kind = prefecture_pb2.DifferenceKind.Name(d.kind).removeprefix("DIFFERENCE_KIND_")
        click.echo(f"{d.resident_code} {kind} {' '.join(d.items)}".rstrip())
    click.echo(
        f"ranges {summary.ranges} (differing {summary.ranges_differing}), "
        f"records sent {summary.records_received}, "
        f"missing here {summary.missing_here}, missing there {summary.missing_there}, "
        f"items differ {summary.items_differ}"
    )
