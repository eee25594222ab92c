"""Propagation throughput: how fast a backlog of applied changes drains to the national server.

Both servers run as their own processes on loopback. The national server is kept down while the
municipalities push N births (spread over Mie's 29 municipalities, through ApplyUpdates), so the outbox
holds N changes; then it starts, and the drain is timed until the outbox is empty.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from juki.v1 import prefecture_pb2, prefecture_pb2_grpc, records_pb2
from tqdm import tqdm

from bench.harness import free_port
from bench.procstat import machine
from clients.channel import secure_channel
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import open_store
from server.domain.codes import MIE_MUNICIPALITIES, my_number_check_digit
from server.identity.pki import DEV_IDENTITIES, Pki
from server.settings import Settings


def _births(municipality: str, start: int, count: int) -> Iterator[prefecture_pb2.ApplyUpdateRequest]:
    for i in range(count):
        n = start + i
        first = f"{6 * 10**10 + n:011d}"
        notice = prefecture_pb2.ChangeNotice(
            municipality_code=municipality,
            sequence=i + 1,
            resident_code=f"8{n:010d}",
            change_reason=records_pb2.CHANGE_REASON_SHUSSEI,
            change_date="2025-04-01",
            four_info=records_pb2.FourInfo(
                name_kanji="三重　花子",
                name_kana="ミエ　ハナコ",
                birth_date="2025-04-01",
                sex=records_pb2.SEX_FEMALE,
                address=f"三重県{MIE_MUNICIPALITIES[municipality]}{i}番地",
            ),
            my_number=first + str(my_number_check_digit(first)),
        )
        yield prefecture_pb2.ApplyUpdateRequest(notice=notice)


def _depth(settings: Settings) -> int:
    store = open_store(settings)
    try:
        with store.reader() as tx:
            return tx.outbox_depth()
    finally:
        store.env.close()


def run_propagation_bench(settings: Settings, changes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="juki-bench-prop-") as tmp:
        s = settings.replace(
            home=Path(tmp),
            prefecture_port=free_port(),
            national_port=free_port(),
            prefecture_metrics_port=-1,
            national_metrics_port=-1,
            rate_limits="",  # a benchmark of throughput
        )
        Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
        config = write_settings(s, Path(tmp) / "juki.toml")
        prefecture = start_server_process(config, "prefecture", log=Path(tmp) / "prefecture.log")
        national = None
        try:
            wait_ready(s, "prefecture", "monitor/monitor-01")
            towns = list(MIE_MUNICIPALITIES)
            per_town = changes // len(towns)
            started = time.perf_counter()
            for t, town in enumerate(tqdm(towns, desc="applying (national down)", file=sys.stderr)):
                channel = secure_channel(Pki(s.pki_path), f"municipal-cs/{town}", s.prefecture_target)
                stub = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
                stub.ApplyUpdates(_births(town, t * per_town, per_town), timeout=600)
                channel.close()
            apply_seconds = time.perf_counter() - started
            backlog = _depth(s)
            national = start_server_process(config, "national", log=Path(tmp) / "national.log")
            wait_ready(s, "national", "monitor/monitor-01")
            started = time.perf_counter()
            first_delivery = None
            with tqdm(total=backlog, desc="draining", unit="chg", file=sys.stderr) as bar:
                left = backlog
                while left:
                    time.sleep(0.2)
                    now_left = _depth(s)
                    if first_delivery is None and now_left < left:
                        first_delivery = time.perf_counter() - started
                    bar.update(left - now_left)
                    left = now_left
            drain_seconds = time.perf_counter() - started
        finally:
            for proc in (prefecture, national):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
    return {
        "machine": machine(),
        "changes": backlog,
        "relay_batch_size": s.relay_batch_size,
        "apply_per_s": round(backlog / apply_seconds),
        "drain_seconds": round(drain_seconds, 1),
        "first_delivery_after_s": round(first_delivery or 0.0, 1),  # the relay's backoff when J-LIS came back
        "delivered_per_s": round(backlog / drain_seconds),
        "delivered_per_s_once_flowing": round(backlog / max(drain_seconds - (first_delivery or 0.0), 1e-9)),
    }
