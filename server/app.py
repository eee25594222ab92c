"""Builds and runs each server from one Settings object.

Every listener is mTLS (client certificate required and verified against the deployment CA) behind the
same interceptor chain, with health and reflection. SIGTERM/SIGINT drain and stop; SIGHUP reloads the
revocation list, the policy, and the server's own certificate and CA bundle (also picked up when their
files change) without dropping connections.

The prefectural server may run as several worker processes on one port (`server.workers`): each worker
builds its own server here with `start_prefecture(settings, worker=k)`; worker 0 alone runs the singleton
jobs (outbox relay, backups, retention, store gauges, /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from juki.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fuhyo_pb2,
    fuhyo_pb2_grpc,
    national_pb2,
    national_pb2_grpc,
    prefecture_pb2,
    prefecture_pb2_grpc,
    witness_pb2,
    witness_pb2_grpc,
)

from server.audit.disclosure import disclosure
from server.audit.entries import worker_trail_dir
from server.audit.keys import AuditKeys
from server.audit.trail import AuditTrail
from server.audit.witness import Witness
from server.backup import BackupKey, backup_schedule, server_key_file
from server.domain import operators
from server.domain.retention import erase_expired_persons
from server.domain.search import PageTokens, Searcher
from server.hardening import harden_process
from server.identity.credentials import PeerChannel, ServerTls
from server.identity.peers import PeerIdentities, RevocationList
from server.identity.pki import Pki, SpiffeId
from server.identity.policy import KnownIdentities, Policy, PolicyError
from server.observability.endpoint import MetricsEndpoint
from server.observability.gauges import refresh_loop, set_static
from server.propagation.my_number_link import MyNumberLink
from server.propagation.national_client import NationalClient
from server.propagation.relay import OutboxRelay
from server.services.admin import AdminService
from server.services.auditing import TrailAuditor, TrailReader, housekeeping
from server.services.chain import AccessInterceptor, CallAuditor, OperatorLookup, purpose_methods
from server.services.fuhyo import FuhyoService
from server.services.national import NationalService
from server.services.prefecture import PrefectureService, jst_now
from server.services.rate_limits import RateLimiter, parse_rates
from server.services.reflection import enable_reflection
from server.services.witness import Submitter, WitnessService, log_origin, open_witness, submitters
from server.settings import Settings
from server.storage import registry as registry_dbs
from server.storage.errors import is_storage_error
from server.storage.fuhyo_file import DB_NAMES as FUHYO_DB_NAMES
from server.storage.fuhyo_file import FuhyoFile
from server.storage.lmdbenv import LmdbEnv
from server.storage.record_file import RecordFile
from server.storage.registry import Registry
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer
from server.supervision import Supervisor
from server.tempstore import TempStore

log = logging.getLogger(__name__)

PREFECTURE_SERVICE = prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"]
NATIONAL_SERVICE = national_pb2.DESCRIPTOR.services_by_name["National"]
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
FUHYO_SERVICE = fuhyo_pb2.DESCRIPTOR.services_by_name["Fuhyo"]
WITNESS_SERVICE = witness_pb2.DESCRIPTOR.services_by_name["Witness"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]


def server_credentials(pki: Pki, identity: str) -> grpc.ServerCredentials:
    """TLS that requires a client certificate chained to the deployment CA (following the files)."""
    return ServerTls(pki, identity).credentials()


def open_store(
    settings: Settings,
    *,
    data_dir: Path | None = None,
    keys_file: Path | None = None,
) -> ResidentStore:
    """The prefectural store by default; the national one with its own directories."""
    data = settings.path(data_dir) if data_dir else settings.data_path
    keys = settings.path(keys_file) if keys_file else settings.keys_path
    env = LmdbEnv(data, DB_NAMES + registry_dbs.DB_NAMES, map_size=settings.map_size)
    return ResidentStore(env, MyNumberSealer(DataKeys.load_or_create(keys)))


def open_store_readonly(settings: Settings) -> ResidentStore:
    """The prefectural store opened read-only, for status commands beside a running server: nothing is
    created, nothing written (FileNotFoundError when there is no store)."""
    if not (settings.data_path / "data.mdb").exists():
        raise FileNotFoundError(f"no store in {settings.data_path}")
    env = LmdbEnv(settings.data_path, DB_NAMES, readonly=True)
    return ResidentStore(env, MyNumberSealer(DataKeys.load(settings.keys_path)))


def open_fuhyo_store_readonly(settings: Settings) -> FuhyoFile:
    """The 附票 store opened read-only, as `open_store_readonly`."""
    data = settings.path(settings.fuhyo_data_dir)
    if not (data / "data.mdb").exists():
        raise FileNotFoundError(f"no store in {data}")
    env = LmdbEnv(data, FUHYO_DB_NAMES, readonly=True)
    return FuhyoFile(env, MyNumberSealer(DataKeys.load(settings.path(settings.fuhyo_keys_file))))


def _searcher(settings: Settings, store: RecordFile[Any]) -> Searcher:
    """4情報 search with the settings' limits; page tokens sealed with a key derived from the store's."""
    tokens = PageTokens(store.sealer.index_key("page-token-secret"))
    return Searcher(
        tokens, settings.search_page_size, settings.search_scan_limit, settings.search_max_results
    )


def _open_fuhyo_file(settings: Settings, data_dir: Path, keys_file: Path) -> FuhyoFile:
    env = LmdbEnv(settings.path(data_dir), FUHYO_DB_NAMES + registry_dbs.DB_NAMES, map_size=settings.map_size)
    return FuhyoFile(env, MyNumberSealer(DataKeys.load_or_create(settings.path(keys_file))))


def open_fuhyo_store(settings: Settings) -> FuhyoFile:
    """The 附票 store (its own environment and keys; no My Number table)."""
    return _open_fuhyo_file(settings, settings.fuhyo_data_dir, settings.fuhyo_keys_file)


def open_national_store(settings: Settings) -> ResidentStore:
    return open_store(settings, data_dir=settings.national_data_dir, keys_file=settings.national_keys_file)


def open_national_fuhyo_store(settings: Settings) -> FuhyoFile:
    """The national 附票 file (附票全国サーバ): the 附票 file's layout, the national server's keys."""
    return _open_fuhyo_file(settings, settings.national_fuhyo_data_dir, settings.national_keys_file)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    store: RecordFile[Any]
    access: AccessInterceptor
    health: HealthServicer
    port: int
    reload: Callable[[], None]
    services: tuple[ServiceDescriptor, ...]
    metrics: MetricsEndpoint | None = None
    supervisor: Supervisor = field(init=False)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    after_stop: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    _down: set[str] = field(default_factory=lambda: {"starting"})
    _probe: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.report_task)

    async def set_health(self, serving: bool, source: str = "starting") -> None:
        """Every service of this server (and the server as a whole) SERVING only while no source of trouble
        (start-up, the audit trail, a critical background task) says otherwise."""
        if serving:
            self._down.discard(source)
        else:
            self._down.add(source)
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if self._down
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in ("", *(s.full_name for s in self.services)):
            await self.health.set(name, status)

    def storage_failed(self) -> None:
        """A call met a failing store: NOT_SERVING until a probe write commits again (once a second)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_storage(), name="storage-probe")

    async def _probe_storage(self, every: float = 1.0) -> None:
        await self.set_health(False, source="storage")
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.probe()
            except Exception as exc:
                if not is_storage_error(exc):
                    raise
                continue
            log.info("the store accepts writes again")
            await self.set_health(True, source="storage")
            return

    async def report_task(self, task: str, healthy: bool, critical: bool) -> None:
        """A supervised task's own health entry (`jukinet.task.<name>`), and the server's when critical."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(f"jukinet.task.{task}", status)
        if critical:
            await self.set_health(healthy, source=f"task:{task}")


async def _start(
    settings: Settings,
    *,
    identity: str,
    port: int,
    store: RecordFile[Any],
    services: tuple[ServiceDescriptor, ...],
    add_servicers: Callable[[grpc.aio.Server], None],
    metrics_port: int,
    operators: OperatorLookup | None = None,
    auditor: CallAuditor | None = None,
    reuse_port: bool = False,
    singletons: bool = True,
) -> RunningServer:
    """`reuse_port`: share the port with sibling workers (otherwise a second server on it fails to bind);
    `singletons`: this process runs the jobs that must run once per store (retention, store gauges)."""
    # A scan in a worker thread hands the GIL back to the event loop every millisecond (Python's default
    # is 5 ms, which a call waiting on the loop would feel several times over).
    sys.setswitchinterval(0.001)
    pki = Pki(settings.pki_path)
    revocations = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=settings.crl_check_interval)
    policy = Policy.load(settings.policy_path)
    national = NATIONAL_SERVICE in services  # hears from the servers of every prefecture

    def known(policy: Policy) -> KnownIdentities:
        return policy.known_identities(
            settings.prefecture_code, any_prefecture=national, registry=operators is not None
        )

    identities = PeerIdentities(settings.trust_domain, revocations, known=known(policy))
    access = AccessInterceptor(
        identities,
        policy,
        # the Admin service's `purpose` fields name what an approval is for, not the caller's purpose
        purpose_methods(*(s for s in services if s is not ADMIN_SERVICE)),
        operators=operators,
        auditor=auditor,
        limiter=RateLimiter(parse_rates(settings.rate_limits)) if settings.rate_limits else None,
    )
    server = grpc.aio.server(
        interceptors=[access],
        options=[
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
            ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),  # peers' keepalive pings
        ],
    )
    add_servicers(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection((*(s.full_name for s in services), HEALTH_SERVICE.full_name), server)
    tls = ServerTls(pki, identity, check_interval=settings.crl_check_interval)
    bound = server.add_secure_port(f"{settings.host}:{port}", tls.credentials())
    if bound == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{port}")
    for name in ("", *(s.full_name for s in services)):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)  # starting
    await server.start()

    def reload() -> None:
        revocations.reload()
        tls.reload()  # this server's own certificate and the CA bundle, for new connections
        if running.metrics is not None:
            running.metrics.reload_tls()
        try:
            reloaded = Policy.load(settings.policy_path)
            access.set_policy(reloaded)
            identities.known = known(reloaded)
            log.info("revocation list and policy reloaded")
        except (PolicyError, OSError) as exc:
            log.error("policy reload refused, keeping the current policy: %s", exc)

    running = RunningServer(server, store, access, health, bound, reload, services)
    access.on_storage_error = running.storage_failed
    set_static(pki, identity, services[0].name.lower())
    stop_gauges = asyncio.Event()
    if singletons:
        env_name = services[0].name.lower()
        running.supervisor.start(
            "store-gauges", lambda: refresh_loop(store, env_name, every=5.0, stop=stop_gauges)
        )
        running.supervisor.start(
            "retention",
            lambda: retention_schedule(store, every=settings.retention_interval, stop=stop_gauges),
            critical=True,
        )

    async def end_gauges() -> None:
        stop_gauges.set()

    running.on_stop.append(end_gauges)
    if metrics_port >= 0:
        plain = settings.metrics_plain_http
        running.metrics = MetricsEndpoint(
            settings.host,
            metrics_port,
            pki=None if plain else pki,
            identities=None if plain else identities,
            server_identity=identity,
        )
        running.metrics.start()
    return running


def _attach_backup(
    running: RunningServer,
    settings: Settings,
    name: str,
    data_dir: Path,
    more: dict[str, Path] | None = None,
) -> None:
    """Daily encrypted backup of this server's environment (and `more` of its environments, by name) (SPEC
    §4.3), made by a child process (an LMDB environment may be opened once per process, and this one is
    open for serving)."""
    if not settings.backup_enabled:
        return
    key = BackupKey.load_or_create(server_key_file(settings.path(settings.backup_key_file), name)).secret
    task = asyncio.create_task(
        _supervised_once(
            running.supervisor,
            f"backup-{name}",
            lambda: backup_schedule(
                {name: data_dir, **(more or {})},
                settings.path(settings.backup_dir) / name,
                key,
                every=settings.backup_interval,
                keep=settings.backup_keep,
                stop=asyncio.Event(),
            ),
        ),
        name=f"backup-{name}",
    )

    async def end_backup() -> None:
        task.cancel()  # a run under way is stopped; its child removes the partial archive
        with contextlib.suppress(asyncio.CancelledError):
            await task

    running.on_stop.append(end_backup)


async def _supervised_once(supervisor: Supervisor, name: str, job: Callable[[], Awaitable[None]]) -> None:
    """A job stopped by cancelling it (backups): restarted after a failure like any supervised task."""
    supervisor.start(name, job)
    task = supervisor.tasks[-1]
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


async def retention_schedule(store: RecordFile[Any], *, every: float, stop: asyncio.Event) -> None:
    """Erase removed persons past their 150 years (SPEC §6.4) every `every` seconds, on the store's writer
    thread (off the event loop, never beside another write)."""
    while not stop.is_set():
        await erase_expired_persons(store, jst_now().date())  # a failure: the supervisor's
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def _open_trail(
    settings: Settings, directory: Path, keys_file: Path, auditor_file: Path, origin: str | None = None
) -> AuditTrail:
    keys = AuditKeys.load_or_create(settings.path(keys_file))
    if not settings.path(auditor_file).exists():
        keys.write_auditor_keys(settings.path(auditor_file))  # for the auditor's tools: no signing key
    return AuditTrail.open(
        settings.path(directory),
        keys,
        checkpoint_interval=settings.audit_checkpoint_interval,
        heartbeat_interval=settings.audit_heartbeat_interval,
        origin=origin,
    )


def _submitters(
    settings: Settings, trail: AuditTrail, identity: str, own: Witness | None = None
) -> list[Submitter]:
    pki = Pki(settings.pki_path)

    def channel(target: str) -> grpc.aio.Channel:
        # a witness runs as the national server (or presents its role, standalone)
        return PeerChannel(
            pki, identity, target, peer="national", check_interval=settings.crl_check_interval
        )()

    return submitters(settings, trail.directory, channel, own)


def _attach_audit(
    running: RunningServer, trail: AuditTrail, settings: Settings, witnesses: list[Submitter] | None = None
) -> None:
    """Housekeeping while serving; a shutdown checkpoint when stopping (after in-flight calls), handed to
    the witnesses too."""
    stop = asyncio.Event()
    witnesses = witnesses or []

    async def on_health(healthy: bool) -> None:
        await running.set_health(healthy, source="audit")

    running.supervisor.start(
        "audit-housekeeping",
        lambda: housekeeping(
            trail,
            flush_interval=settings.audit_flush_interval,
            stop=stop,
            on_health=on_health,
            retention_years=settings.audit_retention_years,
            witnesses=witnesses,
        ),
        critical=True,
    )

    async def close() -> None:
        stop.set()

    async def close_trail() -> None:
        last = trail.close()
        for witness in witnesses:
            if last is not None:
                witness.offer(last["note"], last["seq"])
            await witness.drain(settings.national_timeout)
            await witness.close()

    running.on_stop.append(close)
    running.after_stop.append(close_trail)


def _to_national(
    settings: Settings, pki: Pki, identity: str, store: RecordFile[Any]
) -> tuple[PeerChannel, OutboxRelay, NationalClient]:
    """A record server's links to the national server: the relay of its outbox (on its own channel) and
    the client of its queries."""

    def channel() -> PeerChannel:
        return PeerChannel(
            pki,
            identity,
            settings.national_target,
            peer="national",
            check_interval=settings.crl_check_interval,
        )

    relay_channel = channel()
    relay = OutboxRelay(
        store,
        relay_channel,
        prefecture_code=settings.prefecture_code,
        batch_size=settings.relay_batch_size,
        batch_bytes=min(settings.relay_batch_bytes, settings.max_message_bytes // 2),
        max_change_bytes=settings.max_message_bytes * 15 // 16,
        backoff_initial=settings.relay_backoff_initial,
        backoff_max=settings.relay_backoff_max,
        idle_poll=settings.relay_idle_poll,
        timeout=settings.national_timeout,
    )
    return relay_channel, relay, NationalClient(channel(), timeout=settings.link_timeout_max)


def prepare_prefecture(settings: Settings) -> None:
    """Create what the workers would otherwise race to create: the data keys, the environment and its
    databases, the audit keys, the backup key. Closes everything again (workers are started afresh)."""
    open_store(settings).env.close()
    keys = AuditKeys.load_or_create(settings.path(settings.audit_keys_file))
    if not settings.path(settings.auditor_keys_file).exists():
        keys.write_auditor_keys(settings.path(settings.auditor_keys_file))
    if settings.backup_enabled:
        BackupKey.load_or_create(server_key_file(settings.path(settings.backup_key_file), "prefecture"))


async def start_prefecture(settings: Settings, *, worker: int = 0) -> RunningServer:
    """The prefectural server, or worker `worker` of `settings.prefecture_workers` sharing its port.

    Every worker serves every method over its own LMDB environment and writes its own audit trail (worker
    k > 0 in `<audit_dir>/w<k>`); provisions and statistics are read from all the trails.
    """
    singletons = worker == 0
    store = open_store(settings)
    audit_dir = settings.path(settings.audit_dir)
    trail = _open_trail(
        settings,
        worker_trail_dir(audit_dir, worker),
        settings.audit_keys_file,
        settings.auditor_keys_file,
        log_origin(settings.trust_domain, "prefecture", worker),
    )
    pki = Pki(settings.pki_path)

    relay_channel, relay, national = _to_national(settings, pki, settings.prefecture_identity, store)
    reader = TrailReader(audit_dir)
    registry = Registry(store.env)
    policy_ref: list[AccessInterceptor] = []
    service = PrefectureService(
        store,
        lambda: policy_ref[0].policy,
        _searcher(settings, store),
        batch_size=settings.apply_batch_size,
        national=national,
        on_applied=relay.notify,
        registry=registry,
        batch_threshold=settings.batch_threshold,
        provisions=lambda code: disclosure(audit_dir, trail.subject_hash(code), flush=trail.flush),
    )
    admin = AdminService(
        registry,
        lambda: policy_ref[0].policy,
        reader.statistics,
        now=jst_now,
        audit_dir=audit_dir,
    )

    def add(server: grpc.aio.Server) -> None:
        prefecture_pb2_grpc.add_PrefectureServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        admin_pb2_grpc.add_AdminServicer_to_server(admin, server)  # type: ignore[no-untyped-call]

    running = await _start(
        settings,
        identity=settings.prefecture_identity,
        port=settings.prefecture_port,
        store=store,
        services=(PREFECTURE_SERVICE, ADMIN_SERVICE),
        add_servicers=add,
        metrics_port=settings.prefecture_metrics_port if singletons else -1,
        operators=registry.operator,
        auditor=TrailAuditor(trail),
        reuse_port=settings.prefecture_workers > 1,
        singletons=singletons,
    )
    _attach_audit(running, trail, settings, _submitters(settings, trail, settings.prefecture_identity))
    running.after_stop.append(reader.close)
    policy_ref.append(running.access)
    if settings.relay_enabled and singletons:  # other workers' changes reach it at its next poll
        running.supervisor.start("outbox-relay", relay.run, critical=True)

    async def stop_relay() -> None:
        relay.stop()
        await national.close()
        await relay_channel.close()

    running.on_stop.append(stop_relay)
    if singletons:
        _attach_backup(running, settings, "prefecture", settings.data_path)
    await running.set_health(True)
    return running


def register_dev_operators(
    settings: Settings,
    operator_ids: tuple[str, ...] = ("op-0001", "op-0002"),
    opener: Callable[[Settings], RecordFile[Any]] = open_store,
) -> list[str]:
    """Offline bootstrap for the embedded default: register the dev operators with every operator grant."""
    store = opener(settings)
    registry = Registry(store.env)
    policy = Policy.load(settings.policy_path)
    bootstrap = SpiffeId(settings.trust_domain, "admin", "bootstrap")
    added = []
    try:
        for operator_id in operator_ids:
            if registry.operator(operator_id) is not None:
                continue
            registry.register_now(
                operators.full_registration(policy, operator_id, admin=bootstrap, now=jst_now())
            )
            added.append(operator_id)
    finally:
        store.env.close()
    return added


async def start_fuhyo(settings: Settings) -> RunningServer:
    """The 附票 server: its own store, temporary area, link to the prefectural server, audit trail."""
    store = open_fuhyo_store(settings)
    trail = _open_trail(
        settings,
        settings.fuhyo_audit_dir,
        settings.fuhyo_audit_keys_file,
        settings.fuhyo_auditor_keys_file,
        log_origin(settings.trust_domain, "fuhyo"),
    )
    pki = Pki(settings.pki_path)
    tempstore = TempStore(settings.path(settings.tempstore_dir), ttl=settings.tempstore_ttl)
    link = MyNumberLink(
        PeerChannel(
            pki,
            settings.fuhyo_identity,
            settings.prefecture_target,
            peer="prefectural-server",
            check_interval=settings.crl_check_interval,
        ),
        timeout=settings.link_timeout_max,
    )

    # the prefectural server's relay and client code: 附票 changes reach the 附票全国サーバ, queries it
    relay_channel, relay, national = _to_national(settings, pki, settings.fuhyo_identity, store)
    registry = Registry(store.env)
    policy_ref: list[AccessInterceptor] = []
    service = FuhyoService(
        store,
        lambda: policy_ref[0].policy,
        _searcher(settings, store),
        link,
        tempstore,
        now=jst_now,
        batch_size=settings.apply_batch_size,
        on_applied=relay.notify,
        national=national,
        registry=registry,
        batch_threshold=settings.batch_threshold,
        provisions=lambda code: disclosure(trail.directory, trail.subject_hash(code), flush=trail.flush),
    )
    reader = TrailReader(trail.directory)
    admin = AdminService(
        registry,
        lambda: policy_ref[0].policy,
        reader.statistics,
        now=jst_now,
        audit_dir=trail.directory,
    )

    def add(server: grpc.aio.Server) -> None:
        fuhyo_pb2_grpc.add_FuhyoServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        admin_pb2_grpc.add_AdminServicer_to_server(admin, server)  # type: ignore[no-untyped-call]

    running = await _start(
        settings,
        identity=settings.fuhyo_identity,
        port=settings.fuhyo_port,
        store=store,
        services=(FUHYO_SERVICE, ADMIN_SERVICE),
        add_servicers=add,
        metrics_port=settings.fuhyo_metrics_port,
        operators=registry.operator,
        auditor=TrailAuditor(trail),
    )
    policy_ref.append(running.access)
    _attach_audit(running, trail, settings, _submitters(settings, trail, settings.fuhyo_identity))
    running.after_stop.append(reader.close)
    stop_expiry = asyncio.Event()
    running.supervisor.start(
        "tempstore-expiry", lambda: tempstore.run_expiry(every=1.0, stop=stop_expiry), critical=True
    )

    if settings.relay_enabled:
        running.supervisor.start("outbox-relay", relay.run, critical=True)

    async def end() -> None:
        stop_expiry.set()
        relay.stop()
        await link.close()
        await national.close()
        await relay_channel.close()

    running.on_stop.append(end)

    def close_tempstore() -> None:
        tempstore.erase_all("shutdown")  # the keys die with the process anyway; leave no sealed bytes either
        tempstore.close()

    running.after_stop.append(close_tempstore)
    _attach_backup(
        running, settings, "fuhyo", settings.path(settings.fuhyo_data_dir)
    )  # never the temporary area
    await running.set_health(True)
    return running


async def start_national(settings: Settings) -> RunningServer:
    store = open_national_store(settings)
    fuhyo_store = open_national_fuhyo_store(settings)
    trail = _open_trail(
        settings,
        settings.national_audit_dir,
        settings.national_audit_keys_file,
        settings.national_auditor_keys_file,
        log_origin(settings.trust_domain, "national"),
    )
    policy_ref: list[AccessInterceptor] = []
    service = NationalService(store, fuhyo_store, lambda: policy_ref[0].policy)
    witness = open_witness(settings) if settings.witness_enabled else None

    def add(server: grpc.aio.Server) -> None:
        national_pb2_grpc.add_NationalServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        if witness is not None:
            witness_pb2_grpc.add_WitnessServicer_to_server(WitnessService(witness), server)  # type: ignore[no-untyped-call]

    running = await _start(
        settings,
        identity=settings.national_identity,
        port=settings.national_port,
        store=store,
        services=(NATIONAL_SERVICE, WITNESS_SERVICE) if witness is not None else (NATIONAL_SERVICE,),
        add_servicers=add,
        metrics_port=settings.national_metrics_port,
        auditor=TrailAuditor(trail),
    )
    policy_ref.append(running.access)
    _attach_audit(running, trail, settings, _submitters(settings, trail, settings.national_identity, witness))
    _attach_backup(
        running,
        settings,
        "national",
        settings.path(settings.national_data_dir),
        {"national-fuhyo": settings.path(settings.national_fuhyo_data_dir)},
    )
    running.after_stop.append(fuhyo_store.env.close)
    await running.set_health(True)
    return running


async def serve(
    settings: Settings,
    start: Callable[[Settings], Awaitable[RunningServer]],
    *,
    on_ready: Callable[[RunningServer], None] | None = None,
) -> None:
    """Run a server until SIGTERM/SIGINT, then drain: NOT_SERVING, finish in-flight calls, close the store."""
    harden_process(settings)  # no core dumps, private files: before any data is opened
    running = await start(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    if on_ready is not None:
        on_ready(running)
    await stop.wait()
    log.info("draining")
    await running.health.enter_graceful_shutdown()
    for hook in running.on_stop:
        await hook()
    running.supervisor.stop()
    await running.supervisor.wait(settings.grace_seconds)
    await running.server.stop(settings.grace_seconds)
    for final in running.after_stop:
        done = final()
        if done is not None:
            await done
    if running.metrics is not None:
        running.metrics.stop()
    running.store.env.close()
