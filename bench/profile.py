"""Where a call's time goes on the prefectural server: py-spy samples the server process while the benchmark's
drivers load it with one scenario, then another (by default the empty RPC, then Lookup), and the report puts
each function's time per call side by side — what the second scenario costs beyond the first.

    python -m bench.profile --residents 200000 --in-flight 32 --duration 10

Samples are taken without pausing the server, of the thread that holds the GIL only (py-spy --nonblocking
--gil: a thread waiting for the GIL is not counted as busy, and the server's Python work is bound by the
one GIL), Python frames only (time in grpc's C core shows as the Python frame that called into it).
Per-call figures are samples × interval / calls.
Writes bench/results/profile-<residents>.{md,json}.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from bench.dataset import ensure_dataset
from bench.harness import Options, Servers, _prepare, _started, measure
from clients.launch import write_settings
from server.settings import Settings

RATE = 200  # samples per second
_LINE = re.compile(r":\d+\)$")
# frames under every sample of their thread (the process's entry, the event loop's run, a thread's start):
# their inclusive time says nothing about a call
_SCAFFOLD = re.compile(
    r"\((click/|<frozen runpy>|clients/|threading\.py|asyncio/runners\.py)"
    r"|^BaseEventLoop\.(run_forever|run_until_complete|_run_once) "
)


def _record(pid: int, seconds: float, out: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(RATE),
            "--nonblocking",
            "--gil",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )


def per_call(raw: Path, calls_per_s: float, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Inclusive and self µs per call of each function (file-qualified) in py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")[1:]]
        n = int(count)
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    scale = 1e6 / RATE / (calls_per_s * int(seconds))
    return {k: v * scale for k, v in inclusive.items()}, {k: v * scale for k, v in own.items()}


def profile(base: Settings, o: Options, scenarios: tuple[str, str]) -> dict[str, Any]:
    dataset = ensure_dataset(base, o.cache_dir, o.residents)
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="juki-profile-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        s = _prepare(dataset, base, home)
        logs = home / "logs"
        logs.mkdir()
        servers = Servers(s, write_settings(s, home / "juki.toml"), logs)
        servers.targets = {"prefecture": s.prefecture_target, "fuhyo": s.fuhyo_target}
        stack.enter_context(_started(servers, "prefecture"))
        pid = servers.procs["prefecture"].pid
        for name in scenarios:
            out = home / f"{name}.txt"
            seconds = max(1.0, o.duration - 1)
            delay = o.driver_start + o.warmup + 0.5
            spy = threading.Timer(delay, _record, (pid, seconds, out))
            spy.start()
            print(f"profiling {name} × {o.in_flight[0]} …", file=sys.stderr)
            result = measure(servers, dataset.samples, name, o.in_flight[0], o)
            spy.join()
            qps = result.calls / o.duration
            inclusive, own = per_call(out, qps, seconds)
            found[name] = {
                "qps": round(qps, 1),
                "server_cpu": round(result.server_cpu, 2),
                "inclusive_us": inclusive,
                "self_us": own,
            }
    return found


def report(found: dict[str, Any], scenarios: tuple[str, str], o: Options, top: int = 25) -> str:
    first, second = (found[n] for n in scenarios)
    lines = [
        f"# Profile: {scenarios[1]} beside {scenarios[0]} — {o.residents:,} residents, "
        f"{o.in_flight[0]} in flight",
        "",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%S%z')} with `python -m bench.profile`. py-spy {RATE} Hz, "
        "nonblocking, the thread holding the GIL only, Python frames (C time shows in the frame that called "
        "it). µs per call.",
        "",
        "| scenario | QPS | server CPU (cores) | CPU µs per call |",
        "|---|---|---|---|",
    ]
    for name in scenarios:
        row = found[name]
        cost = row["server_cpu"] / row["qps"] * 1e6
        lines.append(f"| {name} | {row['qps']:,.0f} | {row['server_cpu']} | {cost:,.0f} |")
    for kind in ("inclusive_us", "self_us"):
        a, b = first[kind], second[kind]
        keys = sorted(set(a) | set(b), key=lambda k: -(b.get(k, 0.0) - a.get(k, 0.0)))
        keys = [k for k in keys if not _SCAFFOLD.search(k)][:top]
        lines += [
            "",
            f"## {kind.removesuffix('_us')} time, by the extra cost of {scenarios[1]}",
            "",
            f"| function | {scenarios[0]} | {scenarios[1]} | extra |",
            "|---|---|---|---|",
        ]
        for k in keys:
            lines.append(
                f"| `{k}` | {a.get(k, 0.0):.1f} | {b.get(k, 0.0):.1f} | {b.get(k, 0.0) - a.get(k, 0.0):.1f} |"
            )
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--residents", default=200_000, show_default=True)
@click.option("--in-flight", default=32, show_default=True)
@click.option("--duration", default=10.0, show_default=True, help="seconds measured per scenario")
@click.option("--base", "base_scenario", default="ping", show_default=True)
@click.option("--scenario", default="lookup_random", show_default=True)
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), default=Path("var/bench-cache"), show_default=True
)
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True)
def main(
    residents: int,
    in_flight: int,
    duration: float,
    base_scenario: str,
    scenario: str,
    cache_dir: Path,
    out_dir: Path,
) -> None:
    """Profile the prefectural server under two scenarios and report the second's extra cost per call."""
    o = Options(residents=residents, in_flight=(in_flight,), duration=duration, cache_dir=cache_dir)
    scenarios = (base_scenario, scenario)
    found = profile(Settings.load(), o, scenarios)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"profile-{residents}"
    stem.with_suffix(".json").write_text(json.dumps(found, indent=1, sort_keys=True))
    stem.with_suffix(".md").write_text(report(found, scenarios, o))
    print(f"md: {stem.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
