"""一括提供 at scale (issue 18 item 2): records/s of one chunked BatchProvide of 10k, 100k and 1M 住民票コード
conditions on the cached 2M dataset, beside the unary Lookup QPS of the same run, with the server's peak
RSS (VmHWM, reset before each batch) for each size.

    .venv/bin/python -m bench.batch_sizes [--dataset DIR] [--sizes 10000,100000,1000000] [--chunk 1000]

The dataset (`--dataset DIR`, else the harness's cache, built first when absent) is only read: its stores are
copied into a temporary home first. Its store must be of this code's schema.
The conditions cycle through the dataset's sample codes (20,000 residents on the register). Writes
bench/results/batch-2M.{json,md}. Short runs: on a shared 2-core machine the client and the server compete
for the same cores, so the numbers are orientation, and the ratio (same run) is what to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2_grpc
from tqdm import tqdm

from bench import procstat
from bench.dataset import Dataset, ensure_dataset, load_dataset
from bench.harness import Options, Servers, _prepare, _started, measure
from bench.scenarios import POLICE, PROVIDE_PURPOSE, batch_requests
from clients.channel import channel_credentials, secure_channel
from clients.launch import write_settings
from server.identity.pki import Pki
from server.settings import Settings

SIZES = (10_000, 100_000, 1_000_000)
OUT = Path("bench/results")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: 5 > clear_refs); False when this kernel or user may not."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _approval(s: Settings, count: int) -> str:
    channel = secure_channel(Pki(s.pki_path), "admin/admin-01", s.prefecture_target)
    try:
        stub: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        request = admin_pb2.IssueApprovalRequest(
            caller=f"spiffe://{s.trust_domain}/{POLICE}", purpose=PROVIDE_PURPOSE, max_count=count
        )
        return str(stub.IssueApproval(request, timeout=10).token)
    finally:
        channel.close()


def _batch(s: Settings, pid: int, codes: list[str], size: int, chunk: int) -> dict[str, Any]:
    """One chunked BatchProvide of `size` conditions: records/s received, the server's peak RSS."""
    token = _approval(s, size)
    reset = _reset_peak(pid)
    before = _status_kib(pid, "VmRSS")
    options = [("grpc.max_receive_message_length", 16 << 20)]
    credentials = channel_credentials(Pki(s.pki_path), POLICE)
    channel = grpc.secure_channel(s.prefecture_target, credentials, options=options)
    stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    found = received = 0
    anon = _status_kib(pid, "RssAnon")
    started = time.perf_counter()
    try:
        requests: Iterator[Any] = batch_requests(codes, 0, size, chunk, approval_token=token)
        with tqdm(total=size, desc=f"batch of {size:,}", unit="rec", unit_scale=True, file=sys.stderr) as bar:
            for answer in stub.BatchProvide(requests, timeout=3600):
                n = len(answer.results)
                received += n
                found += sum(1 for r in answer.results if r.HasField("record"))
                anon = max(anon, _status_kib(pid, "RssAnon"))  # the heap, without the mapped store
                bar.update(n)
    finally:
        channel.close()
    seconds = time.perf_counter() - started
    return {
        "conditions": size,
        "chunk": chunk,
        "received": received,
        "found": found,
        "seconds": round(seconds, 2),
        "records_per_s": round(received / seconds, 1),
        "server_rss_before_mib": round(before / 1024, 1),
        "server_peak_rss_mib": round(_status_kib(pid, "VmHWM") / 1024, 1),
        "server_peak_anon_mib": round(anon / 1024, 1),  # sampled at each answer
        "peak_reset": reset,
    }


def run(
    base: Settings, dataset: Dataset, sizes: tuple[int, ...], chunk: int, seconds: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="juki-batch-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        s = _prepare(dataset, base, home)
        logs = home / "logs"
        logs.mkdir()
        servers = Servers(s, write_settings(s, home / "juki.toml"), logs)
        servers.targets = {"prefecture": s.prefecture_target}
        stack.enter_context(_started(servers, "prefecture"))
        pid = servers.procs["prefecture"].pid
        samples = dataset.samples
        o = Options(duration=seconds, warmup=1.0)
        print(f"unary Lookup, 32 in flight, {seconds:g} s …", file=sys.stderr)
        lookup = measure(servers, samples, "lookup_random", 32, o)
        lookup_qps = round(lookup.calls / seconds, 1)
        print(f"unary Lookup: {lookup_qps:,} calls/s", file=sys.stderr)
        rows = []
        for size in sizes:
            row = _batch(s, pid, samples["codes"], size, chunk)
            row["ratio_to_lookup"] = round(row["records_per_s"] / lookup_qps, 1) if lookup_qps else None
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
        after = measure(servers, samples, "lookup_random", 32, o)
    return {
        "benchmark": "batch_sizes",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": procstat.machine(),
        "dataset": {**dataset.describe(), "directory": str(dataset.directory)},
        "lookup_qps_32_in_flight": lookup_qps,
        "lookup_qps_32_in_flight_after": round(after.calls / seconds, 1),
        "lookup_errors": lookup.errors,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lookup = result["lookup_qps_32_in_flight"]
    chunk = result["rows"][0]["chunk"] if result["rows"] else "—"
    lines = [
        f"# BatchProvide by size ({result['dataset']['residents']:,} residents), {result['started']}",
        "",
        f"Unary Lookup (住民票コード, 32 in flight, 2 client processes): {lookup:,} calls/s before the"
        f" batches, {result['lookup_qps_32_in_flight_after']:,} after. One BatchProvide stream each, in"
        f" chunks of {chunk} conditions (sample codes cycled); the server's peak RSS is VmHWM, reset"
        " before each batch (it counts the store's mapped pages read too; RssAnon, sampled at each answer,"
        " is the heap). A shared 2-core machine: client and server share the cores.",
        "",
        "| conditions | seconds | records/s | × unary Lookup QPS | server RSS before (MiB) "
        "| server peak RSS (VmHWM, MiB) | server peak RssAnon (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['conditions']:,} | {r['seconds']} | {r['records_per_s']:,} | {r['ratio_to_lookup']} "
            f"| {r['server_rss_before_mib']} | {r['server_peak_rss_mib']} | {r['server_peak_anon_mib']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--residents", type=int, default=2_000_000)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/bench-cache"))
    parser.add_argument("--dataset", type=Path, default=None, help="a dataset directory [the cache's]")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--chunk", type=int, default=1000, help="conditions a message (at most 1000)")
    parser.add_argument("--lookup-seconds", type=float, default=3.0)
    parser.add_argument("--name", default="batch-2M")
    args = parser.parse_args(argv)
    base = Settings.load()
    if args.dataset is not None:
        dataset = load_dataset(args.dataset)
    else:  # the harness's own cache (built first when absent, as `juki bench run` does)
        dataset = ensure_dataset(base, base.path(args.cache_dir), args.residents)
    sizes = tuple(int(x) for x in args.sizes.split(",") if x)
    result = run(base, dataset, sizes, args.chunk, args.lookup_seconds)
    (OUT / args.name).parent.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (OUT / f"{args.name}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
