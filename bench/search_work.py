"""`python -m bench.search_work DATASET_DIR [...]`: the index entries a 4情報 search examines, counted on
cached benchmark datasets (no server, no timing): the dataset's own sample queries — kana + birth date,
and kana + sex + 市町村 — through `run_search`, one page of 20 each, beside the entries a scan of every
bearer of the kana name (the plan before composite keys) would look at (up to the scan limit).

`--migrate` opens each store for writing first, so that one written by older code (without
idx_name_address) is migrated, once, and says how long that took; without it the stores are only read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from juki.v1 import prefecture_pb2

from bench.dataset import LAYOUT
from server.app import open_store, open_store_readonly
from server.domain.search import parse_query, run_search
from server.settings import Settings

SCAN_LIMIT = 50_000
QUERIES = 2000
KINDS = ("kana + birth date", "kana + sex + 市町村")


def migrate(directory: Path) -> float:
    """Open the dataset's store for writing (migrating it if it is older) and close it: seconds taken."""
    started = time.perf_counter()
    open_store(Settings(home=directory).replace(**LAYOUT)).close()
    return time.perf_counter() - started


def count(directory: Path, queries: int = QUERIES) -> dict[str, Any]:
    """Examined entries per query kind: mean, p99, max; and the name-only scan's mean for comparison."""
    meta = json.loads((directory / "dataset.json").read_text())
    store = open_store_readonly(Settings(home=directory).replace(**LAYOUT))
    out: dict[str, Any] = {"residents": meta["residents"]}
    today = dt.date.today()
    try:
        with store.reader() as tx:
            for kind in KINDS:
                examined, name_scan, found = [], [], 0
                for kana, birth, sex, town in meta["samples"]["searches"][:queries]:
                    criteria: dict[str, Any] = (
                        {"birth_date": birth} if kind == KINDS[0] else {"sex": sex, "address_prefix": town}
                    )
                    request = prefecture_pb2.SearchRequest(name_kana=kana, **criteria)
                    query = parse_query(request, today=today)
                    page = run_search(tx, query, None, page_size=20, scan_limit=SCAN_LIMIT, max_results=1000)
                    examined.append(page.examined)
                    found += len(page.records)
                    prefix = query.kana.encode()
                    every_bearer = tx.scan("idx_name", prefix, prefix, None)
                    name_scan.append(sum(1 for _ in zip(range(SCAN_LIMIT), every_bearer, strict=False)))
                examined.sort()
                out[kind] = {
                    "queries": len(examined),
                    "examined_mean": round(statistics.mean(examined), 1),
                    "examined_p99": examined[int(0.99 * (len(examined) - 1))],
                    "examined_max": examined[-1],
                    "records_mean": round(found / len(examined), 2),
                    "name_scan_mean": round(statistics.mean(name_scan), 1),
                }
    finally:
        store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_work", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", type=Path, nargs="+", help="cached datasets: var/bench-cache/residents-…")
    parser.add_argument("--queries", type=int, default=QUERIES, help=f"sample queries per kind [{QUERIES}]")
    parser.add_argument(
        "--migrate", action="store_true", help="open each store for writing first (migrates an older one)"
    )
    args = parser.parse_args(argv)
    results = []
    for directory in args.datasets:
        seconds = migrate(directory) if args.migrate else None
        work = count(directory, args.queries)
        if seconds is not None:
            work["open_for_writing_s"] = round(seconds, 1)
        results.append(work)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
