"""One client process of the benchmark: keeps `in_flight` calls of one kind outstanding over `channels` mTLS
channels (each its own TCP connection: SO_REUSEPORT balances connections, so one channel would pin one
server process), records every latency (ns) in an HDR histogram, and prints the encoded histogram as JSON
on stdout.

Run by the harness as `python -m bench.driver JOB.json`. Several drivers run at once for
one measurement; they agree on a wall-clock start so their windows coincide: a warm-up (not recorded),
then `duration` seconds recorded. Only calls that start and end inside the window count.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hdrh.histogram import HdrHistogram

from bench.scenarios import SCENARIOS, call_maker, results_of, stream_maker
from clients.channel import channel_credentials
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
    channels: int = 1  # connections of this process; the in-flight calls take turns over them

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


class _WindowOver(Exception):
    """A streaming call cut off at the end of the window (neither an error nor a call to record)."""


async def _measure(
    job: Job, calls: list[Callable[[int], Awaitable[Any]]] | list[Callable[[int], AsyncIterator[Any]]]
) -> dict[str, Any]:
    histogram = new_histogram()
    errors: dict[str, int] = {}
    results = 0  # of a streaming scenario: results that arrived inside the window
    await asyncio.sleep(max(0.0, job.start_at - time.time()))
    begin = time.perf_counter_ns() + int(job.warmup * 1e9)
    end = begin + int(job.duration * 1e9)
    counter = iter(range(1 << 62))

    async def one(call: Any, i: int) -> None:
        nonlocal results
        if not streaming:
            await call(i)
            return
        stream = call(i)
        async for answer in stream:
            now = time.perf_counter_ns()
            if now > end:  # the window is over: a long stream would go on loading the next measurement
                stream.cancel()
                raise _WindowOver
            if now >= begin:
                results += results_of(answer)

    async def worker(call: Any) -> None:
        for i in counter:
            t0 = time.perf_counter_ns()
            if t0 >= end:
                return
            try:
                await one(call, i)
            except _WindowOver:
                return
            except grpc.aio.AioRpcError as err:
                name = err.code().name
                errors[name] = errors.get(name, 0) + 1
                continue
            t1 = time.perf_counter_ns()
            if t0 >= begin and t1 <= end:
                histogram.record_value(t1 - t0)

    streaming = SCENARIOS[job.scenario].conditions > 1
    await asyncio.gather(*(worker(calls[k % len(calls)]) for k in range(job.in_flight)))
    return {
        "histogram": histogram.encode().decode("ascii"),
        "calls": histogram.get_total_count(),
        "results": results if streaming else histogram.get_total_count(),
        "errors": errors,
    }


async def run(job: Job) -> dict[str, Any]:
    credentials = channel_credentials(Pki(Path(job.pki_dir)), job.identity)
    # a local subchannel pool: channels to the same target would otherwise share one connection
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(job.target, credentials, options=options)
        for _ in range(max(1, min(job.channels, job.in_flight)))
    ]
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        if SCENARIOS[job.scenario].conditions > 1:
            return await _measure(job, [stream_maker(job.scenario, c, job.samples) for c in channels])
        return await _measure(job, [call_maker(job.scenario, c, job.samples) for c in channels])
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def main() -> None:
    job = Job.from_json(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
