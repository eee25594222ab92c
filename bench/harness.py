"""The lookup benchmark (SPEC §8): every scenario side by side with the empty RPC, in one run.

Servers run as their own processes on a copy of the cached dataset; load comes from separate client
processes (`bench.driver`), `clients` of them per measurement once there is more than one call in flight,
each over `channels` connections (SO_REUSEPORT balances connections, not calls); the storage floor is read
in this process. Each measurement: every driver connects, all start together, warm up, then record
`duration` seconds; the CPU of the server and of each client process is read from /proc over exactly
that window. With `server_cpus`/`client_cpus` the servers and the clients are pinned to those cores
(sched_setaffinity), so that on a small machine a server core is measured without clients on it.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram
from tqdm import tqdm

from bench import procstat
from bench.dataset import Dataset, copy_into, dataset_bytes, ensure_dataset
from bench.driver import Job, new_histogram
from bench.scenarios import LMDB_READ, SCENARIOS
from bench.stats import summarise
from bench.storage_floor import storage_floor
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import open_fuhyo_store, register_dev_operators
from server.identity.pki import DEV_IDENTITIES, Pki
from server.settings import Settings


@dataclass(frozen=True)
class Options:
    residents: int = 2_000_000
    in_flight: tuple[int, ...] = (1, 8, 32, 128)
    duration: float = 3.0
    warmup: float = 1.0
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    rounds: int = 3  # each row: this many rounds, the scenarios of a level interleaved
    workers: int = 2  # also measure ping and lookup with this many server processes (≤ 1: skip)
    peers: bool = True
    cache_dir: Path = Path("var/bench-cache")
    rebuild: bool = False
    driver_start: float = 2.5  # seconds for the client processes to import, connect and meet at the start
    clients: int = 2  # client processes per measurement above 1 in flight
    channels: int = 4  # connections per client process (no more than its calls in flight)
    server_cpus: tuple[int, ...] = ()  # pin every server process (and its threads) here; () = no pinning
    client_cpus: tuple[int, ...] = ()  # pin the client processes here


@dataclass
class Servers:
    """The running processes of one run and where to reach them."""

    settings: Settings
    config: Path
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    extra_pids: dict[str, list[int]] = field(default_factory=dict)  # a peer database's processes
    server_cpus: tuple[int, ...] = ()  # cores the servers are pinned to (none: not pinned)

    def pids(self, server: str) -> list[int]:
        """Every process that serves `server` (workers, the database behind a peer front end)."""
        pids = procstat.tree(self.procs[server].pid)
        if server == "fuhyo":  # a call with My Number also runs on the prefectural server
            pids += procstat.tree(self.procs["prefecture"].pid)
        for pid in self.extra_pids.get(server, []):
            pids += procstat.tree(pid)
        return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def measure(servers: Servers, samples: dict[str, Any], scenario: str, level: int, o: Options) -> Round:
    """One scenario at `level` calls in flight, from `o.clients` client processes (one at 1 in flight)."""
    spec = SCENARIOS[scenario]
    clients = 1 if level == 1 else max(1, min(o.clients, level))
    start_at = time.time() + o.driver_start
    procs = []
    for k in range(clients):
        share = level // clients + (1 if k < level % clients else 0)
        job = Job(
            scenario=scenario,
            target=servers.targets[spec.server],
            pki_dir=str(servers.settings.pki_path),
            identity=spec.identity,
            in_flight=share,
            start_at=start_at,
            warmup=o.warmup,
            duration=o.duration,
            samples=samples,
            channels=o.channels,
        )
        job_file = servers.logs / f"job-{k}.json"
        job_file.write_text(json.dumps(job.__dict__))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.driver", str(job_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if o.client_cpus:
            procstat.pin([proc.pid], o.client_cpus)  # before it starts any thread
        procs.append(proc)
    pids = servers.pids(spec.server)
    _sleep_until(start_at + o.warmup)
    cpu0, t0 = procstat.cpu_by_process(pids), time.monotonic()
    client0 = [procstat.cpu_seconds([p.pid]) for p in procs]
    _sleep_until(start_at + o.warmup + o.duration)
    cpu1, t1 = procstat.cpu_by_process(pids), time.monotonic()
    client1 = [procstat.cpu_seconds([p.pid]) for p in procs]
    window = t1 - t0
    by_process = [round((cpu1[pid] - cpu0.get(pid, 0.0)) / window, 3) for pid in cpu1]
    merged = new_histogram()
    calls, results, errors, client_qps = 0, 0, dict[str, int](), []
    for proc in procs:
        out, err = proc.communicate(timeout=o.duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"driver for {scenario} failed: {err.decode(errors='replace')[-2000:]}")
        result = json.loads(out)
        merged.decode_and_add(result["histogram"])
        calls += result["calls"]
        results += result["results"]
        client_qps.append(round(result["results"] / o.duration, 1))  # records/s of a streaming scenario
        for code, n in result["errors"].items():
            errors[code] = errors.get(code, 0) + n
    clients_cpu = [round((b - a) / window, 3) for a, b in zip(client0, client1, strict=True)]
    busy = [c for c in by_process if c > 0.005]  # a supervising parent that only waits is left out
    return Round(
        scenario,
        level,
        merged,
        calls,
        sum(by_process),
        errors,
        busy or by_process,
        client_qps,
        clients_cpu,
        results,
    )


@dataclass
class Round:
    """One measurement of one scenario at one level."""

    scenario: str
    in_flight: int
    histogram: HdrHistogram
    calls: int
    server_cpu: float
    errors: dict[str, int]
    server_cpu_by_process: list[float] = field(default_factory=list)  # cores, per busy server process
    client_qps: list[float] = field(default_factory=list)  # per client process (streaming: records/s)
    client_cpu: list[float] = field(default_factory=list)  # cores, per client process
    results: int = 0  # records received in the window (= calls, but for a streaming scenario)


def combine(rounds: list[Round], duration: float) -> dict[str, Any]:
    """The rounds of one scenario at one level as one row: latency from all their calls (histograms
    merged), throughput and server CPU as the median round (one noisy round does not move it)."""
    merged = new_histogram()
    errors: dict[str, int] = {}
    for r in rounds:
        merged.add(r.histogram)
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    calls = sum(r.calls for r in rounds)
    row = {"scenario": rounds[0].scenario, "in_flight": rounds[0].in_flight, **summarise(merged, calls, 1.0)}
    if not calls:  # no call both began and ended inside a window (a long stream): no latency to report
        row.update({key: None for key in row if key.endswith("_us")})
    qps = sorted(r.calls / duration for r in rounds)
    row["qps"] = round(statistics.median(qps), 1)
    row["qps_rounds"] = [round(q, 1) for q in qps]
    row["server_cpu"] = round(statistics.median(r.server_cpu for r in rounds), 2)
    median = sorted(rounds, key=lambda r: r.calls)[(len(rounds) - 1) // 2]
    row["processes"] = {  # of the median round (by calls)
        "server_cpu": median.server_cpu_by_process,
        "client_qps": median.client_qps,
        "client_cpu": median.client_cpu,
    }
    if SCENARIOS[row["scenario"]].conditions > 1:  # results as they arrived, whether or not calls ended
        row["records_per_s"] = round(statistics.median(r.results / duration for r in rounds), 1)
    row["errors"] = errors
    return row


@contextmanager
def _started(servers: Servers, name: str, workers: int = 1) -> Iterator[None]:
    log = servers.logs / f"{name}.log"
    proc = (
        start_server_process(servers.config, name, log=log, workers=workers)
        if workers > 1
        else start_server_process(servers.config, name, log=log)
    )
    servers.procs[name] = proc
    try:
        wait_ready(servers.settings, name, "monitor/monitor-01", timeout=120)
        if servers.server_cpus:
            procstat.pin(procstat.tree(proc.pid), servers.server_cpus)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _prepare(dataset: Dataset, base: Settings, home: Path) -> Settings:
    total = dataset_bytes(dataset)
    with tqdm(total=total, desc="copying dataset", unit="B", unit_scale=True, file=sys.stderr) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        s = copy_into(dataset, base, home, advance)
    s = s.replace(
        prefecture_port=free_port(),
        fuhyo_port=free_port(),
        national_port=free_port(),
        prefecture_metrics_port=-1,
        fuhyo_metrics_port=-1,
        national_metrics_port=-1,
        backup_enabled=False,
        map_size=max(base.map_size, 4 * total),
        rate_limits="",  # the benchmark measures throughput: no caller is limited
    )
    Pki(s.pki_path).ensure_dev(s.trust_domain, DEV_IDENTITIES)
    register_dev_operators(s)
    register_dev_operators(s, opener=open_fuhyo_store)
    return s


def _wanted(o: Options, peers: list[str]) -> list[str]:
    servers = ("prefecture", "fuhyo", *peers)
    return [name for name in o.scenarios if SCENARIOS[name].server in servers]


def _measure_all(
    servers: Servers, samples: dict[str, Any], names: list[str], o: Options, label: str
) -> list[dict[str, Any]]:
    """Every scenario at every level; at each level the scenarios take turns, `o.rounds` times."""
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(o.in_flight) * o.rounds * len(names), desc=label, unit="run", file=sys.stderr) as bar:
        for level in o.in_flight:
            rounds: dict[str, list[Round]] = {name: [] for name in names}
            for _ in range(o.rounds):
                for name in names:
                    bar.set_postfix_str(f"{name} × {level}")
                    rounds[name].append(measure(servers, samples, name, level, o))
                    bar.update()
            rows += [combine(rounds[name], o.duration) for name in names]
    return rows


def run(base: Settings, o: Options) -> dict[str, Any]:
    """Build or reuse the dataset, start everything, measure every scenario at every level."""
    dataset = ensure_dataset(base, o.cache_dir, o.residents, rebuild=o.rebuild)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory(prefix="juki-bench-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        s = _prepare(dataset, base, home)
        logs = home / "logs"
        logs.mkdir()
        servers = Servers(s, write_settings(s, home / "juki.toml"), logs, server_cpus=o.server_cpus)
        servers.targets = {"prefecture": s.prefecture_target, "fuhyo": s.fuhyo_target}
        stack.enter_context(_started(servers, "prefecture"))
        stack.enter_context(_started(servers, "fuhyo"))
        peers = _start_peers(stack, servers, home) if o.peers else []
        rows = _measure_all(servers, dataset.samples, _wanted(o, peers), o, "measuring")
        memory = procstat.memory_mb(servers.procs["prefecture"].pid)
        store_bytes = (s.data_path / "data.mdb").stat().st_size  # LMDB grows its file as pages are used
        floor = storage_floor(s, dataset.samples["codes"], seconds=max(1.0, o.duration))
        scaling = _worker_scaling(stack, servers, dataset.samples, o)
    return {
        "benchmark": "lookup",
        "started": started,
        "machine": procstat.machine(),
        "dataset": dataset.describe(),
        "options": {
            "in_flight": list(o.in_flight),
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "rounds": o.rounds,
            "client_processes": f"1 at 1 in flight, else {o.clients}",
            "channels_per_client": o.channels,
            "transport": "grpc.aio over mTLS on 127.0.0.1",
            "server_cpus": list(o.server_cpus),
            "client_cpus": list(o.client_cpus),
        },
        "scenarios": {name: SCENARIOS[name].title for name in o.scenarios}
        | {LMDB_READ: "in-process LMDB read"},
        "peers": peers,
        "results": rows,
        "storage_floor": floor,
        "workers": scaling,
        "prefecture_memory_mb": memory,
        "prefecture_store_bytes": store_bytes,
    }


def _worker_scaling(
    stack: ExitStack, servers: Servers, samples: dict[str, Any], o: Options
) -> dict[str, Any] | None:
    """Ping and Lookup again with `o.workers` prefectural server processes sharing the port."""
    if o.workers <= 1:
        return None
    stack.close()  # everything stops; the prefectural server comes back with several workers
    with _started(servers, "prefecture", workers=o.workers):
        rows = _measure_all(servers, samples, ["ping", "lookup_random"], o, f"{o.workers} workers")
    return {"processes": o.workers, "results": rows}


def _start_peers(stack: ExitStack, servers: Servers, home: Path) -> list[str]:
    """PostgreSQL and Redis holding the same records, each behind the same gRPC front end."""
    from bench import peers as peer_mod

    available = peer_mod.peers_available()
    started = []
    for kind in ("redis", "postgres"):
        if not available.get(kind):
            print(
                f"{kind}: not installed (apt-get install postgresql redis-server); skipped", file=sys.stderr
            )
            continue
        started.append(kind)
        stack.enter_context(peer_mod.serving_peer(kind, servers, home))
    return started
