"""The capacity model (`python -m bench.capacity`): calls per server core from a pinned run's best row of
each scenario (throughput over the server CPU it took), and cores and memory per region from them and the
stated assumptions. A small result file; no timing is measured here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import REGIONS, Assumptions, main, model, per_core


def _row(scenario: str, level: int, qps: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "in_flight": level, "qps": qps, "server_cpu": cpu, **extra}


RESULT = {
    "dataset": {"residents": 1000},
    "prefecture_store_bytes": 700_000,
    "prefecture_memory_mb": {"RssAnon": 40.0},
    "results": [
        _row("ping", 32, 4000.0, 1.0),
        _row("lookup_random", 32, 3000.0, 1.0),
        _row("lookup_random", 128, 3100.0, 0.97),
        _row("search", 32, 1800.0, 0.9),
        _row("batch_provide", 32, 0.0, 1.0, records_per_s=30_000.0),
    ],
}


def test_per_core_takes_each_scenarios_best_row_over_its_server_cpu() -> None:
    cores = per_core(RESULT)
    assert set(cores) == {"ping", "lookup_random", "search", "batch_provide"}
    assert cores["lookup_random"]["in_flight"] == 128
    assert cores["lookup_random"]["per_core"] == pytest.approx(3100 / 0.97)
    assert cores["search"]["per_core"] == pytest.approx(2000)
    assert cores["batch_provide"]["per_core"] == pytest.approx(30_000)  # records/s, not calls


def test_the_model_grows_with_the_population_and_keeps_two_processes() -> None:
    rows = model(per_core(RESULT), 700.0, Assumptions(anon_mb_per_process=40.0))
    assert [r["residents"] for r in rows] == list(REGIONS.values())
    assert all(a["busy_cores"] < b["busy_cores"] for a, b in itertools.pairwise(rows))
    assert all(r["processes"] >= 2 for r in rows)
    national = rows[-1]
    assert national["store_gb"] == pytest.approx(125_000_000 * 700 / 1e9)
    assert national["memory_gb"] > national["store_gb"]
    busy = model(per_core(RESULT), 700.0, Assumptions(unary_per_resident_year=6000.0))[-1]
    assert busy["processes"] == pytest.approx(busy["busy_cores"] / 0.5, abs=1)  # half-busy cores


def test_the_command_prints_the_per_core_table_the_model_and_its_assumptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps(RESULT))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "| lookup_random | 128 | 3,100 | 0.97 | 3,196 |" in out
    assert "national server (J-LIS)" in out and "`unary_per_resident_year` = 6" in out
    assert main([str(tmp_path / "missing.json")]) == 2
