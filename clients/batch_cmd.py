"""`juki agency batch`: 一括提供 from a CSV of conditions to a CSV of results, streaming both ways.

Input columns (header row): id, resident_code, my_number, name_kana, birth_date, sex, address_prefix — one
condition per row (resident_code, or my_number, or 4情報), sent in chunks (`--chunk` conditions a message).
Output: one row per condition, in order. Neither file is held in memory: chunks are read as the server asks
for more and their rows written as each chunk's results arrive.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
from juki.v1 import prefecture_pb2, records_pb2
from tqdm import tqdm

from clients.fuhyo_cmds import fuhyo_stub
from clients.peer_cmds import _fail, _stub
from server.domain.limits import MAX_BATCH_CHUNK
from server.settings import Settings

CHUNK = 500  # conditions a message by default: few enough that a slow chunk still shows progress

OUT_COLUMNS = (
    "id", "outcome", "resident_code", "name_kanji", "name_kana", "birth_date", "sex", "address",
    "my_number", "change_reason", "change_date",
)  # fmt: skip
_SEX = {"": records_pb2.SEX_UNSPECIFIED, "1": records_pb2.SEX_MALE, "2": records_pb2.SEX_FEMALE,
        "male": records_pb2.SEX_MALE, "female": records_pb2.SEX_FEMALE}  # fmt: skip


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


def _requests(
    path: Path, purpose: str, token: str, declared: int, chunk: int = CHUNK
) -> Iterator[prefecture_pb2.BatchProvideRequest]:
    """The conditions of the file, `chunk` a message; the first message declares them all."""
    with path.open(encoding="utf-8", newline="") as f:
        request = prefecture_pb2.BatchProvideRequest(
            purpose=purpose, declared_count=declared, approval_token=token
        )
        for i, row in enumerate(csv.DictReader(f)):
            request.conditions.append(_condition(row, i))
            if len(request.conditions) == chunk:
                yield request
                request = prefecture_pb2.BatchProvideRequest()
        if request.conditions:
            yield request


def _condition(row: dict[str, str], i: int) -> prefecture_pb2.BatchCondition:
    condition = prefecture_pb2.BatchCondition(condition_id=row.get("id") or str(i + 1))
    if row.get("resident_code"):
        condition.resident_code = row["resident_code"]
    elif row.get("my_number"):
        condition.my_number = row["my_number"]
    else:
        condition.four_info.CopyFrom(
            prefecture_pb2.FourInfoQuery(
                name_kana=row.get("name_kana", ""),
                birth_date=row.get("birth_date", ""),
                sex=_SEX.get(row.get("sex", "").strip().lower(), records_pb2.SEX_UNSPECIFIED),
                address_prefix=row.get("address_prefix", ""),
            )
        )
    return condition


def _results(answer: Any) -> Any:
    """The results one answer carries: a chunk's, in order (or the one of a single condition)."""
    return answer.results if len(answer.results) else (answer,)


def _row(result: Any) -> list[str]:
    r = result.record
    outcome = prefecture_pb2.BatchOutcome.Name(result.outcome).removeprefix("BATCH_OUTCOME_")
    if not result.HasField("record"):
        return [result.condition_id, outcome] + [""] * (len(OUT_COLUMNS) - 2)
    if r.DESCRIPTOR.name == "FuhyoView":  # a 附票 record: no 個人番号, 異動事由 or 異動年月日
        return [
            result.condition_id, outcome, r.resident_code, r.name_kanji, r.name_kana, r.birth_date,
            records_pb2.Sex.Name(r.sex).removeprefix("SEX_"), r.address, "", "ABROAD" if r.abroad else "", "",
        ]  # fmt: skip
    return [
        result.condition_id, outcome, r.resident_code, r.name_kanji, r.name_kana, r.birth_date,
        records_pb2.Sex.Name(r.sex).removeprefix("SEX_"), r.address, r.my_number,
        records_pb2.ChangeReason.Name(r.change_reason).removeprefix("CHANGE_REASON_"), r.change_date,
    ]  # fmt: skip


@click.command("batch")
@click.option("--as", "identity", required=True, help="agency/<id> or department/<id>")
@click.option("--purpose", required=True)
@click.option("--in", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", "target", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--token", default="", help="approval token (needed above the server's threshold)")
@click.option("--fuhyo", is_flag=True, help="from the 附票 server (no my_number column; 国外転出者: ABROAD)")
@click.option(
    "--chunk",
    type=click.IntRange(1, MAX_BATCH_CHUNK),
    default=CHUNK,
    show_default=True,
    help="conditions a message (the server answers each message with one, holding their results)",
)
@click.pass_obj
def batch(
    settings: Settings,
    identity: str,
    purpose: str,
    source: Path,
    target: Path,
    token: str,
    fuhyo: bool,
    chunk: int,
) -> None:
    """一括提供: conditions from --in (CSV), one result row per condition to --out (CSV), in order."""
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    declared = _count_rows(source)
    if declared == 0:
        raise click.ClickException("no conditions in the input file")
    counts: dict[str, int] = {}
    try:
        with target.open("w", encoding="utf-8", newline="") as out, tqdm(total=declared, unit="cond") as bar:
            writer = csv.writer(out)
            writer.writerow(OUT_COLUMNS)
            for answer in stub.BatchProvide(_requests(source, purpose, token, declared, chunk)):
                results = _results(answer)
                for result in results:
                    row = _row(result)
                    writer.writerow(row)
                    counts[row[1]] = counts.get(row[1], 0) + 1
                bar.update(len(results))
    except grpc.RpcError as error:
        _fail(error)
    click.echo(" ".join(f"{k.lower()}={v}" for k, v in sorted(counts.items())))


@click.group()
def agency() -> None:
    """Clients of agencies and departments (提供・移転)."""


agency.add_command(batch)
