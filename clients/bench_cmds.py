"""`juki bench …`: the lookup benchmark of SPEC §8 (`run`, what `make bench` calls) and the smaller
first measurements (`lookup`, `propagation`, `fuhyo`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from server.settings import Settings


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("comma-separated whole numbers, e.g. 1,8,32,128") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("at least one level, each ≥ 1")
    return levels


def _cpus(text: str, option: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        cpus = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter("comma-separated CPU numbers, e.g. 0 or 0,1", param_hint=option) from None
    available = os.sched_getaffinity(0)
    if not cpus or not set(cpus) <= available:
        raise click.BadParameter(f"CPUs of this machine: {sorted(available)}", param_hint=option)
    return cpus


@click.group()
def bench() -> None:
    """Benchmarks: lookup latency and throughput next to the empty RPC, and more."""


@bench.command("lookup")
@click.option("--calls", default=2000, show_default=True, help="calls of each kind")
@click.option("--residents", default=100_000, show_default=True, help="residents seeded for the run")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write JSON results here")
@click.pass_obj
def bench_lookup(settings: Settings, calls: int, residents: int, out: Path | None) -> None:
    """First Lookup latency next to an empty RPC, same server, same mTLS transport, one run."""
    from bench.lookup import run_lookup_bench

    _report(run_lookup_bench(settings, calls, residents), out)


@bench.command("propagation")
@click.option("--changes", default=100_000, show_default=True, help="backlog of changes to drain")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write JSON results here")
@click.pass_obj
def bench_propagation(settings: Settings, changes: int, out: Path | None) -> None:
    """Apply a backlog while the national server is down, then time its drain (changes/s delivered)."""
    from bench.propagation import run_propagation_bench

    _report(run_propagation_bench(settings, changes), out)


@bench.command("fuhyo")
@click.option("--calls", default=1000, show_default=True, help="calls of each kind")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write JSON results here")
@click.pass_obj
def bench_fuhyo(settings: Settings, calls: int, out: Path | None) -> None:
    """Fuhyo.Provide with and without My Number next to the empty RPC, one run."""
    from bench.fuhyo import run_fuhyo_bench

    _report(run_fuhyo_bench(settings, calls), out)


def _report(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    click.echo(text)
    if out:
        out.write_text(text + "\n")


@bench.command("run")
@click.option("--residents", default=2_000_000, show_default=True, help="population of the cached dataset")
@click.option(
    "--in-flight", "in_flight", default="1,8,32,128", show_default=True, help="levels, comma-separated"
)
@click.option("--duration", default=3.0, show_default=True, help="seconds measured per row")
@click.option("--rounds", default=3, show_default=True, help="rounds per row, scenarios taking turns")
@click.option("--warmup", default=1.0, show_default=True, help="seconds of warm-up per row (not recorded)")
@click.option("--scenario", "scenarios", multiple=True, help="only these scenarios (repeatable)")
@click.option(
    "--workers", default=2, show_default=True, help="also measure with N server processes (≤1: skip)"
)
@click.option("--peers/--no-peers", default=True, show_default=True, help="PostgreSQL and Redis peers")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/bench-cache"),
    show_default=True,
    help="where datasets are kept between runs",
)
@click.option("--rebuild", is_flag=True, help="build the dataset again (measures seeding)")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/results"),
    show_default=True,
)
@click.option("--name", help="output file name without extension [lookup-<residents>]")
@click.option(
    "--driver-start", default=2.5, show_default=True, help="seconds given to client processes to start"
)
@click.option("--clients", default=2, show_default=True, help="client processes above 1 in flight")
@click.option("--channels", default=4, show_default=True, help="connections per client process")
@click.option("--server-cpus", default="", help="pin the servers to these CPUs, e.g. 0 [not pinned]")
@click.option("--client-cpus", default="", help="pin the client processes to these CPUs, e.g. 1 [not pinned]")
@click.pass_obj
def bench_run(
    settings: Settings,
    residents: int,
    in_flight: str,
    duration: float,
    rounds: int,
    warmup: float,
    scenarios: tuple[str, ...],
    workers: int,
    peers: bool,
    cache_dir: Path,
    rebuild: bool,
    out_dir: Path,
    name: str | None,
    driver_start: float,
    clients: int,
    channels: int,
    server_cpus: str,
    client_cpus: str,
) -> None:
    """The full lookup benchmark: every scenario beside the empty RPC at each level; JSON, Markdown, PNG."""
    from bench.harness import Options, run
    from bench.report import write_outputs
    from bench.scenarios import SCENARIOS

    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise click.BadParameter(
            f"unknown {unknown}; choose from {sorted(SCENARIOS)}", param_hint="--scenario"
        )
    if residents < 100:
        raise click.BadParameter("at least 100", param_hint="--residents")
    chosen = tuple(s for s in SCENARIOS if not scenarios or s in scenarios or s == "ping")
    options = Options(
        residents=residents,
        in_flight=_levels(in_flight),
        duration=duration,
        rounds=rounds,
        warmup=warmup,
        scenarios=chosen,
        workers=workers,
        peers=peers,
        cache_dir=settings.path(cache_dir),
        rebuild=rebuild,
        driver_start=driver_start,
        clients=max(1, clients),
        channels=max(1, channels),
        server_cpus=_cpus(server_cpus, "--server-cpus"),
        client_cpus=_cpus(client_cpus, "--client-cpus"),
    )
    result = run(settings, options)
    label = f"{residents // 1_000_000}M" if residents % 1_000_000 == 0 else str(residents)
    paths = write_outputs(result, out_dir, name or f"lookup-{label}")
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
