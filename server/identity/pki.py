"""The project's own small PKI: a CA, per-peer leaf certificates with SPIFFE URI SANs, and a CRL.

Keys are ECDSA P-256. Identity lives only in the URI SAN ``spiffe://<trust-domain>/<role>/<id>``;
the CN is informational and never trusted (SPEC §4.1).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES: tuple[str, ...] = (
    "municipal-cs",
    "national",
    "agency",
    "department",
    "operator",
    "fuhyo-server",
    "prefectural-server",
    "admin",
    "auditor",
    "monitor",
)
# Roles whose certificates are also presented by listeners, so they carry serverAuth and localhost SANs.
SERVER_ROLES: frozenset[str] = frozenset({"national", "fuhyo-server", "prefectural-server"})


def server_dns_name(role: str, trust_domain: str) -> str:
    """The DNS name a server role's certificate carries (`national.juki.mie`): a server calling a peer
    server checks the peer's certificate for it, so that a certificate of another server role cannot pose
    as that peer (the TLS host-name check, with the name set per channel)."""
    return f"{role}.{trust_domain}"


MIE_MUNICIPALITIES: tuple[str, ...] = (
    "242012", "242021", "242039", "242047", "242055", "242071", "242080", "242098", "242101", "242110",
    "242128", "242144", "242152", "242161", "243035", "243248", "243418", "243434", "243442", "244414",
    "244422", "244431", "244619", "244708", "244716", "244724", "245437", "245615", "245623",
)  # fmt: skip

DEV_IDENTITIES: tuple[tuple[str, str], ...] = (
    *(("municipal-cs", code) for code in MIE_MUNICIPALITIES),
    ("national", "jlis"),
    ("agency", "police"),
    ("agency", "education"),
    ("department", "health"),
    ("department", "tax"),
    ("operator", "op-0001"),
    ("operator", "op-0002"),
    ("fuhyo-server", "24"),
    ("prefectural-server", "24"),
    ("admin", "admin-01"),
    ("auditor", "auditor-01"),
    ("monitor", "monitor-01"),
)

_SCHEME = "spiffe://"
# SPIFFE trust domains: lowercase letters, digits, '.', '-', '_' only (no port, userinfo or percent-encoding).
_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]{1,255}")
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Peers and listeners on different hosts rarely agree on the time to the second.
_CLOCK_SKEW = timedelta(minutes=5)
_CRL_LIFETIME = timedelta(days=7)
_SIG_HASH = hashes.SHA256()


@dataclass(frozen=True)
class SpiffeId:
    """A validated ``spiffe://<trust_domain>/<role>/<id>`` identity."""

    trust_domain: str
    role: str
    id: str

    def __post_init__(self) -> None:
        # Validate on construction so every SpiffeId in the process is well-formed, however it was made.
        if not _TRUST_DOMAIN_RE.fullmatch(self.trust_domain):
            raise ValueError(f"invalid SPIFFE trust domain: {self.trust_domain!r}")
        if self.role not in ROLES:
            raise ValueError(f"unknown role: {self.role!r}")
        # "." and ".." are forbidden path segments in SPIFFE IDs and would be odd file names too.
        if not _ID_RE.fullmatch(self.id) or self.id in {".", ".."}:
            raise ValueError(f"invalid identity: {self.id!r}")

    @property
    def uri(self) -> str:
        """The canonical URI form."""
        return f"{_SCHEME}{self.trust_domain}/{self.role}/{self.id}"

    @property
    def name(self) -> str:
        """``<role>/<id>``, the name used by the PKI directory."""
        return f"{self.role}/{self.id}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse a URI strictly; raises ValueError on anything but ``spiffe://<td>/<role>/<id>``."""
        if not uri.startswith(_SCHEME):
            raise ValueError(f"not a spiffe:// URI: {uri!r}")
        parts = uri[len(_SCHEME) :].split("/")
        if len(parts) != 3:
            raise ValueError(f"SPIFFE ID must have exactly two path segments: {uri!r}")
        trust_domain, role, ident = parts
        return cls(trust_domain, role, ident)

    def __str__(self) -> str:
        return self.uri


ISSUED_LOG = "issued.log"  # one JSON line per certificate the CA ever issued (serial, name, validity)


