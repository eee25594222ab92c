"""`/metrics` over HTTPS with a required client certificate of the `monitor` role (SPEC §7).

The operations contractor scrapes with its own certificate; any other identity (or none) gets nothing.
TLS 1.2 or later with AEAD suites only; each connection has its own thread and a handshake deadline, so
no peer (an idle TCP connection, a slow handshake) can hold up another scrape.
A development flag serves plain HTTP, on loopback only. With several server processes on one port, worker 0
serves the endpoint and shows the sum over every worker (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from server.identity.peers import PeerIdentities, Refusal
from server.identity.pki import Pki

log = logging.getLogger(__name__)

SCRAPER_ROLES = frozenset({"monitor"})


def scrape_registry() -> CollectorRegistry:
    """What /metrics shows: this process's registry, or, in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set
    by the supervisor of several workers), every worker's metrics combined from their files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    return registry


# TLS 1.2 suites: ECDHE with an AEAD only, as on the gRPC ports (TLS 1.3 suites are all AEAD).
AEAD_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
HANDSHAKE_TIMEOUT = 5.0  # seconds a connection may take to complete TLS (and, after it, each read)
MAX_CONNECTIONS = 32  # connections served at once; more are closed at once, never queued behind others


class _Listener(ThreadingHTTPServer):
    """One thread per connection, the TLS handshake in that thread with a deadline: an idle or slow peer
    holds only its own thread, for at most HANDSHAKE_TIMEOUT, never the accept loop or another scrape."""

    daemon_threads = True
    block_on_close = False  # stopping never waits for a peer that says nothing

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        super().__init__(address, handler)
        self.context = context
        self.handshake_timeout = handshake_timeout
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # no certificate, another CA, an old protocol or suite, or silence: nothing served
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class MetricsEndpoint:
    """A small threaded HTTP(S) server exposing one registry at /metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pki: Pki | None,
        identities: PeerIdentities | None,
        server_identity: str = "",
        registry: CollectorRegistry | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        if pki is None and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("plain-HTTP metrics are for loopback only")
        shown = scrape_registry() if registry is None else registry
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = handshake_timeout  # per read, once TLS is up: a slow request holds only itself

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self._reply(404, b"not found\n")
                    return
                if identities is not None and not endpoint._is_scraper(self.connection):
                    self._reply(403, b"forbidden\n")
                    return
                self._reply(200, generate_latest(shown), CONTENT_TYPE_LATEST)

            def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not logged (they carry nothing worth keeping)

        self._identities = identities
        self._pki, self._server_identity = pki, server_identity
        context = self._tls_context() if pki is not None else None
        self.httpd = _Listener((host, port), Handler, context, handshake_timeout)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def _tls_context(self) -> ssl.SSLContext:
        assert self._pki is not None
        role, _, ident = self._server_identity.partition("/")
        cert, key = self._pki.cert_paths(role, ident)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(AEAD_CIPHERS)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(self._pki.ca_cert_path)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def reload_tls(self) -> None:
        """Re-read the server's certificate, key and CA bundle for new connections (SIGHUP); a set that
        does not load leaves the one in force."""
        if self._pki is None:
            return
        try:
            self.httpd.context = self._tls_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.error("metrics TLS files not taken, keeping the ones in force: %s", exc)

    def _is_scraper(self, connection: Any) -> bool:
        assert self._identities is not None
        der = connection.getpeercert(binary_form=True)
        if not der:
            return False
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        who = self._identities.identify({"x509_pem_cert": [pem]})
        return not isinstance(who, Refusal) and who.role in SCRAPER_ROLES

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
