"""One client process of the benchmark: keeps `in_flight` calls of one kind outstanding on one mTLS channel,
records every latency (ns) in an HDR histogram, and prints the encoded histogram as JSON on stdout.

Run by the harness as `python -m bench.driver JOB.json`. Several drivers run at once for
one measurement; they agree on a wall-clock start so their windows coincide: a warm-up (not recorded),
then `duration` seconds recorded. Only calls that start and end inside the window count.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hdrh.histogram import HdrHistogram

from bench.scenarios import call_maker
from clients.channel import aio_channel
from server.identity.pki import Pki

LOWEST_NS, HIGHEST_NS, DIGITS = 1, 60_000_000_000, 3  # nanoseconds, up to a minute, 0.1% precision


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, DIGITS)


@dataclass(frozen=True)
class Job:
    scenario: str
    target: str
    pki_dir: str
    identity: str
    in_flight: int
    start_at: float  # time.time() at which the warm-up begins
    warmup: float
    duration: float
    samples: dict[str, Any]

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


async def _measure(job: Job, call: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    histogram = new_histogram()
    errors: dict[str, int] = {}
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    begin = time.perf_counter_ns() + int(job.warmup * 1e9)
    end = begin + int(job.duration * 1e9)
    counter = iter(range(1 << 62))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter_ns()
            if t0 >= end:
                return
            try:
                await call(i)
            except grpc.aio.AioRpcError as err:
                name = err.code().name
                errors[name] = errors.get(name, 0) + 1
                continue
            t1 = time.perf_counter_ns()
            if t0 >= begin and t1 <= end:
                histogram.record_value(t1 - t0)

    await asyncio.gather(*(worker() for _ in range(job.in_flight)))
    return {
        "histogram": histogram.encode().decode("ascii"),
        "calls": histogram.get_total_count(),
        "errors": errors,
    }


async def run(job: Job) -> dict[str, Any]:
    channel = aio_channel(Pki(Path(job.pki_dir)), job.identity, job.target)
    try:
        await channel.channel_ready()
        return await _measure(job, call_maker(job.scenario, channel, job.samples))
    finally:
        await channel.close()


def main() -> None:
    job = Job.from_json(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
