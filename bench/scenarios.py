"""What each benchmark scenario calls, as whom, with which keys.

A scenario turns a call number into one RPC. Keys come from the dataset's samples (real residents of the
seeded population), so every call finds its record; `hot` cycles a handful of keys (page cache and
parse of the same records), `random` spreads over the whole sample.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from juki.v1 import fuhyo_pb2, fuhyo_pb2_grpc, prefecture_pb2, prefecture_pb2_grpc

POLICE, PROVIDE_PURPOSE = "agency/police", "bt6-police-driving-licence"
OPERATOR, SEARCH_PURPOSE = "operator/op-0001", "identity-check"
BATCH_CONDITIONS = 1000  # the server's default batch_threshold: no approval needed
BATCH_CHUNK = 500  # conditions a message (BatchProvideRequest.conditions; the server takes up to 1000)


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # which endpoint: prefecture, fuhyo, redis, postgres
    identity: str
    title: str
    conditions: int = 1  # records asked for by one call (a BatchProvide carries many)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("ping", "prefecture", POLICE, "empty RPC (the floor)"),
        Scenario("lookup_random", "prefecture", POLICE, "Lookup by 住民票コード, random keys"),
        Scenario("lookup_hot", "prefecture", POLICE, "Lookup by 住民票コード, 16 hot keys"),
        Scenario("lookup_my_number", "prefecture", POLICE, "Lookup by 個人番号"),
        Scenario("search", "prefecture", OPERATOR, "Search by 4情報 (kana name + birth date)"),
        Scenario(
            "search_address", "prefecture", OPERATOR, "Search by kana name + sex + address prefix (市町村)"
        ),
        Scenario("provide", "prefecture", POLICE, "Provide by 住民票コード"),
        Scenario(
            "batch_provide",
            "prefecture",
            POLICE,
            f"BatchProvide, {BATCH_CONDITIONS:,} 住民票コード a call in chunks of {BATCH_CHUNK}"
            " (records/s: results received)",
            BATCH_CONDITIONS,
        ),
        Scenario("fuhyo_provide_my_number", "fuhyo", POLICE, "Fuhyo.Provide with My Number"),
        Scenario("redis_lookup", "redis", POLICE, "Lookup, record from Redis (GET)"),
        Scenario("postgres_lookup", "postgres", POLICE, "Lookup, record from PostgreSQL (PK read)"),
    )
}
LMDB_READ = "lmdb_read"  # in-process, measured by the harness itself


def call_maker(
    name: str, channel: grpc.aio.Channel, samples: dict[str, Any]
) -> Callable[[int], Awaitable[Any]]:
    """The call of scenario `name` for call number i (the driver times it)."""
    codes: list[str] = samples["codes"]
    if name == "fuhyo_provide_my_number":
        fuhyo: Any = fuhyo_pb2_grpc.FuhyoStub(channel)  # type: ignore[no-untyped-call]
        fuhyo_codes: list[str] = samples["fuhyo_codes"]
        tag = f"bench-{os.getpid()}"

        def fuhyo_provide(i: int) -> Awaitable[Any]:
            return fuhyo.Provide(  # type: ignore[no-any-return]
                fuhyo_pb2.FuhyoProvideRequest(
                    resident_code=fuhyo_codes[i % len(fuhyo_codes)],
                    purpose=PROVIDE_PURPOSE,
                    include_my_number=True,
                    request_id=f"{tag}-{i}",
                )
            )

        return fuhyo_provide
    stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    P = prefecture_pb2
    if name == "ping":
        ping = P.PingRequest()
        return lambda i: stub.Ping(ping)
    if name in ("lookup_random", "redis_lookup", "postgres_lookup"):
        return lambda i: stub.Lookup(
            P.LookupRequest(resident_code=codes[i % len(codes)], purpose=PROVIDE_PURPOSE)
        )
    if name == "lookup_hot":
        hot = codes[:16]
        return lambda i: stub.Lookup(
            P.LookupRequest(resident_code=hot[i % len(hot)], purpose=PROVIDE_PURPOSE)
        )
    if name == "lookup_my_number":
        numbers: list[str] = samples["my_numbers"]
        return lambda i: stub.Lookup(
            P.LookupRequest(my_number=numbers[i % len(numbers)], purpose=PROVIDE_PURPOSE)
        )
    if name == "search":
        conditions: list[list[str]] = samples["searches"]

        def search(i: int) -> Awaitable[Any]:
            kana, birth = conditions[i % len(conditions)][:2]
            request = P.SearchRequest(name_kana=kana, birth_date=birth, purpose=SEARCH_PURPOSE)
            return stub.Search(request)  # type: ignore[no-any-return]

        return search
    if name == "search_address":
        by_address: list[list[Any]] = samples["searches"]

        def search_address(i: int) -> Awaitable[Any]:
            kana, _, sex, prefix = by_address[i % len(by_address)]
            request = P.SearchRequest(name_kana=kana, sex=sex, address_prefix=prefix, purpose=SEARCH_PURPOSE)
            return stub.Search(request)  # type: ignore[no-any-return]

        return search_address
    if name == "provide":
        return lambda i: stub.Provide(
            P.ProvideRequest(resident_code=codes[i % len(codes)], purpose=PROVIDE_PURPOSE)
        )
    raise ValueError(f"unknown scenario {name!r}")


def batch_requests(
    codes: list[str], first: int, count: int, chunk: int = BATCH_CHUNK, **extra: Any
) -> Iterator[prefecture_pb2.BatchProvideRequest]:
    """One BatchProvide stream: `count` sample codes from position `first`, `chunk` conditions a message;
    the first message declares them all (and carries `extra`, e.g. an approval_token)."""
    for start in range(0, count, chunk):
        request = prefecture_pb2.BatchProvideRequest(
            conditions=[
                prefecture_pb2.BatchCondition(
                    condition_id=str(k), resident_code=codes[(first + k) % len(codes)]
                )
                for k in range(start, min(count, start + chunk))
            ]
        )
        if start == 0:
            request.purpose, request.declared_count = PROVIDE_PURPOSE, count
            for name, value in extra.items():
                setattr(request, name, value)
        yield request


def results_of(answer: Any) -> int:
    """How many conditions a BatchProvide answer answers: a chunk's results, or the one."""
    return len(answer.results) or 1


def stream_maker(
    name: str, channel: grpc.aio.Channel, samples: dict[str, Any]
) -> Callable[[int], AsyncIterator[Any]]:
    """The call of a scenario whose call streams many results (`conditions` > 1): call number i as the
    stream of its answers (the driver times the call and counts each answer's results as it arrives)."""
    if name != "batch_provide":
        raise ValueError(f"not a streaming scenario: {name!r}")
    stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    codes: list[str] = samples["codes"]
    return lambda i: stub.BatchProvide(batch_requests(codes, i * BATCH_CONDITIONS, BATCH_CONDITIONS))
