"""A small run of the benchmark harness end to end (tiny dataset, a few seconds a row): it produces
well-formed results — JSON with every row measured, the Markdown table, a PNG. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import TABLE_HEAD


def test_the_harness_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "clients", "bench", "run",
        "--residents", "1000", "--in-flight", "1,4", "--duration", "0.3", "--warmup", "0.1", "--rounds", "2",
        "--scenario", "lookup_random", "--scenario", "search", "--workers", "1", "--no-peers",
        "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(out), "--name", "smoke",
        "--driver-start", "1.5",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "smoke.json").read_text())
    rows = {(r["scenario"], r["in_flight"]): r for r in result["results"]}
    assert set(rows) == {(s, n) for s in ("ping", "lookup_random", "search") for n in (1, 4)}
    for row in rows.values():
        assert row["calls"] > 0 and row["qps"] > 0 and row["errors"] == {}
        assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["p99.9_us"] <= row["max_us"]
        assert row["server_cpu"] >= 0 and len(row["qps_rounds"]) == 2
    assert [r["scenario"] for r in result["storage_floor"]] == ["lmdb_read", "inprocess_lookup"]
    assert result["dataset"]["residents"] == 1000 and result["dataset"]["seed_records_per_s"] > 0
    measured = {t["target"]: t for t in result["targets"]}
    assert measured["Lookup p50 / empty RPC p50 (1 in flight)"]["measured"] > 0
    assert result["prefecture_memory_mb"]["VmRSS"] > 0
    markdown = (out / "smoke.md").read_text()
    assert TABLE_HEAD[0] in markdown and "| 4 | lookup_random |" in markdown
    assert (out / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run reuses the cached dataset instead of seeding again
    short = [
        *command[: command.index("--in-flight")],
        "--in-flight",
        "1",
        *command[command.index("--duration") :],
    ]
    again = subprocess.run(short, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "smoke.json").read_text())["dataset"]["reused_cache"] is True
