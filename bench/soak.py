"""`make soak DURATION=10m`: a bounded mixed workload on loopback, and a report that fails on anything odd.

Seeds a fresh deployment (prefectural, 附票 and national servers as their own processes, rate limits as
shipped), then `--clients` client processes each run, one call at a time, a mix of lookups (local,
forwarded to J-LIS, of nobody), 4情報 searches, provisions, change notices (and invalid ones), batch
provisions, the My Number link (附票 Provide with My Number, then AckDelivery), 整合 and calls refused by
the policy, for `--duration`. Every 30 s it samples VmRSS and open fds of each server. The report: calls
and errors by method and code — a code not expected for its operation fails the run (expected:
refusals the workload provokes, and RESOURCE_EXHAUSTED from the rate limits) —, latency p50/p99 per
minute, the servers' memory and fds over time, audit-trail bytes per call, and `juki audit verify` of the
three trails after a graceful stop (a failure fails the run). Exit 0 only when all of it holds.

    python -m bench.soak --duration 10m [--clients 4] [--residents 20000] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
from juki.v1 import fuhyo_pb2, fuhyo_pb2_grpc, prefecture_pb2, prefecture_pb2_grpc, records_pb2

from bench.harness import free_port
from clients.channel import secure_channel
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import (
    open_fuhyo_store,
    open_national_store,
    open_store,
    open_store_readonly,
    register_dev_operators,
)
from server.domain.codes import my_number_check_digit
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo, load_fuhyo
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings

P, R, F = prefecture_pb2, records_pb2, fuhyo_pb2
POLICE = ("agency/police", "bt6-police-driving-licence")
TAX = ("department/tax", "bt5-tax-vehicle")
OPERATOR = ("operator/op-0001", "identity-check")
TOWNS = ("242012", "242021", "242039", "242047", "242055", "242071", "242080", "242098")
LIMITED = "RESOURCE_EXHAUSTED"
# operation → (weight, codes it may end with)
OPERATIONS: dict[str, tuple[int, frozenset[str]]] = {
    "lookup": (40, frozenset({"OK", LIMITED})),
    "lookup_national": (5, frozenset({"OK", LIMITED})),
    "lookup_nobody": (3, frozenset({"NOT_FOUND", LIMITED})),
    "search": (10, frozenset({"OK", LIMITED})),
    "provide": (10, frozenset({"OK", LIMITED})),
    "update": (10, frozenset({"OK", LIMITED})),
    "update_invalid": (2, frozenset({"INVALID_ARGUMENT", LIMITED})),
    "batch": (3, frozenset({"OK", LIMITED})),
    "link": (5, frozenset({"OK", LIMITED})),
    "reconcile": (1, frozenset({"OK", LIMITED})),
    "refused": (2, frozenset({"PERMISSION_DENIED", LIMITED})),
}
SERVERS = ("prefecture", "fuhyo", "national")


def parse_duration(text: str) -> float:
    """`90s`, `2m`, `1h` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


# --- the deployment ------------------------------------------------------------------------------------
def prepare(home: Path, residents: int) -> Settings:
    s = Settings(
        home=home,
        prefecture_port=free_port(),
        fuhyo_port=free_port(),
        national_port=free_port(),
        prefecture_metrics_port=-1,
        fuhyo_metrics_port=-1,
        national_metrics_port=-1,
        backup_enabled=False,
    )
    Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
    store = open_store(s)
    load(store, generate(residents, 1))
    store.env.close()
    national = open_national_store(s)
    load(national, generate_elsewhere(2000))
    national.env.close()
    fuhyo = open_fuhyo_store(s)
    load_fuhyo(fuhyo, generate_fuhyo(residents, 1))
    fuhyo.env.close()
    register_dev_operators(s)
    register_dev_operators(s, opener=open_fuhyo_store)
    return s


def trail_bytes(s: Settings) -> int:
    total = 0
    for directory in (s.audit_dir, s.fuhyo_audit_dir, s.national_audit_dir):
        for path in s.path(directory).rglob("*"):
            if path.is_file():
                total += path.stat().st_size
    return total


