"""Gauges read off the server's state now and then (never on the hot path)."""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cryptography import x509

from server.identity.pki import Pki
from server.observability import metrics
from server.storage.record_file import RecordFile


def set_static(pki: Pki, identity: str, server: str) -> None:
    """Build info and the expiry of the server's own and the CA's certificates."""
    try:
        release = version("jukinet")
    except PackageNotFoundError:
        release = "dev"
    metrics.BUILD_INFO.labels(release, server).set(1)
    role, _, ident = identity.partition("/")
    own, _ = pki.cert_paths(role, ident)
    for name, path in (("server", own), ("ca", pki.ca_cert_path)):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        metrics.CERT_EXPIRY.labels(name).set(cert.not_valid_after_utc.timestamp())


def refresh_store(store: RecordFile[Any], env_name: str) -> None:
    with store.reader() as tx:  # first: a read adopts a map that another worker process has grown
        total = tx.count("records")
        removed = tx.counter(b"records_removed")
    used, size = store.env.map_use()
    metrics.LMDB_MAP_USED.labels(env_name).set(used)
    metrics.LMDB_MAP_SIZE.labels(env_name).set(size)
    metrics.RECORDS.labels("removed").set(removed)
    metrics.RECORDS.labels("active").set(max(0, total - removed))


async def refresh_loop(store: RecordFile[Any], env_name: str, *, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        refresh_store(store, env_name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
