"""Builds and runs the prefectural server from one Settings object.

mTLS listener (client certificate required and verified against the deployment CA), the interceptor chain,
the servicers, health and reflection; SIGTERM/SIGINT drain and stop, SIGHUP reloads the revocation list
and the policy without dropping connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from server.domain.search import PageTokens
from server.identity.peers import PeerIdentities, RevocationList
from server.identity.pki import Pki
from server.identity.policy import Policy, PolicyError
from server.services.chain import AccessInterceptor, purpose_methods
from server.services.prefecture import PrefectureService
from server.settings import Settings
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer

log = logging.getLogger(__name__)

PREFECTURE_SERVICE = prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"]


def server_credentials(pki: Pki, identity: str) -> grpc.ServerCredentials:
    """TLS that requires a client certificate chained to the deployment CA."""
    role, _, ident = identity.partition("/")
    cert, key = pki.cert_paths(role, ident)
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=pki.ca_cert_path.read_bytes(),
        require_client_auth=True,
    )


def open_store(settings: Settings) -> ResidentStore:
    env = LmdbEnv(settings.data_path, DB_NAMES, map_size=settings.map_size)
    keys = DataKeys.load_or_create(settings.keys_path)
    return ResidentStore(env, MyNumberSealer(keys))


@dataclass
class RunningServer:
    server: grpc.aio.Server
    store: ResidentStore
    access: AccessInterceptor
    health: HealthServicer
    port: int
    reload: Callable[[], None]


async def start_prefecture(settings: Settings) -> RunningServer:
    pki = Pki(settings.pki_path)
    store = open_store(settings)
    revocations = RevocationList(pki.crl_path, pki.ca_cert_path, check_interval=settings.crl_check_interval)
    policy_holder = [Policy.load(settings.policy_path)]
    access = AccessInterceptor(
        PeerIdentities(settings.trust_domain, revocations),
        policy_holder[0],
        purpose_methods(PREFECTURE_SERVICE),
    )
    server = grpc.aio.server(
        interceptors=[access],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    service = PrefectureService(
        store,
        lambda: policy_holder[0],
        PageTokens(store.sealer.index_key("page-token-secret")),
        batch_size=settings.apply_batch_size,
        page_size=settings.search_page_size,
        scan_limit=settings.search_scan_limit,
        max_results=settings.search_max_results,
    )
    prefecture_pb2_grpc.add_PrefectureServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (PREFECTURE_SERVICE.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    port = server.add_secure_port(
        f"{settings.host}:{settings.prefecture_port}",
        server_credentials(pki, settings.prefecture_identity),
    )
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.prefecture_port}")
    await server.start()
    await health.set(PREFECTURE_SERVICE.full_name, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)

    def reload() -> None:
        revocations.reload()
        try:
            policy_holder[0] = Policy.load(settings.policy_path)
            access.set_policy(policy_holder[0])
            log.info("revocation list and policy reloaded")
        except (PolicyError, OSError) as exc:
            log.error("policy reload refused, keeping the current policy: %s", exc)

    return RunningServer(server, store, access, health, port, reload)


async def serve_prefecture(
    settings: Settings, *, on_ready: Callable[[RunningServer], None] | None = None
) -> None:
    running = await start_prefecture(settings)
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
    await running.server.stop(settings.grace_seconds)
    running.store.env.close()
