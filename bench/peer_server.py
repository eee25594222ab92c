"""The front end of the lookup benchmark's peers: `juki.v1.Prefecture` Ping and Lookup with the record read
from Redis or PostgreSQL instead of LMDB.

Everything else is the prefectural server's own: its TLS credentials and identity, the interceptor chain
(identity → authorization → audit → metrics) with a real audit trail (in this front end's own directory),
validation, minimisation by purpose, the response, the event loop and the drain on SIGTERM. A peer holds
the bytes LMDB holds (bench.peers), so a call parses the record and unseals the My Number as there.

    python -m bench.peer_server --config juki.toml --backend redis --url redis://127.0.0.1:6400/0 --port N

Lookup by 住民票コード only (an unknown code is NOT_FOUND: there is no national server behind a peer);
by My Number it answers UNIMPLEMENTED, as do the Prefecture methods the benchmark does not drive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import click
import grpc
import redis.asyncio
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc, records_pb2

from bench.peers import COLUMNS, KINDS, TABLE, redis_keys
from server.app import (
    PREFECTURE_SERVICE,
    RunningServer,
    _attach_audit,
    _open_trail,
    _start,
    serve,
)
from server.domain.errors import DomainError, ErrorKind, nobody
from server.domain.minimise import resident_view
from server.identity.policy import Policy
from server.observability.logs import configure as configure_logs
from server.services.auditing import TrailAuditor
from server.services.chain import AccessInterceptor
from server.services.prefecture import LOCAL, Context, checked_lookup
from server.settings import Settings
from server.storage import registry as registry_dbs
from server.storage.lmdbenv import LmdbEnv
from server.storage.registry import Registry
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer

Stored = tuple[bytes, bytes | None]  # record bytes, sealed My Number


class RecordSource(Protocol):
    """Where a front end reads a resident's stored bytes."""

    async def fetch(self, resident_code: str, with_number: bool) -> Stored | None:
        """The record's bytes and, when asked for and present, its sealed My Number; None when unknown."""

    async def close(self) -> None: ...


class RedisSource:
    """GET of the resident's record (MGET of record and sealed My Number), over a pool of connections."""

    def __init__(self, url: str, connections: int) -> None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=connections, timeout=10)
        self._redis = redis.asyncio.Redis(connection_pool=pool)

    async def fetch(self, resident_code: str, with_number: bool) -> Stored | None:
        record_key, number_key = redis_keys(resident_code)
        if with_number:
            record, sealed = await self._redis.mget([record_key, number_key])
        else:
            record, sealed = await self._redis.get(record_key), None
        if not isinstance(record, bytes):
            return None
        return record, sealed if isinstance(sealed, bytes) else None

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


class PostgresSource:
    """A primary-key read of `residents`, over an asyncpg pool (statements prepared once per connection)."""

    _WITH = f"SELECT {COLUMNS[1]}, {COLUMNS[2]} FROM {TABLE} WHERE {COLUMNS[0]} = $1"
    _WITHOUT = f"SELECT {COLUMNS[1]} FROM {TABLE} WHERE {COLUMNS[0]} = $1"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, connections: int) -> PostgresSource:
        return cls(await asyncpg.create_pool(url, min_size=connections, max_size=connections))

    async def fetch(self, resident_code: str, with_number: bool) -> Stored | None:
        row = await self._pool.fetchrow(self._WITH if with_number else self._WITHOUT, resident_code)
        if row is None:
            return None
        return row[0], (row[1] if with_number else None)

    async def close(self) -> None:
        await self._pool.close()


async def open_source(backend: str, url: str, connections: int) -> RecordSource:
    if backend == "redis":
        return RedisSource(url, connections)
    if backend == "postgres":
        return await PostgresSource.connect(url, connections)
    raise ValueError(f"unknown backend {backend!r}")


