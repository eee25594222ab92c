"""`juki cs reconcile`: 整合 from a municipality's file of its residents (or, with --fuhyo, of the 附票
records it manages).

The file is JSON lines of juki.v1.ResidentRecord, My Number in clear, as the municipality's system holds it;
with --fuhyo, JSON lines of juki.v1.FuhyoRecord (a removed one: notice_kind FUHYO_NOTICE_KIND_REMOVE).
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
from juki.v1 import fuhyo_pb2, prefecture_pb2, records_pb2
from tqdm import tqdm

from clients.fuhyo_cmds import fuhyo_stub
from clients.peer_cmds import _fail, _stub, json_lines
from server.domain.reconcile import fuhyo_digest, range_digests, record_digest
from server.settings import Settings


def _records(path: Path, fuhyo: bool = False) -> Iterator[Any]:
    if fuhyo:
        yield from json_lines(path, records_pb2.FuhyoRecord, "the municipality's 附票 system")
    else:
        yield from json_lines(path, records_pb2.ResidentRecord, "juki cs export")


def _digest(record: Any, fuhyo: bool) -> bytes:
    if fuhyo:
        return fuhyo_digest(record, record.notice_kind == records_pb2.FUHYO_NOTICE_KIND_REMOVE)
    return record_digest(record, record.my_number)


def reconcile(
    stub: Any, path: Path, municipality: str, prefix_length: int, *, fuhyo: bool = False
) -> tuple[list[Any], Any]:
    """Run the exchange; (differences, summary)."""
    digests = sorted((r.resident_code, _digest(r, fuhyo)) for r in _records(path, fuhyo))
    request: type[Any] = fuhyo_pb2.FuhyoReconcileRequest if fuhyo else prefecture_pb2.ReconcileRequest
    ranges = prefecture_pb2.ReconcileRanges(
        municipality_code=municipality,
        prefix_length=prefix_length,
        ranges=[
            prefecture_pb2.RangeDigest(prefix=s.prefix, digest=s.digest, count=s.count)
            for s in range_digests(digests, prefix_length)
        ],
    )
    asked: queue.Queue[set[str]] = queue.Queue()

    def requests() -> Iterator[Any]:
        yield request(ranges=ranges)
        wanted = asked.get()
        records = _records(path, fuhyo)
        for record in tqdm(records, total=len(digests), unit="rec", desc="sending differing ranges"):
            if record.resident_code[:prefix_length] in wanted:
                yield request(record=record)

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
@click.option(
    "--fuhyo", is_flag=True, help="the 附票 records it manages (FuhyoRecord lines), with the 附票 server"
)
@click.pass_obj
def reconcile_cmd(settings: Settings, identity: str, path: Path, prefix_length: int, fuhyo: bool) -> None:
    """整合: report what differs between the municipality's file and the prefectural (or 附票) server."""
    municipality = identity.partition("/")[2]
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    try:
        differences, summary = reconcile(stub, path, municipality, prefix_length, fuhyo=fuhyo)
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
