"""A small run of the benchmark harness end to end (tiny dataset, a few seconds a row): it produces
well-formed results — JSON with every row measured, the Markdown table, a PNG. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.report import TABLE_HEAD


def test_the_harness_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cpus = sorted(os.sched_getaffinity(0))
    command = [
        sys.executable, "-m", "clients", "bench", "run",
        "--residents", "1000", "--in-flight", "1,4", "--duration", "0.3", "--warmup", "0.1", "--rounds", "2",
        "--scenario", "lookup_random", "--scenario", "search", "--scenario", "batch_provide",
        "--workers", "1", "--no-peers", "--channels", "2",
        "--server-cpus", str(cpus[0]), "--client-cpus", str(cpus[-1]),
        "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(out), "--name", "smoke",
        "--driver-start", "1.5",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "smoke.json").read_text())
    rows = {(r["scenario"], r["in_flight"]): r for r in result["results"]}
    scenarios = ("ping", "lookup_random", "search", "batch_provide")
    assert set(rows) == {(s, n) for s in scenarios for n in (1, 4)}
    for (scenario, level), row in rows.items():
        assert row["errors"] == {} and row["server_cpu"] >= 0 and len(row["qps_rounds"]) == 2
        processes = row["processes"]  # per client process (one at 1 in flight, else two) and server process
        assert len(processes["client_qps"]) == len(processes["client_cpu"]) == (1 if level == 1 else 2)
        assert processes["server_cpu"] and all(c >= 0 for c in processes["client_cpu"])
        if scenario == "batch_provide":  # records as they arrived; a whole batch may outlast the window
            assert row["records_per_s"] > 0
            continue
        assert row["calls"] > 0 and row["qps"] > 0
        assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["p99.9_us"] <= row["max_us"]
    options = result["options"]
    assert options["channels_per_client"] == 2
    assert options["server_cpus"] == [cpus[0]] and options["client_cpus"] == [cpus[-1]]
    assert result["machine"]["grpcio"]
    assert [r["scenario"] for r in result["storage_floor"]] == ["lmdb_read", "inprocess_lookup"]
    assert result["dataset"]["residents"] == 1000 and result["dataset"]["seed_records_per_s"] > 0
    measured = {t["target"]: t for t in result["targets"]}
    assert measured["Lookup p50 / empty RPC p50 (1 in flight)"]["measured"] > 0
    assert result["prefecture_memory_mb"]["VmRSS"] > 0
    markdown = (out / "smoke.md").read_text()
    assert TABLE_HEAD[0] in markdown and "| 4 | lookup_random |" in markdown
    assert "## Processes (median round)" in markdown and f"grpcio {result['machine']['grpcio']}" in markdown
    assert (out / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run reuses the cached dataset instead of seeding again
    short = [
        *command[: command.index("--in-flight")],
        *("--in-flight", "1", "--duration", "0.3", "--warmup", "0.1", "--rounds", "1"),
        *("--scenario", "lookup_random", "--workers", "1", "--no-peers"),
        *command[command.index("--cache-dir") :],
    ]
    again = subprocess.run(short, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "smoke.json").read_text())["dataset"]["reused_cache"] is True
