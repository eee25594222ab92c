"""`juki cs export`: a municipality's view of its residents, as the JSON lines `juki cs reconcile` reads.

The view comes from the deterministic seed (what `juki run` loaded: the same count and seed give the same
residents) or from a CSV the municipality's own system writes. My Number is in clear, as that system holds
it: the file is written 0600.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
from google.protobuf import json_format
from juki.v1 import records_pb2

from clients.errors import CliError
from server.domain.codes import MIE_MUNICIPALITIES
from server.domain.reconcile import ITEMS
from server.seed.population import generate

CSV_COLUMNS = ("resident_code", *ITEMS)
_SEX: dict[str, records_pb2.Sex] = {
    "male": records_pb2.SEX_MALE,
    "female": records_pb2.SEX_FEMALE,
    "1": records_pb2.SEX_MALE,
    "2": records_pb2.SEX_FEMALE,
}


def municipality_of(identity: str) -> str:
    """The 市町村コード of `municipal-cs/<code>`, or a CliError saying what to give."""
    role, _, code = identity.partition("/")
    if role != "municipal-cs" or code not in MIE_MUNICIPALITIES:
        raise CliError(
            f"--as {identity}: give municipal-cs/<市町村コード> of a Mie municipality "
            "(e.g. municipal-cs/242012)"
        )
    return code


def seeded_view(municipality: str, count: int, seed: int) -> Iterator[records_pb2.ResidentRecord]:
    """The municipality's residents among the first `count` of seed `seed` (removed persons included)."""
    for entry in generate(count, seed):
        if entry.record.municipality_code == municipality:
            yield entry.record


def csv_view(path: Path, municipality: str) -> Iterator[records_pb2.ResidentRecord]:
    """Records from a CSV with a header of CSV_COLUMNS (sex male/female, change_reason as TENNYU…,
    removed 0/1); a row that does not fit is a CliError naming the line."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise CliError(
                f"{path}: the header lacks {', '.join(missing)} (columns: {','.join(CSV_COLUMNS)})"
            )
        for row in reader:
            try:
                yield _record(row, municipality)
            except (KeyError, ValueError) as exc:
                raise CliError(f"{path}:{reader.line_num}: {exc}") from None


def _record(row: dict[str, str], municipality: str) -> records_pb2.ResidentRecord:
    sex = _SEX.get(row["sex"].strip().lower())
    if sex is None:
        raise ValueError(f"sex {row['sex']!r}: male or female")
    reason = row["change_reason"].strip().upper()
    try:
        change_reason = records_pb2.ChangeReason.Value(
            reason if reason.startswith("CHANGE_REASON_") else f"CHANGE_REASON_{reason}"
        )
    except ValueError:
        raise ValueError(f"change_reason {row['change_reason']!r}: e.g. TENNYU, SHUSSEI, TENKYO") from None
    record = records_pb2.ResidentRecord(
        resident_code=row["resident_code"].strip(),
        my_number=row["my_number"].strip(),
        change_reason=records_pb2.ChangeReason.Name(change_reason),
        change_date=row["change_date"].strip(),
        municipality_code=municipality,
        deleted_flag=row["removed"].strip().lower() in ("1", "true", "yes"),
    )
    info = record.four_info
    info.name_kanji, info.name_kana = row["name_kanji"], row["name_kana"]
    info.birth_date, info.address, info.sex = row["birth_date"].strip(), row["address"], sex
    return record


def write_jsonl(records: Iterable[records_pb2.ResidentRecord], out: Path | None) -> int:
    """JSON lines to `out` (0600) or stdout; how many."""
    written = 0
    if out is None:
        for record in records:
            click.echo(json_format.MessageToJson(record, ensure_ascii=False, indent=None))
            written += 1
        return written
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json_format.MessageToJson(record, ensure_ascii=False, indent=None) + "\n")
            written += 1
    return written


@click.command("export")
@click.option("--as", "identity", required=True, help="municipal-cs/<市町村コード>: whose residents")
@click.option("--count", default=100_000, show_default=True, help="residents seeded (juki run --count)")
@click.option("--seed", "seed_number", default=1, show_default=True, help="juki seed --seed (juki run: 1)")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"the municipality's own records instead of the seed (header: {','.join(CSV_COLUMNS)})",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="file to write [stdout]")
def export_cmd(identity: str, count: int, seed_number: int, csv_file: Path | None, out: Path | None) -> None:
    """The municipality's view of its residents (JSON lines of juki.v1.ResidentRecord, My Number in
    clear), for `juki cs reconcile --file`: from the seed juki run loaded, or from --csv."""
    municipality = municipality_of(identity)
    view = csv_view(csv_file, municipality) if csv_file else seeded_view(municipality, count, seed_number)
    written = write_jsonl(view, out)
    if out is not None:
        click.echo(f"{written} residents of {MIE_MUNICIPALITIES[municipality]} written to {out}", err=True)