def drained(s: Settings, wait: float = 60.0) -> tuple[int, int, int]:
    """(outbox depth, refused, held) once the relay has delivered every change, or after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        store = open_store_readonly(s)
        try:
            with store.reader() as tx:
                state = (tx.outbox_depth(), *tx.aside_counts())
        finally:
            store.env.close()
        if state == (0, 0, 0) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def process_sample(pid: int) -> dict[str, float]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"rss_mb": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


# --- one client process --------------------------------------------------------------------------------
class Client:
    def __init__(self, s: Settings, index: int, residents: int) -> None:
        pki = Pki(s.pki_path)
        self.rng = random.Random(index)
        self.index = index
        self.town = TOWNS[index % len(TOWNS)]

        def stub(identity: str, target: str, kind: Any = prefecture_pb2_grpc.PrefectureStub) -> Any:
            return kind(secure_channel(pki, identity, target))

        self.police = stub(POLICE[0], s.prefecture_target)
        self.tax = stub(TAX[0], s.prefecture_target)
        self.operator = stub(OPERATOR[0], s.prefecture_target)
        self.cs = stub(f"municipal-cs/{self.town}", s.prefecture_target)
        self.fuhyo = stub(POLICE[0], s.fuhyo_target, fuhyo_pb2_grpc.FuhyoStub)
        population = [e.record for e in generate(residents, 1)]
        self.active = [r.resident_code for r in population if not r.deleted_flag]
        self.elsewhere = [e.record.resident_code for e in generate_elsewhere(2000)]
        self.abroad = [r.resident_code for r in generate_fuhyo(residents, 1) if r.state_kind == 2]
        self.sequence = self.cs.ApplyUpdates(iter([]), timeout=30).last_applied_sequence
        self.born = 0
        self.calls = 0

    def _birth(self, sequence: int) -> P.ChangeNotice:
        self.born += 1
        serial = f"{self.index:02d}{self.born:08d}"
        first = "6" + serial
        return P.ChangeNotice(
            municipality_code=self.town,
            sequence=sequence,
            resident_code="8" + serial,
            change_reason=R.CHANGE_REASON_SHUSSEI,
            change_date="2026-11-01",
            four_info=R.FourInfo(
                name_kanji="三重　花子",
                name_kana="ミエ　ハナコ",
                birth_date="2026-11-01",
                sex=R.SEX_FEMALE,
                address="三重県津市広明町13番地",
            ),
            my_number=first + str(my_number_check_digit(first)),
            operator_id="op-7",
            terminal_id="t-1",
        )

    def run(self, op: str) -> None:
        """One operation; raises grpc.RpcError with the code it ended with."""
        rng = self.rng
        self.calls += 1
        if op == "lookup":
            self.police.Lookup(
                P.LookupRequest(purpose=POLICE[1], resident_code=rng.choice(self.active)), timeout=10
            )
        elif op == "lookup_national":
            code = rng.choice(self.elsewhere)
            self.police.Lookup(P.LookupRequest(purpose=POLICE[1], resident_code=code), timeout=10)
        elif op == "lookup_nobody":
            self.police.Lookup(
                P.LookupRequest(purpose=POLICE[1], resident_code=f"7{rng.randrange(10**10):010d}"), timeout=10
            )
        elif op == "search":
            query = P.SearchRequest(
                purpose=OPERATOR[1], name_kana="サトウ", sex=rng.choice([R.SEX_MALE, R.SEX_FEMALE])
            )
            self.operator.Search(query, timeout=10)
        elif op == "provide":
            self.tax.Provide(
                P.ProvideRequest(purpose=TAX[1], resident_code=rng.choice(self.active)), timeout=10
            )
        elif op == "update":
            notice = self._birth(self.sequence + 1)
            self.cs.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
            self.sequence += 1  # not reached when refused (a rate limit): the same sequence is sent again
        elif op == "update_invalid":
            notice = self._birth(self.sequence + 1)
            notice.four_info.birth_date = "2026-02-30"
            self.cs.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
        elif op == "batch":
            codes = rng.sample(self.active, 50)
            requests = [
                P.BatchProvideRequest(
                    purpose=POLICE[1], declared_count=50, condition_id=str(i), resident_code=c
                )
                for i, c in enumerate(codes)
            ]
            results = list(self.police.BatchProvide(iter(requests), timeout=30))
            assert len(results) == 50
        elif op == "link":
            request_id = f"soak-{self.index}-{self.calls}"
            code = rng.choice(self.abroad)
            request = F.FuhyoProvideRequest(
                resident_code=code, purpose=POLICE[1], include_my_number=True, request_id=request_id
            )
            answer = self.fuhyo.Provide(request, timeout=10)
            assert answer.my_number
            self.calls += 1
            self.fuhyo.AckDelivery(F.AckDeliveryRequest(request_id=request_id, purpose=POLICE[1]), timeout=10)
        elif op == "reconcile":
            first = P.ReconcileRequest(ranges=P.ReconcileRanges(municipality_code=self.town, prefix_length=2))
            list(self.cs.Reconcile(iter([first]), timeout=60))
        elif op == "refused":  # police asking for a tax purpose: the policy says no
            self.police.Lookup(
                P.LookupRequest(purpose=TAX[1], resident_code=rng.choice(self.active)), timeout=10
            )


def client_main(config: str, index: int, residents: int, stop_at: float, started: float, out: str) -> None:
    s = Settings.load(Path(config))
    client = Client(s, index, residents)
    names = list(OPERATIONS)
    weights = [OPERATIONS[n][0] for n in names]
    codes: Counter[str] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)  # "minute" → ms
    by_op: dict[str, list[float]] = defaultdict(list)
    while time.time() < stop_at:
        op = client.rng.choices(names, weights)[0]
        minute = str(int((time.time() - started) // 60))  # of the call's start
        t0 = time.perf_counter()
        try:
            client.run(op)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        took = (time.perf_counter() - t0) * 1000
        latencies[minute].append(took)
        by_op[op].append(took)
        codes[f"{op} {code}"] += 1
    result = {"codes": codes, "latencies": latencies, "by_op": by_op, "calls": client.calls}
    Path(out).write_text(json.dumps(result))


# --- the run -------------------------------------------------------------------------------------------
def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _verify(config: Path, s: Settings) -> dict[str, bool]:
    juki = [sys.executable, "-m", "clients", "--config", str(config), "audit", "verify"]
    runs = {
        "prefecture": juki,
        "national": [*juki, "--server", "national"],
        "fuhyo": [
            *juki,
            "--dir",
            str(s.path(s.fuhyo_audit_dir)),
            "--keys",
            str(s.path(s.fuhyo_auditor_keys_file)),
        ],
    }
    return {
        name: subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
        for name, cmd in runs.items()
    }


def soak(duration: float, clients: int, residents: int, home: Path) -> dict[str, Any]:
    s = prepare(home, residents)
    config = write_settings(s, home / "juki.toml")
    logs = {name: home / f"{name}.log" for name in SERVERS}
    procs = {"national": start_server_process(config, "national", log=logs["national"])}
    wait_ready(s, "national", "monitor/monitor-01", timeout=120)
    procs["prefecture"] = start_server_process(config, "prefecture", log=logs["prefecture"])
    wait_ready(s, "prefecture", "monitor/monitor-01", timeout=120)
    procs["fuhyo"] = start_server_process(config, "fuhyo", log=logs["fuhyo"])
    wait_ready(s, "fuhyo", "monitor/monitor-01", timeout=120)
    audit_before = trail_bytes(s)
    started = time.time()
    stop_at = started + duration
    spawn = multiprocessing.get_context("spawn")
    outs = [home / f"client-{i}.json" for i in range(clients)]
    workers = [
        spawn.Process(target=client_main, args=(str(config), i, residents, stop_at, started, str(outs[i])))
        for i in range(clients)
    ]
    for worker in workers:
        worker.start()
    samples: list[dict[str, Any]] = []
    died: list[str] = []
    outbox = (-1, -1, -1)
    try:
        next_sample = started
        while any(w.is_alive() for w in workers):
            if time.time() >= next_sample:
                row: dict[str, Any] = {"t": round(time.time() - started)}
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        died.append(name)
                        continue
                    row[name] = process_sample(proc.pid)
                samples.append(row)
                print(json.dumps(row), file=sys.stderr)
                next_sample += 30
            time.sleep(0.5)
            if died:
                break
        for worker in workers:
            worker.join(120)
        outbox = drained(s)
    finally:
        for name in ("fuhyo", "prefecture", "national"):
            if procs[name].poll() is None:
                procs[name].terminate()
            if procs[name].wait(60) != 0 and name not in died:
                died.append(name)
    codes: Counter[str] = Counter()
    minutes: dict[int, list[float]] = defaultdict(list)
    ops: dict[str, list[float]] = defaultdict(list)
    calls = 0
    for out in outs:
        if not out.exists():
            died.append(out.stem)
            continue
        part = json.loads(out.read_text())
        codes.update(part["codes"])
        calls += part["calls"]
        for minute, values in part["latencies"].items():
            minutes[int(minute)].extend(values)
        for op, values in part["by_op"].items():
            ops[op].extend(values)
    unexpected = {k: v for k, v in codes.items() if k.split()[1] not in OPERATIONS[k.split()[0]][1]}
    verified = _verify(config, s)
    audit_bytes = trail_bytes(s) - audit_before
    return {
        "duration_s": duration,
        "clients": clients,
        "residents": residents,
        "calls": calls,
        "codes": dict(sorted(codes.items())),
        "unexpected": unexpected,
        "latency_by_minute": [
            {
                "minute": m,
                "calls": len(v),
                "p50_ms": round(_quantile(v, 0.5), 2),
                "p99_ms": round(_quantile(v, 0.99), 2),
            }
            for m, v in sorted(minutes.items())
        ],
        "latency_by_operation": [
            {
                "operation": o,
                "calls": len(v),
                "p50_ms": round(_quantile(v, 0.5), 2),
                "p99_ms": round(_quantile(v, 0.99), 2),
            }
            for o, v in sorted(ops.items())
        ],
        "outbox_after": outbox,
        "servers": samples,
        "audit_bytes_per_call": round(audit_bytes / max(1, calls), 1),
        "audit_verified": verified,
        "died": died,
        "passed": not unexpected
        and all(verified.values())
        and not died
        and calls > 0
        and outbox == (0, 0, 0),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# soak: {report['duration_s']:.0f} s, {report['clients']} client processes, "
        f"{report['residents']:,} residents — {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"{report['calls']:,} calls; audit trail {report['audit_bytes_per_call']} bytes per call; "
        f"audit verify: {report['audit_verified']}; servers that died: {report['died'] or 'none'}",
        "",
        "| operation code | calls |",
        "|---|---|",
        *(f"| {k} | {v:,} |" for k, v in report["codes"].items()),
        "",
        f"unexpected: {report['unexpected'] or 'none'}; outbox after (depth, set aside, held): "
        f"{report['outbox_after']}",
        "",
        "| operation | calls | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {r['operation']} | {r['calls']:,} | {r['p50_ms']} | {r['p99_ms']} |"
            for r in report["latency_by_operation"]
        ),
        "",
        "| minute | calls | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {r['minute']} | {r['calls']:,} | {r['p50_ms']} | {r['p99_ms']} |"
            for r in report["latency_by_minute"]
        ),
        "",
        "| t (s) | " + " | ".join(f"{n} RSS MB / fds" for n in SERVERS) + " |",
        "|---|" + "---|" * len(SERVERS),
    ]
    for row in report["servers"]:
        cells = [f"{row[n]['rss_mb']} / {row[n]['fds']}" if n in row else "-" for n in SERVERS]
        lines.append(f"| {row['t']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="10m", help="e.g. 90s, 2m, 10m")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--residents", type=int, default=20_000)
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="juki-soak-") as tmp:
        report = soak(parse_duration(args.duration), args.clients, args.residents, Path(tmp))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