@dataclass(frozen=True)
class Issued:
    """One line of the issuance log: a certificate the CA issued, whether or not its file still exists."""

    serial: int
    name: str
    uri: str
    not_before: datetime
    not_after: datetime

    def line(self) -> str:
        return json.dumps(
            {
                "serial": f"{self.serial:x}",
                "name": self.name,
                "uri": self.uri,
                "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(),
            },
            sort_keys=True,
        )

    @classmethod
    def parse(cls, line: str) -> Issued:
        """One log line; ValueError when it is not one."""
        try:
            obj = json.loads(line)
            return cls(
                int(obj["serial"], 16),
                str(obj["name"]),
                str(obj["uri"]),
                datetime.fromisoformat(obj["not_before"]),
                datetime.fromisoformat(obj["not_after"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{ISSUED_LOG}: not an issuance record: {line[:80]!r}") from exc


def _lacks_server_name(cert_path: Path, role: str) -> bool:
    if role not in SERVER_ROLES:
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        spiffe = spiffe_of_cert(cert)
    except ValueError:
        return True
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return server_dns_name(role, spiffe.trust_domain) not in names.get_values_for_type(x509.DNSName)


@dataclass(frozen=True)
class CertInfo:
    """One issued leaf certificate as found on disk."""

    name: str
    spiffe: SpiffeId
    serial: int
    not_before: datetime
    not_after: datetime
    revoked: bool
    cert_path: Path
    key_path: Path


def _check_name(role: str, ident: str) -> None:
    # Reuse SpiffeId's rules with a placeholder domain; this also keeps role/ident safe as path components.
    SpiffeId("x", role, ident)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a same-directory temp file and os.replace; readers see old or new."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL + the final mode at creation: a key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # umask may only have narrowed it; make the result deterministic
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_crl(crl_path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{crl_path}: not a PEM CRL: {exc}") from exc
    if crl.issuer != ca_cert.subject:
        raise ValueError(f"{crl_path}: CRL issuer does not match the CA")
    public_key = ca_cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("CA public key is not ECDSA")
    if not crl.is_signature_valid(public_key):
        raise ValueError(f"{crl_path}: CRL signature does not verify with the CA key")
    return crl


def load_crl(crl_path: Path, ca_cert_path: Path) -> tuple[frozenset[int], int]:
    """(revoked serials, CRL number) of a CA-signed CRL; ValueError if it is missing or does not verify."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    try:
        crl = _load_crl(crl_path, ca_cert)
    except OSError as exc:
        raise ValueError(f"{crl_path}: cannot read the CRL") from exc
    try:
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        number = 0
    return frozenset(entry.serial_number for entry in crl), number


def load_revoked_serials(crl_path: Path, ca_cert_path: Path) -> frozenset[int]:
    """Serials on the CA-signed CRL; empty if there is no CRL file; ValueError if it does not verify."""
    if not crl_path.exists():
        return frozenset()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    return frozenset(entry.serial_number for entry in _load_crl(crl_path, ca_cert))


def spiffe_of_cert(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of a certificate: its sole URI SAN; ValueError if absent, ambiguous or malformed."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise ValueError("certificate has no subjectAltName") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    # Per the X509-SVID spec a certificate carries exactly one URI SAN; any other count is ambiguous.
    if len(uris) != 1:
        raise ValueError(f"certificate must have exactly one URI SAN, found {len(uris)}")
    return SpiffeId.parse(uris[0])


def client_unusable(cert: x509.Certificate) -> str:
    """Why a certificate can never be a client identity ("" when it can): a CA certificate
    (BasicConstraints CA:TRUE) or one whose extended key usage leaves out clientAuth."""
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "a CA certificate is not a client identity"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ""
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "certificate is not for client authentication"
    return ""


def spiffe_id_of_pem(cert_pem: bytes) -> tuple[SpiffeId, int]:
    """The SPIFFE ID (sole URI SAN) and serial of a PEM leaf certificate; ValueError if absent or bad."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return spiffe_of_cert(cert), cert.serial_number


def _serial_of_file(cert_path: Path) -> int | None:
    """The serial of the certificate in a file, None when there is none (or it is unreadable)."""
    try:
        return int(x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number)
    except (OSError, ValueError):
        return None


def _serial_readings(value: str | int) -> set[int]:
    """The serials a command-line value may mean (empty when it is no serial at all)."""
    if isinstance(value, int):
        return {value}
    text = value.strip().lower()
    readings: set[int] = set()
    if text.startswith("0x"):
        text = text[2:]
    elif text.isdigit():
        readings.add(int(text))
    if text and all(c in "0123456789abcdef" for c in text):
        readings.add(int(text, 16))
    return readings


class Pki:
    """A PKI directory: ca.crt, ca.key (0600), crl.pem, and <role>/<id>.crt + <role>/<id>.key (0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_cert_path = self.directory / "ca.crt"
        self.ca_key_path = self.directory / "ca.key"
        self.crl_path = self.directory / "crl.pem"
        self.issued_path = self.directory / ISSUED_LOG
        self._trust_domain_path = self.directory / "trust_domain.txt"

    def exists(self) -> bool:
        """True when both ca.crt and ca.key are present."""
        return self.ca_cert_path.is_file() and self.ca_key_path.is_file()

    def _ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    def trust_domain(self) -> str:
        """The trust domain: the CA subject's O=, else trust_domain.txt (for a CA brought from elsewhere)."""
        attrs = self._ca_cert().subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if attrs:
            value = attrs[0].value
            domain = value if isinstance(value, str) else value.decode()
        elif self._trust_domain_path.is_file():
            domain = self._trust_domain_path.read_text().strip()
        else:
            raise ValueError(f"{self.ca_cert_path}: CA subject has no O= and there is no trust_domain.txt")
        if not _TRUST_DOMAIN_RE.fullmatch(domain):
            raise ValueError(f"invalid trust domain in PKI: {domain!r}")
        return domain

    @contextlib.contextmanager
    def _locked_ca(self) -> Iterator[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]:
        """Yield the CA cert and key while holding an exclusive lock, serialising CRL read-modify-write."""
        if not self.exists():
            raise FileNotFoundError(f"no CA in {self.directory}")
        with open(self.ca_key_path, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            key = serialization.load_pem_private_key(fh.read(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.ca_key_path}: CA key is not ECDSA")
            yield self._ca_cert(), key

    def _write_crl(
        self,
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        entries: Iterable[tuple[int, datetime]],
        number: int,
    ) -> None:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + _CRL_LIFETIME)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        for serial, revoked_at in entries:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at).build()
            )
        crl = builder.sign(ca_key, _SIG_HASH)
        _write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)

    def create_ca(self, trust_domain: str, *, valid_days: int = 3650) -> None:
        """Create the CA key, self-signed cert and an empty CRL; FileExistsError if any CA file exists."""
        if not _TRUST_DOMAIN_RE.fullmatch(trust_domain):
            raise ValueError(f"invalid trust domain: {trust_domain!r}")
        if valid_days <= 0:
            raise ValueError("valid_days must be positive")
        # A half-written CA (only one of the two files) is refused too: never silently replace a CA key.
        for path in (self.ca_cert_path, self.ca_key_path):
            if path.exists():
                raise FileExistsError(f"CA already exists: {path}")
        self.directory.mkdir(parents=True, exist_ok=True)

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, f"jukinet CA {trust_domain}"),
            ]
        )
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, _SIG_HASH)
        )
        # Key first: a ca.crt on disk then always has its key beside it.
        _write_atomic(self.ca_key_path, _key_pem(key), 0o600)
        _write_atomic(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._write_crl(cert, key, (), number=1)

    def cert_paths(self, role: str, ident: str) -> tuple[Path, Path]:
        """(certificate, key) paths for ``role/ident``, whether or not they exist."""
        _check_name(role, ident)
        base = self.directory / role
        return base / f"{ident}.crt", base / f"{ident}.key"

    def issue(
        self,
        role: str,
        ident: str,
        *,
        valid_days: int = 825,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        overwrite: bool = False,
    ) -> CertInfo:
        """Issue a leaf for ``role/ident``; FileExistsError if it exists and not ``overwrite``."""
        cert_path, key_path = self.cert_paths(role, ident)
        if cert_path.exists() and not overwrite:
            raise FileExistsError(f"certificate already exists: {cert_path}")
        spiffe = SpiffeId(self.trust_domain(), role, ident)

        now = datetime.now(UTC)
        end = _utc(not_after, "not_after") if not_after is not None else now + timedelta(days=valid_days)
        if not_before is not None:
            start = _utc(not_before, "not_before")
        else:
            start = now - _CLOCK_SKEW
            if start >= end:
                # Only not_after was given and it lies in the past (tests issuing expired certificates).
                start = end - timedelta(days=max(valid_days, 1))
        if start >= end:
            raise ValueError("not_before must be earlier than not_after")

        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe.uri)]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role in SERVER_ROLES:
            sans += [
                x509.DNSName(server_dns_name(role, spiffe.trust_domain)),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)

        with self._locked_ca() as (ca_cert, ca_key):
            replaced = _serial_of_file(cert_path) if overwrite else None
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe.name)]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
                )
                .sign(ca_key, _SIG_HASH)
            )
            cert_path.parent.mkdir(parents=True, exist_ok=True)
            # Logged before it exists anywhere else: every certificate of this CA can be revoked by serial.
            self._log_issued(
                Issued(
                    cert.serial_number,
                    spiffe.name,
                    spiffe.uri,
                    cert.not_valid_before_utc,
                    cert.not_valid_after_utc,
                )
            )
            # Key before certificate, so an existing .crt always has a matching .key.
            _write_atomic(key_path, _key_pem(key), 0o600)
            _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            if replaced is not None:  # the certificate replaced stops being valid at once
                self._add_to_crl(ca_cert, ca_key, replaced)

        return CertInfo(
            name=spiffe.name,
            spiffe=spiffe,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            revoked=False,
            cert_path=cert_path,
            key_path=key_path,
        )

    def _info(self, cert_path: Path, revoked: frozenset[int]) -> CertInfo:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        spiffe = spiffe_of_cert(cert)
        return CertInfo(
            name=spiffe.name,
            spiffe=spiffe,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            revoked=cert.serial_number in revoked,
            cert_path=cert_path,
            key_path=cert_path.with_suffix(".key"),
        )

    def _log_issued(self, issued: Issued) -> None:
        """Append one line to the issuance log and make it durable (called under the CA lock)."""
        fd = os.open(self.issued_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (issued.line() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def issued(self) -> list[Issued]:
        """Every certificate the CA issued since the log began, oldest first."""
        try:
            text = self.issued_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [Issued.parse(line) for line in text.splitlines() if line.strip()]

    def _add_to_crl(self, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, serial: int) -> None:
        """Put one serial on the CRL (called under the CA lock, which serialises read-modify-write)."""
        entries: dict[int, datetime] = {}
        number = 1
        if self.crl_path.exists():
            crl = _load_crl(self.crl_path, ca_cert)
            entries = {e.serial_number: e.revocation_date_utc for e in crl}
            with contextlib.suppress(x509.ExtensionNotFound):
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        if serial not in entries:
            entries[serial] = datetime.now(UTC)
            self._write_crl(ca_cert, ca_key, sorted(entries.items()), number)

    def _find(self, name_or_serial: str | int) -> Issued:
        """The certificate a `role/id` name (its current one) or a serial names; KeyError if none.

        A serial is an int, ``0x``-prefixed hex, or as `juki pki list`/`issue` print it (hex); digits alone
        are tried as decimal and as hex (random 128-bit serials do not collide)."""
        known = {i.serial: i for i in self.issued()}
        current = {info.serial: info for info in self.list()}
        for serial, info in current.items():  # certificates issued before the log began
            known.setdefault(
                serial, Issued(serial, info.name, info.spiffe.uri, info.not_before, info.not_after)
            )
        if isinstance(name_or_serial, str) and "/" in name_or_serial:
            by_name = [c for c in current.values() if c.name == name_or_serial]
            if by_name:
                return known[by_name[0].serial]
            logged = [i for i in known.values() if i.name == name_or_serial]
            if logged:
                return logged[-1]
            raise KeyError(name_or_serial)
        candidates = {known[s] for s in _serial_readings(name_or_serial) if s in known}
        if len(candidates) != 1:
            raise KeyError(name_or_serial)
        return candidates.pop()

    def revoke(self, name_or_serial: str | int) -> CertInfo:
        """Put a certificate this CA issued (by ``role/id`` name or serial) on the CRL; KeyError if unknown.
        Idempotent."""
        target = self._find(name_or_serial)
        with self._locked_ca() as (ca_cert, ca_key):
            self._add_to_crl(ca_cert, ca_key, target.serial)
        role, _, ident = target.name.partition("/")
        cert_path, key_path = self.cert_paths(role, ident)
        return CertInfo(
            name=target.name,
            spiffe=SpiffeId.parse(target.uri),
            serial=target.serial,
            not_before=target.not_before,
            not_after=target.not_after,
            revoked=True,
            cert_path=cert_path,
            key_path=key_path,
        )

    def ensure_dev(self, trust_domain: str, identities: Iterable[tuple[str, str]]) -> list[CertInfo]:
        """Create the CA if absent and issue each (role, ident) not yet issued; returns the new ones."""
        if not self.exists():
            self.create_ca(trust_domain)
        elif self.trust_domain() != trust_domain:
            raise ValueError(f"PKI trust domain is {self.trust_domain()!r}, not {trust_domain!r}")
        issued: list[CertInfo] = []
        for role, ident in identities:
            cert_path, key_path = self.cert_paths(role, ident)
            if cert_path.exists() and key_path.exists() and not _lacks_server_name(cert_path, role):
                continue
            # A certificate without its key is useless, and a server's without its DNS name (issued by
            # an older jukinet) cannot be checked by its peers: re-issue (the old one is revoked).
            issued.append(self.issue(role, ident, overwrite=True))
        return issued

    # Defined last: inside the class body the name `list` refers to this method from here on.
    def list(self) -> list[CertInfo]:
        """Every issued leaf under the directory, sorted by name, with its revoked flag."""
        revoked = load_revoked_serials(self.crl_path, self.ca_cert_path) if self.exists() else frozenset()
        infos = [
            self._info(path, revoked)
            for role in ROLES
            if (self.directory / role).is_dir()
            for path in (self.directory / role).glob("*.crt")
            if not path.name.startswith(".")
        ]
        return sorted(infos, key=lambda info: info.name)
