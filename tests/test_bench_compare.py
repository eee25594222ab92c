"""The benchmark's regression gate (`python -m bench.compare OLD NEW`): it judges each row by its ratios
to the empty RPC of the same run, prints every change, and exits 1 only when a ratio got worse by more than
its tolerance. Two small result files, no servers; no timing is measured here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.compare import main


def _row(scenario: str, level: int, qps: float, p50: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "in_flight": level, "qps": qps, "p50_us": p50, "p99_us": p99, **extra}


def _result(lookup_qps: float, lookup_p50: float, batch: float, grpcio: str = "1.85.1") -> dict[str, Any]:
    return {
        "started": "2026-12-01T10:00:00+0000",
        "machine": {"grpcio": grpcio},
        "dataset": {"residents": 200_000},
        "results": [
            _row("ping", 1, 2000.0, 500.0, 900.0),
            _row("lookup_random", 1, lookup_qps, lookup_p50, 1000.0),
            _row("ping", 32, 4000.0, 8000.0, 14000.0),
            _row("batch_provide", 32, 4.0, 2_000_000.0, 3_000_000.0, records_per_s=batch),
        ],
        "workers": None,
    }


def _write(tmp_path: Path, name: str, result: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(result))
    return str(path)


def test_changes_within_the_tolerance_pass(tmp_path: Path, capsys: Any) -> None:
    old = _write(tmp_path, "old", _result(1800.0, 550.0, 40_000.0))
    new = _write(tmp_path, "new", _result(1700.0, 580.0, 38_000.0))  # 5.6 % less, 5.5 % slower, 5 % less
    assert main([old, new]) == 0
    out = capsys.readouterr().out
    assert "lookup_random × 1" in out and "QPS × floor" in out and "-5.6%" in out
    assert "batch_provide × 32" in out and "REGRESSED" not in out


def test_a_ratio_worse_than_the_tolerance_fails_the_gate(tmp_path: Path, capsys: Any) -> None:
    old = _write(tmp_path, "old", _result(1800.0, 550.0, 40_000.0))
    slower = _write(tmp_path, "slower", _result(1800.0, 650.0, 40_000.0))  # p50 × floor 1.10 → 1.30
    assert main([old, slower]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "REGRESSED" in line]
    assert len(lines) == 1 and "lookup_random × 1" in lines[0] and "p50 × floor" in lines[0]

    fewer = _write(tmp_path, "fewer", _result(1800.0, 550.0, 30_000.0))  # bulk records/s 25 % down
    assert main([old, fewer]) == 1
    assert "batch_provide × 32" in capsys.readouterr().out
    assert main([old, fewer, "--tolerance", "0.3"]) == 0  # the tolerance is a setting


def test_improvements_pass_and_the_floor_is_what_counts(tmp_path: Path) -> None:
    old = _write(tmp_path, "old", _result(1800.0, 550.0, 40_000.0))
    better = _write(tmp_path, "better", _result(1950.0, 510.0, 80_000.0))
    assert main([old, better]) == 0
    # a slower machine: every figure 30 % lower, ratios unchanged — no regression
    machine = _result(1800.0, 550.0, 40_000.0)
    for row in machine["results"]:
        row["qps"] *= 0.7
        row["p50_us"] /= 0.7
        row["p99_us"] /= 0.7
        if "records_per_s" in row:
            row["records_per_s"] *= 0.7
    assert main([old, _write(tmp_path, "machine", machine)]) == 0


def test_the_command_line_exits_1_on_a_regression_and_names_the_grpcio_versions(tmp_path: Path) -> None:
    old = _write(tmp_path, "old", _result(1800.0, 550.0, 40_000.0, grpcio="1.85.1"))
    new = _write(tmp_path, "new", _result(1200.0, 550.0, 40_000.0, grpcio="1.86.0"))
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", old, new], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "grpcio 1.85.1" in done.stdout and "grpcio 1.86.0" in done.stdout
    assert "different grpcio versions" in done.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "bench.compare", old, str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
