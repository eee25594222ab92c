"""Fuhyo.Provide with and without My Number next to the empty RPC, same 附票 server, one run.

Both record servers run as their own processes; calls of the three kinds are interleaved. With My Number a
call also crosses the restricted link to the prefectural server and writes the temporary area.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from juki.v1 import fuhyo_pb2, prefecture_pb2
from tqdm import tqdm

from bench.harness import free_port
from bench.lookup import _percentiles
from bench.procstat import machine
from clients.fuhyo_cmds import fuhyo_stub
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import open_fuhyo_store, open_store, register_dev_operators
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.fuhyo import generate_fuhyo, load_fuhyo
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings

CALLER, PURPOSE = "agency/police", "bt6-police-driving-licence"


def run_fuhyo_bench(settings: Settings, calls: int, residents: int = 20_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="juki-bench-fuhyo-") as tmp:
        s = settings.replace(
            home=Path(tmp), prefecture_port=free_port(), fuhyo_port=free_port(), national_port=free_port(),
            prefecture_metrics_port=-1, fuhyo_metrics_port=-1, backup_enabled=False, rate_limits="",
        )  # fmt: skip
        Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
        store = open_store(s)
        load(store, generate(residents, 1))
        store.env.close()
        fuhyo = open_fuhyo_store(s)
        load_fuhyo(fuhyo, generate_fuhyo(residents, 1))
        fuhyo.env.close()
        register_dev_operators(s, opener=open_fuhyo_store)
        # 国外転出者 only: the restricted link gives a My Number for nobody else (SPEC §5.3)
        codes = [r.resident_code for r in generate_fuhyo(min(residents, 5000), 1) if r.state_kind == 2]
        config = write_settings(s, Path(tmp) / "juki.toml")
        procs = [
            start_server_process(config, "prefecture", log=Path(tmp) / "prefecture.log"),
            start_server_process(config, "fuhyo", log=Path(tmp) / "fuhyo.log"),
        ]
        try:
            wait_ready(s, "prefecture", "monitor/monitor-01")
            wait_ready(s, "fuhyo", "monitor/monitor-01")
            stub = fuhyo_stub(s, CALLER)
            times: dict[str, list[float]] = {"ping": [], "provide": [], "provide_with_my_number": []}
            for i in tqdm(range(calls), desc="interleaved", unit="triple", file=sys.stderr):
                code = codes[i % len(codes)]
                plain = fuhyo_pb2.FuhyoProvideRequest(resident_code=code, purpose=PURPOSE)
                numbered = fuhyo_pb2.FuhyoProvideRequest(
                    resident_code=code, purpose=PURPOSE, include_my_number=True, request_id=f"bench-{i}"
                )
                for name, method, request in (
                    ("ping", stub.Ping, prefecture_pb2.PingRequest()),
                    ("provide", stub.Provide, plain),
                    ("provide_with_my_number", stub.Provide, numbered),
                ):
                    t0 = time.perf_counter()
                    method(request)
                    times[name].append(time.perf_counter() - t0)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    results = {name: _percentiles(samples) for name, samples in times.items()}
    floor = results["ping"]["p50_us"]
    return {
        "machine": machine(),
        "residents": residents,
        "calls": calls,
        "sequential": results,
        "p50_ratio_to_ping": {name: r["p50_us"] / floor for name, r in results.items()},
        "tempstore_ttl_s": s.tempstore_ttl,
    }
