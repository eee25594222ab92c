"""Who is calling: the SPIFFE ID of the verified client certificate, and whether it is still good.

The TLS layer has verified the chain and the validity period at the handshake (SPEC §4.1); here, on every
call, the URI SAN becomes the caller's identity (only from a certificate made for a client: never a CA
certificate, never one without the clientAuth usage), the end of validity is checked again (a connection
may outlive its certificate), the identity must be known to the deployment (policy.toml [identities]),
and the serial is checked against the revocation list, which is re-read when its
file changes (no restart) or on demand (SIGHUP). The list fails closed: a missing, unverifiable or older
CRL (lower CRL number) never replaces the one in force.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from server.identity.pki import SpiffeId, client_unusable, load_crl, spiffe_of_cert

log = logging.getLogger(__name__)

_CACHE_LIMIT = 4096


class RevocationList:
    """Revoked serials from the CA-signed CRL file, reloaded when the file changes."""

    def __init__(self, crl_path: Path, ca_cert_path: Path, *, check_interval: float = 0.25) -> None:
        self._crl_path = crl_path
        self._ca_path = ca_cert_path
        self._interval = check_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._next_check = 0.0
        self.serials: frozenset[int] = frozenset()
        self.number = -1
        self.reload()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._crl_path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> None:
        """Re-read the CRL now; keep the list in force when the file is missing, bad, or older."""
        with self._lock:
            stamp = self._file_stamp()
            self._stamp = stamp
            try:
                serials, number = load_crl(self._crl_path, self._ca_path)
            except ValueError:
                log.error("revocation list missing or not verifying against the CA; keeping the one in force")
                return
            if number < self.number:
                log.error("revocation list older than the one in force (CRL number went back); ignored")
                return
            self.serials, self.number = serials, number

    def is_revoked(self, serial: int) -> bool:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._interval
            if self._file_stamp() != self._stamp:
                self.reload()
        return serial in self.serials


@dataclass(frozen=True)
class Refusal:
    """Why a peer was refused (no detail that would help an attacker or name a person), and, when the
    certificate was one of this deployment's CA, the identity it claims and its serial (for the audit
    trail: who kept using a revoked or expired certificate)."""

    message: str
    claimed: SpiffeId | None = None
    serial: int | None = None


@dataclass(frozen=True, slots=True)
class _Peer:
    """What a client certificate says, parsed once per distinct certificate."""

    spiffe: SpiffeId | None  # None: no identity of this deployment
    serial: int
    not_after: float  # epoch seconds
    unusable: str  # why this certificate is never a client identity ("" when it may be)


def _everyone(who: SpiffeId) -> bool:
    return True


class PeerIdentities:
    """Maps the auth context of a call to a caller identity, or a refusal.

    `known` says which identities the deployment knows (the policy's [identities] table, replaced on
    reload); a certificate of the CA with any other identity is refused like an unknown one.
    """

    def __init__(
        self,
        trust_domain: str,
        revocations: RevocationList,
        *,
        known: Callable[[SpiffeId], bool] = _everyone,
    ) -> None:
        self.trust_domain = trust_domain
        self.revocations = revocations
        self.known = known
        self._cache: dict[bytes, _Peer | None] = {}

    def identify(self, auth_context: Mapping[str, Iterable[bytes]]) -> SpiffeId | Refusal:
        pem = next(iter(auth_context.get("x509_pem_cert", ())), None)
        if pem is None:
            return Refusal("no client certificate")
        if pem in self._cache:
            peer = self._cache[pem]
        else:
            peer = self._parse(pem)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[pem] = peer
        if peer is None:
            return Refusal("certificate carries no identity of this deployment")
        spiffe, serial = peer.spiffe, peer.serial
        if spiffe is None:
            return Refusal("certificate carries no identity of this deployment", serial=serial)
        if peer.unusable:
            return Refusal(peer.unusable, spiffe, serial)
        if time.time() > peer.not_after:
            return Refusal("certificate expired", spiffe, serial)
        if self.revocations.is_revoked(serial):
            return Refusal("certificate revoked", spiffe, serial)
        if not self.known(spiffe):
            return Refusal("identity unknown to this deployment", spiffe, serial)
        return spiffe

    def _parse(self, pem: bytes) -> _Peer | None:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return None
        serial, not_after = cert.serial_number, cert.not_valid_after_utc.timestamp()
        try:
            spiffe = spiffe_of_cert(cert)
        except ValueError:
            return _Peer(None, serial, not_after, "")
        if spiffe.trust_domain != self.trust_domain:
            return _Peer(None, serial, not_after, "")
        return _Peer(spiffe, serial, not_after, client_unusable(cert))