class PeerPrefectureService(prefecture_pb2_grpc.PrefectureServicer):
    """Ping and Lookup of `juki.v1.Prefecture` over a RecordSource (server.services.prefecture's Lookup
    with the LMDB read replaced by the peer's)."""

    def __init__(self, source: RecordSource, sealer: MyNumberSealer, policy: Callable[[], Policy]) -> None:
        self._source = source
        self._sealer = sealer
        self._policy = policy  # the chain's current policy (reloaded on SIGHUP)

    async def Ping(
        self, request: prefecture_pb2.PingRequest, context: Context
    ) -> prefecture_pb2.PingResponse:
        return prefecture_pb2.PingResponse()

    async def Lookup(
        self, request: prefecture_pb2.LookupRequest, context: Context
    ) -> prefecture_pb2.LookupResponse:
        key, with_number = checked_lookup(request, self._policy())
        if key == "my_number":
            # not built (the benchmark looks peers up by code only); a domain error, so that the chain
            # writes the call's entry before the status goes out
            raise DomainError(
                ErrorKind.UNIMPLEMENTED, "a peer front end looks up by resident_code only", "UNIMPLEMENTED"
            )
        stored = await self._source.fetch(request.resident_code, with_number)
        if stored is None:
            raise nobody()
        assert stored is not None
        raw, sealed = stored
        record = records_pb2.ResidentRecord()
        record.ParseFromString(raw)
        number = self._sealer.open(record.resident_code, sealed) if sealed is not None else ""
        return prefecture_pb2.LookupResponse(record=resident_view(record, number), source=LOCAL)


async def start_peer_front(
    settings: Settings,
    *,
    backend: str,
    url: str,
    state_dir: Path,
    connections: int = 8,
    metrics_port: int = -1,
) -> RunningServer:
    """The front end on `settings.prefecture_port`, as `settings.prefecture_identity`.

    `state_dir` holds what is this process's own: its audit trail and keys, and an empty store that the
    shared server start-up reports gauges of and whose (empty) operator registry refuses every operator.
    """
    sealer = MyNumberSealer(DataKeys.load(settings.keys_path))  # the prefectural store's: load, never create
    state_dir.mkdir(parents=True, exist_ok=True)
    env = LmdbEnv(state_dir / "store", DB_NAMES + registry_dbs.DB_NAMES, map_size=1 << 24)
    store = ResidentStore(env, sealer)
    trail = _open_trail(
        settings, state_dir / "audit", state_dir / "keys" / "audit.json", state_dir / "keys" / "auditor.json"
    )
    source = await open_source(backend, url, connections)
    policy_ref: list[AccessInterceptor] = []
    service = PeerPrefectureService(source, sealer, lambda: policy_ref[0].policy)

    def add(server: grpc.aio.Server) -> None:
        prefecture_pb2_grpc.add_PrefectureServicer_to_server(service, server)  # type: ignore[no-untyped-call]

    running = await _start(
        settings,
        identity=settings.prefecture_identity,
        port=settings.prefecture_port,
        store=store,
        services=(PREFECTURE_SERVICE,),
        add_servicers=add,
        metrics_port=metrics_port,
        operators=Registry(env).operator,
        auditor=TrailAuditor(trail),
    )
    _attach_audit(running, trail, settings)
    policy_ref.append(running.access)
    running.on_stop.append(source.close)
    await running.set_health(True)
    return running


@click.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--backend", type=click.Choice(KINDS), required=True)
@click.option("--url", required=True, help="redis://… or postgresql://… of the loaded peer")
@click.option("--port", type=int, required=True, help="listen port (on the settings' host)")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="this front end's audit trail and keys [default: peer-BACKEND next to the config]",
)
@click.option("--pool-size", default=8, show_default=True, help="connections to the peer")
@click.option("--metrics-port", default=-1, show_default=True, help="/metrics port (negative: none)")
@click.option("-v", "--verbose", is_flag=True)
def main(
    config: Path,
    backend: str,
    url: str,
    port: int,
    state_dir: Path | None,
    pool_size: int,
    metrics_port: int,
    verbose: bool,
) -> None:
    """The prefectural front end (Ping, Lookup) over a Redis or PostgreSQL peer."""
    configure_logs(verbose)
    settings = Settings.load(config).replace(prefecture_port=port)
    state = state_dir or config.parent / f"peer-{backend}"

    async def start(s: Settings) -> RunningServer:
        return await start_peer_front(
            s, backend=backend, url=url, state_dir=state, connections=pool_size, metrics_port=metrics_port
        )

    def ready(running: RunningServer) -> None:
        where = url.split("@")[-1]  # no user name in the log
        click.echo(f"peer front end ({backend} at {where}) listening on {settings.host}:{running.port}")
        click.echo("ready")

    asyncio.run(serve(settings, start, on_ready=ready))


if __name__ == "__main__":
    main()
