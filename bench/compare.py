"""`python -m bench.compare OLD.json NEW.json`: the regression gate of the benchmark.

Every row of two benchmark results (`juki bench run`, `make bench-quick`) is reduced to its ratios to the
empty RPC of the same run and level — QPS × floor (records/s × floor for a bulk scenario), p50 × floor,
p99 × floor — so that two runs on different days or machines compare what the code costs, not how fast
the machine was. Prints each ratio's change and exits 1 when one regresses by more than its tolerance
(throughput down, latency up), 0 otherwise. Rows present in only one run are listed, not judged.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOOR = "ping"
TOLERANCE = 0.10  # QPS and p50 ratios: a change beyond 10 % is more than run-to-run noise on 2 cores
TAIL_TOLERANCE = 0.30  # p99 ratios move more between runs


@dataclass(frozen=True)
class Change:
    row: str  # "scenario × level" (with the number of server processes when more than one)
    metric: str
    old: float
    new: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        """Relative change of the ratio (NEW against OLD)."""
        return (self.new - self.old) / self.old

    @property
    def worsening(self) -> float:
        """How much worse NEW is, relatively (negative: better)."""
        return -self.change if self.higher_is_better else self.change


def ratios(result: dict[str, Any]) -> dict[tuple[str, str], tuple[float, bool]]:
    """(row, metric) → (ratio to the floor of the same run and level, higher is better)."""
    out: dict[tuple[str, str], tuple[float, bool]] = {}
    sections = [("", result["results"])]
    workers = result.get("workers")
    if workers:
        sections.append((f", {workers['processes']} server processes", workers["results"]))
    for label, rows in sections:
        floors = {r["in_flight"]: r for r in rows if r["scenario"] == FLOOR}
        for r in rows:
            floor = floors.get(r["in_flight"])
            if floor is None or r["scenario"] == FLOOR:
                continue
            name = f"{r['scenario']} × {r['in_flight']}{label}"
            throughput = r.get("records_per_s", r["qps"])
            if floor["qps"]:
                out[name, "QPS × floor"] = (throughput / floor["qps"], True)
            for key, metric in (("p50_us", "p50 × floor"), ("p99_us", "p99 × floor")):
                if r.get(key) and floor.get(key):
                    out[name, metric] = (r[key] / floor[key], False)
    return out


def compare(
    old: dict[str, Any], new: dict[str, Any], tolerance: float, tail_tolerance: float
) -> tuple[list[str], bool]:
    """The report's lines, and whether any ratio regressed beyond its tolerance."""
    before, after = ratios(old), ratios(new)
    lines = [
        f"OLD {old.get('started', '?')}, grpcio {old['machine'].get('grpcio', '?')}, "
        f"{old['dataset']['residents']:,} residents",
        f"NEW {new.get('started', '?')}, grpcio {new['machine'].get('grpcio', '?')}, "
        f"{new['dataset']['residents']:,} residents",
    ]
    if old["machine"].get("grpcio") != new["machine"].get("grpcio"):
        lines.append("note: the runs used different grpcio versions (per-call cost differs between releases)")
    if old["dataset"]["residents"] != new["dataset"]["residents"]:
        lines.append("note: the runs used stores of different sizes")
    lines.append(f"{'row':<40} {'ratio':<12} {'OLD':>8} {'NEW':>8} {'change':>8}")
    regressed = False
    for key in sorted(before.keys() & after.keys()):
        (old_value, better_high), (new_value, _) = before[key], after[key]
        if old_value <= 0:
            continue
        change = Change(key[0], key[1], old_value, new_value, better_high)
        limit = tail_tolerance if key[1].startswith("p99") else tolerance
        worse = change.worsening > limit
        regressed = regressed or worse
        verdict = f"  REGRESSED (worse by more than {limit:.0%})" if worse else ""
        figures = f"{old_value:>8.3f} {new_value:>8.3f} {change.change * 100:>+7.1f}%"
        lines.append(f"{key[0]:<40} {key[1]:<12} {figures}{verdict}")
    for side, keys in (("OLD", before.keys() - after.keys()), ("NEW", after.keys() - before.keys())):
        for row in sorted({row for row, _ in keys}):
            lines.append(f"{row:<40} only in {side}")
    lines.append("REGRESSION" if regressed else "no regression beyond the tolerances")
    return lines, regressed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the earlier result (JSON)")
    parser.add_argument("new", type=Path, help="the result to judge (JSON)")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help=f"QPS and p50 ratios [{TOLERANCE}]"
    )
    parser.add_argument(
        "--tail-tolerance", type=float, default=TAIL_TOLERANCE, help=f"p99 ratios [{TAIL_TOLERANCE}]"
    )
    args = parser.parse_args(argv)
    try:
        old, new = (json.loads(path.read_text()) for path in (args.old, args.new))
        lines, regressed = compare(old, new, args.tolerance, args.tail_tolerance)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot compare: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
