"""Ping latency while a heavy call runs (issue 12 item 8): does any call hold the server's event loop?

Starts a prefectural server (and its national peer) over a fresh store of `--residents` Mie residents and
an audit trail holding `--audit-entries` entries of this month, then for each load — nothing, Statistics,
a Reconcile with 10,000 ranges, a BatchProvide of 1,000 4情報 conditions, 4情報 searches — runs that load
back to back from another process while this one sends sequential Pings for `--seconds`, and prints Ping
p50/p99/max per load (JSON with --json). Rate limits are off (the load must not be throttled).

    python -m bench.loop_stall [--residents 100000] [--audit-entries 200000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, prefecture_pb2_grpc

from bench.harness import free_port
from clients.channel import secure_channel
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import _open_trail, open_store, register_dev_operators
from server.audit.entries import AuditEvent
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings

P = prefecture_pb2
LOADS = ("idle", "statistics", "reconcile", "batch_provide", "search")


def _settings(home: Path) -> Settings:
    options: dict[str, Any] = {
        "home": home,
        "prefecture_port": free_port(),
        "national_port": free_port(),
        "fuhyo_port": free_port(),
        "prefecture_metrics_port": -1,
        "national_metrics_port": -1,
        "backup_enabled": False,
        "relay_enabled": False,
    }
    names = {f.name for f in dataclasses.fields(Settings)}
    if "rate_limits" in names:
        options["rate_limits"] = ""
    return Settings(**options)


def _prefill_audit(s: Settings, entries: int) -> None:
    trail = _open_trail(s, s.audit_dir, s.audit_keys_file, s.auditor_keys_file)
    try:
        for i in range(entries):
            if i % 4 == 0:
                event = AuditEvent(
                    caller="spiffe://juki.mie/municipal-cs/242012", role="municipal-cs",
                    method="/juki.v1.Prefecture/ApplyUpdates", purpose="", outcome="OK", count=3,
                )  # fmt: skip
            else:
                event = AuditEvent(
                    caller="spiffe://juki.mie/agency/police", role="agency",
                    method="/juki.v1.Prefecture/Provide", purpose="bt6-police-driving-licence", outcome="OK",
                    count=1, kind="provision",
                    subjects=(trail.subject_hash(f"{i:011d}"),), items=("name", "address"),
                )  # fmt: skip
            trail.append(event)
    finally:
        trail.close()


def _load(name: str, config: str, stop_at: float, reconcile_ranges: int) -> None:
    """One load, back to back until `stop_at` (in its own process)."""
    s = Settings.load(Path(config))
    pki = Pki(s.pki_path)
    if name == "statistics":
        admin: Any = admin_pb2_grpc.AdminStub(secure_channel(pki, "auditor/auditor-01", s.prefecture_target))  # type: ignore[no-untyped-call]
        month = time.strftime("%Y-%m", time.localtime(time.time() + 9 * 3600 - time.timezone))
        while time.time() < stop_at:
            admin.Statistics(admin_pb2.StatisticsRequest(month=month), timeout=60)
        return
    if name == "reconcile":
        stub: Any = prefecture_pb2_grpc.PrefectureStub(
            secure_channel(pki, "municipal-cs/242021", s.prefecture_target)
        )  # type: ignore[no-untyped-call]
        rng = random.Random(1)
        ranges = P.ReconcileRanges(
            municipality_code="242021",
            prefix_length=6,
            ranges=[P.RangeDigest(prefix=f"{p:06d}", digest=rng.randbytes(32), count=1)
                    for p in sorted(rng.sample(range(10**6), reconcile_ranges))],
        )  # fmt: skip
        while time.time() < stop_at:
            with contextlib.suppress(grpc.RpcError):  # past the cap: refused (at once)
                list(stub.Reconcile(iter([P.ReconcileRequest(ranges=ranges)]), timeout=60))
        return
    if name == "batch_provide":
        stub = prefecture_pb2_grpc.PrefectureStub(secure_channel(pki, "agency/police", s.prefecture_target))  # type: ignore[no-untyped-call]

        def conditions() -> Any:
            for i in range(1000):
                yield P.BatchProvideRequest(
                    purpose="bt6-police-driving-licence", declared_count=1000, condition_id=str(i),
                    # a walk of every サ… name for one date of birth: thousands of entries, few matches
                    four_info=P.FourInfoQuery(name_kana="サ", birth_date="2000-01-01"),
                )  # fmt: skip

        while time.time() < stop_at:
            for _ in stub.BatchProvide(conditions(), timeout=120):
                pass
        return
    if name == "search":
        stub = prefecture_pb2_grpc.PrefectureStub(
            secure_channel(pki, "operator/op-0001", s.prefecture_target)
        )  # type: ignore[no-untyped-call]
        request = P.SearchRequest(purpose="identity-check", name_kana="サ", page_size=100)
        request.birth_date_from, request.birth_date_to = "2000-01-01", "2000-01-31"
        while time.time() < stop_at:
            stub.Search(request, timeout=60)
        return
    time.sleep(max(0.0, stop_at - time.time()))


def _pings(s: Settings, seconds: float) -> list[float]:
    stub: Any = prefecture_pb2_grpc.PrefectureStub(
        secure_channel(Pki(s.pki_path), "monitor/monitor-01", s.prefecture_target)
    )  # type: ignore[no-untyped-call]
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        stub.Ping(P.PingRequest(), timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--audit-entries", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--reconcile-ranges", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="juki-stall-") as tmp:
        home = Path(tmp)
        s = _settings(home)
        Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
        store = open_store(s)
        load(store, generate(args.residents, 1))
        store.env.close()
        register_dev_operators(s)
        _prefill_audit(s, args.audit_entries)
        config = write_settings(s, home / "juki.toml")
        national = start_server_process(config, "national", log=home / "national.log")
        prefecture = start_server_process(config, "prefecture", log=home / "prefecture.log")
        rows = []
        try:
            wait_ready(s, "national", "monitor/monitor-01", timeout=120)
            wait_ready(s, "prefecture", "monitor/monitor-01", timeout=120)
            _pings(s, 1.0)  # warm
            spawn = multiprocessing.get_context("spawn")
            for name in args.loads.split(","):
                stop_at = time.time() + args.seconds + 1.0
                worker = spawn.Process(target=_load, args=(name, str(config), stop_at, args.reconcile_ranges))
                worker.start()
                time.sleep(0.5)  # the load is under way
                latencies = _pings(s, args.seconds)
                worker.join(120)
                rows.append(
                    {
                        "load": name,
                        "pings": len(latencies),
                        "p50_ms": round(_quantile(latencies, 0.50) * 1000, 2),
                        "p99_ms": round(_quantile(latencies, 0.99) * 1000, 2),
                        "max_ms": round(max(latencies) * 1000, 2),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            for proc in (prefecture, national):
                proc.terminate()
                proc.wait(30)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| load | pings | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['load']} | {r['pings']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
