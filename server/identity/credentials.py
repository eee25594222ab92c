"""A listener's own TLS material, re-read without a restart: certificate rotation (SPEC §4.1).

The server's certificate and key and the CA bundle that client certificates must chain to are read from
the PKI directory at start, and again on `reload()` (SIGHUP) or when one of the files changes (looked at,
at most every `check_interval` seconds, when a new connection arrives). gRPC asks for the configuration
before every new TLS handshake (`grpc.dynamic_ssl_server_credentials`): connections already open keep the
session they have, new ones get the new certificate. A new set of files is taken only when it is whole
and consistent (the key is the certificate's, the certificate chains to a CA of the bundle); otherwise
the set in force stays and the error is logged, so a half-done rotation never takes a listener down.
The channels a server opens to its peers follow the same files (`PeerChannel`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.identity.pki import Pki, server_dns_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """What a listener presents (certificate, key) and trusts (CA bundle), as PEM bytes."""

    cert: bytes
    key: bytes
    ca_bundle: bytes
    serial: int  # of the certificate, for logs and tests


def load_tls_files(cert_path: Path, key_path: Path, ca_path: Path) -> TlsFiles:
    """Read and check one set; ValueError when it is incomplete or inconsistent."""
    try:
        cert_pem, key_pem, ca_pem = cert_path.read_bytes(), key_path.read_bytes(), ca_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS files: {exc.strerror}") from exc
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the listener key is not an ECDSA key")
    if key.public_key().public_numbers() != _ec_public(cert).public_numbers():
        raise ValueError("the listener key does not belong to its certificate")
    cas = x509.load_pem_x509_certificates(ca_pem)
    if not any(_signed_by(cert, ca) for ca in cas):
        raise ValueError("the listener certificate is not signed by a CA of the bundle")
    return TlsFiles(cert_pem, key_pem, ca_pem, cert.serial_number)


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("the listener certificate has no ECDSA key")
    return public


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class ServerTls:
    """The TLS configuration of one listener, followed on disk (see the module docstring)."""

    def __init__(self, pki: Pki, identity: str, *, check_interval: float = 0.25) -> None:
        role, _, ident = identity.partition("/")
        cert, key = pki.cert_paths(role, ident)
        self._paths = (cert, key, pki.ca_cert_path)
        self._interval = check_interval
        self._lock = threading.Lock()
        self.files = load_tls_files(*self._paths)  # at start a bad set is fatal: there is none in force
        self._stamp = self._stamps()
        self._next_check = time.monotonic() + check_interval
        self._pending: grpc.ServerCertificateConfiguration | None = None

    def _stamps(self) -> tuple[tuple[int, int] | None, ...]:
        return tuple(_stamp(path) for path in self._paths)

    def _configuration(self, files: TlsFiles) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(files.key, files.cert)], root_certificates=files.ca_bundle
        )

    def reload(self) -> bool:
        """Re-read the files now; True when a new set is in force for the next handshakes."""
        with self._lock:
            self._stamp = self._stamps()
            try:
                files = load_tls_files(*self._paths)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                log.error("listener TLS files not taken, keeping the ones in force: %s", exc)
                return False
            if files == self.files:
                return False
            self.files = files
            self._pending = self._configuration(files)
            log.info("listener certificate %x in force for new connections", files.serial)
            return True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called before each new handshake: a new configuration or None (no change)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._interval
            if self._stamps() != self._stamp:
                self.reload()
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate chained to the bundle, and follow it."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self.files),
            self.fetch,  # type: ignore[arg-type]  # the stubs omit None, which grpc documents as "no change"
            require_client_authentication=True,
        )


# A peer that returns is reconnected within a second (gRPC's default reconnect backoff grows to 120 s), and
# a peer that stops answering on an open connection is noticed by keepalive pings while calls are waiting.
PEER_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)


class PeerChannel:
    """An mTLS channel to a peer server presenting this server's own certificate, followed on disk.

    Calling it returns the current channel; when the certificate, key or CA bundle files have changed
    (looked at, at most every `check_interval` seconds) and the new set is whole and consistent, a new
    channel is opened with it and returned from then on, and the old one is closed `grace` seconds later
    (calls in flight on it finish). So a server whose certificate was replaced (and the old one revoked)
    goes on reaching its peers. Call it from the event loop.
    """

    def __init__(
        self,
        pki: Pki,
        identity: str,
        target: str,
        *,
        peer: str,
        check_interval: float = 0.25,
        grace: float = 30.0,
    ) -> None:
        """`peer`: the server role expected at `target` (`national`, `prefectural-server`): its certificate
        must carry that role's DNS name (`server_dns_name`), or the handshake fails and nothing is sent."""
        self._options = (
            *PEER_CHANNEL_OPTIONS,
            ("grpc.ssl_target_name_override", server_dns_name(peer, pki.trust_domain())),
        )
        role, _, ident = identity.partition("/")
        cert, key = pki.cert_paths(role, ident)
        self._paths = (cert, key, pki.ca_cert_path)
        self._target = target
        self._interval = check_interval
        self._grace = grace
        self._channel: grpc.aio.Channel | None = None
        self._stamp: tuple[tuple[int, int] | None, ...] = ()
        self._next_check = 0.0

    def _stamps(self) -> tuple[tuple[int, int] | None, ...]:
        return tuple(_stamp(path) for path in self._paths)

    def __call__(self) -> grpc.aio.Channel:
        now = time.monotonic()
        if self._channel is not None and now < self._next_check:
            return self._channel
        self._next_check = now + self._interval
        stamp = self._stamps()
        if self._channel is not None and stamp == self._stamp:
            return self._channel
        try:
            files = load_tls_files(*self._paths)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            if self._channel is None:
                raise
            log.error("client TLS files not taken, keeping the channel in force: %s", exc)
            self._stamp = stamp
            return self._channel
        old, self._stamp = self._channel, stamp
        self._channel = grpc.aio.secure_channel(
            self._target,
            grpc.ssl_channel_credentials(
                root_certificates=files.ca_bundle, private_key=files.key, certificate_chain=files.cert
            ),
            options=self._options,
        )
        if old is not None:
            log.info("outgoing channel to %s now presents certificate %x", self._target, files.serial)
            asyncio.get_running_loop().call_later(self._grace, lambda: asyncio.ensure_future(old.close()))
        return self._channel

    async def close(self) -> None:
        """Close the current channel (at shutdown); a later call opens a new one."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._stamp = ()
            await channel.close()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
