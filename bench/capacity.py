"""`python -m bench.capacity CAPACITY.json [STORE.json …]`: the capacity model of `bench/CAPACITY.md`, from
measured results.

CAPACITY.json is a run with the server pinned to one core and the clients to another (`juki bench run
--workers 1 --server-cpus 0 --client-cpus 1`): each scenario's best throughput divided by the server CPU
it took is its calls per server core. The store's bytes per resident come from the largest of the results
given. The demand is not measured: it is the assumptions below, printed with the model, to be replaced by
real traffic figures when there are any.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGIONS = {"Mie (三重県)": 1_800_000, "Tokyo (東京都)": 14_000_000, "national server (J-LIS)": 125_000_000}
PER_CORE_SCENARIOS = (
    "ping",
    "lookup_random",
    "provide",
    "search",
    "search_address",
    "batch_provide",
)


@dataclass(frozen=True)
class Assumptions:
    unary_per_resident_year: float = 6.0  # Lookup/Provide/Search calls one resident causes in a year
    search_share: float = 0.1  # of those, 4情報 searches (the rest by code or My Number)
    business_seconds_year: float = 250 * 9 * 3600  # 250 working days of 9 hours
    peak_factor: float = 3.0  # peak hour over the mean working hour
    bulk_window_s: float = 8 * 3600  # the whole population checked in bulk within one night …
    bulk_share: float = 1.0  # … this share of the residents (e.g. a pension authority's yearly check)
    utilisation: float = 0.5  # cores run at most half busy at the peak (failover, bursts)
    min_processes: int = 2  # one server process per core, never fewer than two (one may fail)
    anon_mb_per_process: float = 0.0  # measured, set from the run
    os_and_audit_gb: float = 2.0  # the OS, the audit trail's page cache, the 附票 server's share


def per_core(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Scenario → its best throughput, the server CPU it took, and throughput per server core."""
    out: dict[str, dict[str, float]] = {}
    for name in PER_CORE_SCENARIOS:
        rows = [r for r in result["results"] if r["scenario"] == name and r["server_cpu"] > 0]
        if not rows:
            continue
        best = max(rows, key=lambda r: r.get("records_per_s", r["qps"]))
        throughput = float(best.get("records_per_s", best["qps"]))
        out[name] = {
            "in_flight": best["in_flight"],
            "throughput": throughput,
            "server_cpu": best["server_cpu"],
            "per_core": throughput / best["server_cpu"],
        }
    return out


def model(
    cores: dict[str, dict[str, float]], bytes_per_resident: float, a: Assumptions
) -> list[dict[str, Any]]:
    """Per region: peak unary calls/s, bulk records/s, cores and memory."""
    lookup, search = cores["lookup_random"]["per_core"], cores["search"]["per_core"]
    batch = cores.get("batch_provide", {}).get("per_core", lookup)
    seconds_per_call = (1 - a.search_share) / lookup + a.search_share / search  # core-seconds, the mix
    out = []
    for region, residents in REGIONS.items():
        peak = residents * a.unary_per_resident_year / a.business_seconds_year * a.peak_factor
        bulk = residents * a.bulk_share / a.bulk_window_s
        busy = peak * seconds_per_call + bulk / batch  # both at once: the conservative case
        processes = max(a.min_processes, math.ceil(busy / a.utilisation))
        store_gb = residents * bytes_per_resident / 1e9
        memory_gb = store_gb + processes * a.anon_mb_per_process / 1e3 + a.os_and_audit_gb
        out.append(
            {
                "region": region,
                "residents": residents,
                "peak_calls_per_s": peak,
                "bulk_records_per_s": bulk,
                "busy_cores": busy,
                "processes": processes,
                "store_gb": store_gb,
                "memory_gb": memory_gb,
            }
        )
    return out


def markdown(cores: dict[str, dict[str, float]], rows: list[dict[str, Any]], a: Assumptions) -> str:
    lines = [
        "| scenario | in flight | throughput (calls or records/s) | server CPU (cores) | per server core |",
        "|---|---|---|---|---|",
    ]
    for name, c in cores.items():
        lines.append(
            f"| {name} | {c['in_flight']:.0f} | {c['throughput']:,.0f} | {c['server_cpu']:.2f} | "
            f"{c['per_core']:,.0f} |"
        )
    lines += [
        "",
        "| region | residents | peak unary calls/s | bulk records/s | busy cores | server processes (cores) "
        "| store (GB) | memory (GB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['region']} | {r['residents']:,} | {r['peak_calls_per_s']:,.0f} | "
            f"{r['bulk_records_per_s']:,.0f} | {r['busy_cores']:.2f} | {r['processes']} | "
            f"{r['store_gb']:,.1f} | {r['memory_gb']:,.1f} |"
        )
    lines += ["", "Assumptions:", ""] + [f"- `{k}` = {v:g}" for k, v in a.__dict__.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("capacity", type=Path, help="a pinned run (server on one core, clients on another)")
    parser.add_argument("stores", type=Path, nargs="*", help="more results, for the store's bytes a resident")
    args = parser.parse_args(argv)
    try:
        results = [json.loads(path.read_text()) for path in (args.capacity, *args.stores)]
        cores = per_core(results[0])
        largest = max(results, key=lambda r: r["dataset"]["residents"])
        bytes_per_resident = largest["prefecture_store_bytes"] / largest["dataset"]["residents"]
        anon = float(results[0]["prefecture_memory_mb"]["RssAnon"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot build the model: {exc!r}", file=sys.stderr)
        return 2
    assumptions = Assumptions(anon_mb_per_process=anon)
    print(markdown(cores, model(cores, bytes_per_resident, assumptions), assumptions), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
