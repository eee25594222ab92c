"""A first measurement: Lookup by 住民票コード next to the empty RPC, same server, same mTLS, one run.

The server runs as its own process; this process is the client. Calls of the two kinds are interleaved so
that machine noise falls on both alike. The full harness (HDR histograms, more in-flight levels, peers)
is the benchmark issue's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from juki.v1 import prefecture_pb2, prefecture_pb2_grpc
from tqdm import tqdm

from bench.harness import free_port
from bench.procstat import machine
from clients.channel import aio_channel, secure_channel
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import open_store
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings

CALLER = "agency/police"
PURPOSE = "bt6-police-driving-licence"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "mean_us": statistics.fmean(ordered) * 1e6,
    }


def _sample_codes(settings: Settings, n: int) -> list[str]:
    store = open_store(settings)
    try:
        with store.env.read() as txn, txn.cursor(db=store.env.dbs["records"]) as cur:
            codes = [bytes(k).decode() for k in cur.iternext(keys=True, values=False)]
    finally:
        store.env.close()
    return random.Random(7).sample(codes, min(n, len(codes)))


def _sequential(settings: Settings, codes: list[str], calls: int) -> dict[str, Any]:
    channel = secure_channel(Pki(settings.pki_path), CALLER, settings.prefecture_target)
    stub = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    ping: list[float] = []
    lookup: list[float] = []
    for i in tqdm(range(calls), desc="sequential", unit="pair", file=sys.stderr):
        request = prefecture_pb2.LookupRequest(resident_code=codes[i % len(codes)], purpose=PURPOSE)
        t0 = time.perf_counter()
        stub.Ping(prefecture_pb2.PingRequest())
        t1 = time.perf_counter()
        stub.Lookup(request)
        t2 = time.perf_counter()
        ping.append(t1 - t0)
        lookup.append(t2 - t1)
    channel.close()
    p, q = _percentiles(ping), _percentiles(lookup)
    return {"ping": p, "lookup": q, "lookup_p50_ratio": q["p50_us"] / p["p50_us"]}


async def _in_flight(settings: Settings, codes: list[str], calls: int, width: int) -> dict[str, Any]:
    channel = aio_channel(Pki(settings.pki_path), CALLER, settings.prefecture_target)
    stub = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]

    async def drive(call: Callable[[int], Awaitable[Any]]) -> float:
        counter = iter(range(calls))

        async def worker() -> None:
            for i in counter:
                await call(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(width)))
        return calls / (time.perf_counter() - t0)

    def ping(_: int) -> Awaitable[Any]:
        return stub.Ping(prefecture_pb2.PingRequest())  # type: ignore[no-any-return]

    def lookup(i: int) -> Awaitable[Any]:
        request = prefecture_pb2.LookupRequest(resident_code=codes[i % len(codes)], purpose=PURPOSE)
        return stub.Lookup(request)  # type: ignore[no-any-return]

    results: dict[str, list[float]] = {"ping": [], "lookup": []}
    for _ in range(3):  # alternate kinds so drift affects both
        results["ping"].append(await drive(ping))
        results["lookup"].append(await drive(lookup))
    await channel.close()
    ping_qps, lookup_qps = max(results["ping"]), max(results["lookup"])
    return {
        "in_flight": width,
        "ping_qps": ping_qps,
        "lookup_qps": lookup_qps,
        "lookup_qps_ratio": lookup_qps / ping_qps,
    }


def run_lookup_bench(settings: Settings, calls: int, residents: int = 100_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="juki-bench-") as tmp:
        s = settings.replace(
            home=Path(tmp),
            prefecture_port=free_port(),
            national_port=free_port(),
            prefecture_metrics_port=-1,
            rate_limits="",  # a benchmark of throughput
        )
        Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
        store = open_store(s)
        with tqdm(total=residents, desc="seeding", unit="rec", unit_scale=True, file=sys.stderr) as bar:
            report = load(store, generate(residents, 1), progress=bar.update)
        store.env.close()
        codes = _sample_codes(s, 10_000)
        config = write_settings(s, Path(tmp) / "juki.toml")
        proc = start_server_process(config, "prefecture", log=Path(tmp) / "server.log")
        try:
            wait_ready(s, "prefecture", CALLER)
            sequential = _sequential(s, codes, calls)
            concurrent = asyncio.run(_in_flight(s, codes, calls * 2, 32))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return {
        "machine": machine(),
        "residents": residents,
        "seed_records_per_s": round(report.per_second),
        "calls": calls,
        "sequential": sequential,
        "concurrent": concurrent,
    }
