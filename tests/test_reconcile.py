"""整合: every injected difference is found (missing, extra, each differing item) and nothing else; a
municipality reconciles its own residents only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from juki.v1 import prefecture_pb2, records_pb2

from clients.reconcile_cmd import reconcile
from server.audit import AuditKeys
from server.audit.query import query
from server.seed.population import generate
from tests.conftest import Server, make_server

SEEDED = 4000
TSU = "242012"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("reconcile"), pki_dir, seeded=SEEDED, with_national=False)
    srv.start()
    yield srv
    srv.stop_all()


def tsu_view() -> list[Any]:
    """The municipality's own view: exactly what the prefecture was seeded with, My Numbers included."""
    return [e.record for e in generate(SEEDED, 1) if e.record.municipality_code == TSU]


def write(records: list[Any], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json_format.MessageToJson(record, ensure_ascii=False, indent=None) + "\n")
    return path


def test_identical_views_exchange_only_digests(server: Server, tmp_path: Path) -> None:
    view = tsu_view()
    differences, summary = reconcile(
        server.stub(f"municipal-cs/{TSU}"), write(view, tmp_path / "v.jsonl"), TSU, 3
    )
    assert differences == [] and summary.ranges_differing == 0 and summary.records_received == 0
    assert summary.ranges > 100


def test_every_injected_difference_is_found_and_nothing_else(server: Server, tmp_path: Path) -> None:
    view = tsu_view()
    dropped = [view.pop(10), view.pop(20), view.pop(30)]  # the prefecture holds them, the file does not
    extra = []
    for i, code in enumerate(("99999999901", "99999999902")):  # the file holds them, the prefecture does not
        record = records_pb2.ResidentRecord()
        record.CopyFrom(view[i])
        record.resident_code = code
        extra.append(record)
    view.extend(extra)
    changed = {
        view[40].resident_code: ["name_kanji"],
        view[41].resident_code: ["address"],
        view[42].resident_code: ["my_number"],
        view[43].resident_code: ["birth_date", "sex"],
    }
    view[40].four_info.name_kanji = "誤記　太郎"
    view[41].four_info.address += "の2"
    view[42].my_number = "983205673214"
    view[43].four_info.birth_date = "1900-01-01"
    view[43].four_info.sex = records_pb2.SEX_MALE if view[43].four_info.sex == 2 else records_pb2.SEX_FEMALE

    differences, summary = reconcile(
        server.stub(f"municipal-cs/{TSU}"), write(view, tmp_path / "v.jsonl"), TSU, 3
    )
    found = {(d.resident_code, d.kind): list(d.items) for d in differences}
    expected: dict[tuple[str, int], list[str]] = {
        (r.resident_code, prefecture_pb2.DIFFERENCE_KIND_MISSING_THERE): [] for r in dropped
    }
    expected |= {(r.resident_code, prefecture_pb2.DIFFERENCE_KIND_MISSING_HERE): [] for r in extra}
    expected |= {
        (code, prefecture_pb2.DIFFERENCE_KIND_ITEMS_DIFFER): items for code, items in changed.items()
    }
    assert found == expected
    assert (summary.missing_here, summary.missing_there, summary.items_differ) == (2, 3, 4)
    assert summary.records_received < len(view) / 10  # only the differing ranges were sent


def test_a_municipality_cannot_reconcile_another(server: Server, tmp_path: Path) -> None:
    view = write(tsu_view(), tmp_path / "v.jsonl")
    with pytest.raises(grpc.RpcError) as info:
        reconcile(server.stub("municipal-cs/242021"), view, TSU, 3)  # 四日市 asking about 津
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:  # … nor send 津's records under its own name
        reconcile(server.stub("municipal-cs/242021"), view, "242021", 3)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        reconcile(server.stub("agency/police"), view, TSU, 3)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_cli_prints_differences_and_a_summary(server: Server, tmp_path: Path) -> None:
    view = tsu_view()
    view[5].four_info.address += "の3"
    path = write(view, tmp_path / "v.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(server.config), "cs", "reconcile",
         "--as", f"municipal-cs/{TSU}", "--file", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{view[5].resident_code} ITEMS_DIFFER address" in done.stdout
    assert "items differ 1" in done.stdout


def test_a_reconcile_entry_names_the_residents_whose_records_differ(server: Server, tmp_path: Path) -> None:
    view = tsu_view()
    dropped = view.pop(50)
    view[60].four_info.address += "の3"
    reconcile(server.stub(f"municipal-cs/{TSU}"), write(view, tmp_path / "v.jsonl"), TSU, 3)
    keys = AuditKeys.load(server.settings.path(server.settings.audit_keys_file))
    entry = [
        e
        for e in query(server.settings.path(server.settings.audit_dir))
        if e["method"] == "/juki.v1.Prefecture/Reconcile"
    ][-1]
    assert keys.subject_hash(dropped.resident_code) in entry["subjects"]
    assert keys.subject_hash(view[60].resident_code) in entry["subjects"]
