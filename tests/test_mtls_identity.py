"""SPEC §4.1: strict mutual TLS against a real server process.

A peer without a certificate, with one from another CA, or with an expired one never completes a call; a
revoked certificate or one whose identity is not of this deployment gets UNAUTHENTICATED before any handler
runs; identity is the URI SAN, never the CN. A rejected peer never receives a byte of record data.
"""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from juki.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    prefecture_pb2,
    prefecture_pb2_grpc,
    records_pb2,
)

from clients.channel import channel_credentials
from server.audit.query import query
from server.identity.pki import DEV_IDENTITIES, Pki, spiffe_id_of_pem
from server.seed.population import generate
from tests.conftest import Server, make_server

POLICE = "agency/police"
POLICE_PURPOSE = "bt6-police-driving-licence"
EDUCATION = "agency/education"
EDUCATION_PURPOSE = "bt6-education-teacher-licence"
EDUCATION_URI = "spiffe://juki.mie/agency/education"
OWN_SEEDED = 200  # the servers this module starts itself need only a few residents
POLL_LIMIT = 5.0  # revocation must show within this (the server re-reads crl.pem at most every 0.25 s)

# What a peer that passed TLS sends first: the HTTP/2 connection preface and an empty SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


# --- helpers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A client certificate and its key, on disk (PEM)."""

    cert: Path
    key: Path

    def credentials(self, ca_cert: Path) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=ca_cert.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


def leaf_of(pki: Pki, identity: str) -> Leaf:
    role, _, ident = identity.partition("/")
    cert, key = pki.cert_paths(role, ident)
    return Leaf(cert, key)


Connect = Callable[[Server, grpc.ChannelCredentials], Any]


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Opens Prefecture stubs over given credentials; every channel is closed after the test."""
    channels: list[grpc.Channel] = []

    def open_stub(server: Server, credentials: grpc.ChannelCredentials) -> Any:
        channel = grpc.secure_channel(server.settings.prefecture_target, credentials)
        channels.append(channel)
        return prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]

    yield open_stub
    for channel in channels:
        channel.close()


def active(records: Sequence[Any]) -> Any:
    return next(r for r in records if r.state == records_pb2.RECORD_STATE_ACTIVE)


def police_lookup(record: Any) -> prefecture_pb2.LookupRequest:
    return prefecture_pb2.LookupRequest(resident_code=record.resident_code, purpose=POLICE_PURPOSE)


def refused(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=5)
    return info.value


def first_refusal(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    """Repeat a call that is served now until it is refused (bounded by POLL_LIMIT); the refusal."""
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        try:
            call(request, timeout=5)
        except grpc.RpcError as error:
            return error
        assert time.monotonic() < deadline, f"still served {POLL_LIMIT} s later"
        time.sleep(0.05)


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code()


def assert_no_record_data(error: grpc.RpcError, record: Any) -> None:
    """Neither the status message, the debug string nor any trailing metadata names the resident."""
    call: Any = error  # a grpc.Call as well: debug_error_string(), metadata as (key, value) pairs
    texts = [str(call.details()), str(call.debug_error_string())]
    blobs: list[bytes] = []
    for key, value in tuple(call.trailing_metadata() or ()):
        texts.append(key)
        if isinstance(value, bytes):
            blobs.append(value)
            if key == "grpc-status-details-bin":
                status = status_pb2.Status()
                status.ParseFromString(value)
                texts.append(status.message)
                assert all(
                    not d.value or record.resident_code.encode() not in d.value for d in status.details
                )
        else:
            texts.append(value)
    text = "\n".join(texts)
    values = (
        record.resident_code,
        record.my_number,
        record.four_info.name_kanji,
        record.four_info.name_kana,
        record.four_info.address,
    )
    for value in values:
        assert value not in text
        assert value.encode() not in b"".join(blobs)


def assert_refused_at_handshake(error: grpc.RpcError, record: Any) -> None:
    assert code_of(error) == grpc.StatusCode.UNAVAILABLE, error
    # Refused at the connection, not by a handler: no call was ever started, so no status details either.
    assert "failed to connect" in str(error.details()), error
    assert not error.trailing_metadata(), error
    assert_no_record_data(error, record)


def raw_tls_bytes(server: Server, ca_cert: Path, leaf: Leaf | None) -> bytes:
    """Application bytes the listener sends to a TLS peer that then speaks HTTP/2 (b"" if refused)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols(["h2"])
    if leaf is not None:
        context.load_cert_chain(str(leaf.cert), str(leaf.key))
    host, port = server.settings.host, server.settings.prefecture_port
    received = b""
    with socket.create_connection((host, port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                tls.sendall(H2_PREFACE)
                while len(received) < 9:  # one HTTP/2 frame header is enough to tell
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    received += chunk
        except (ssl.SSLError, ConnectionError):
            pass  # the server's alert or reset: exactly what a refused peer should get
    return received


def forge_leaf(
    pki_dir: Path,
    out: Path,
    *,
    cn: str,
    uris: Sequence[str] | None,
    dns: Sequence[str] = (),
    signed_by: str | None = None,
    ca: bool = False,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    lifetime: timedelta = timedelta(days=1),
) -> Leaf:
    """A client certificate with whatever (possibly wrong) SANs we choose, signed by the deployment CA.

    With `signed_by` ("<role>/<id>" of that PKI) that leaf's key signs instead, and the chain presented
    is the new certificate followed by that leaf.
    """
    issuer = (
        Leaf(pki_dir / "ca.crt", pki_dir / "ca.key")
        if signed_by is None
        else leaf_of(Pki(pki_dir), signed_by)
    )
    issuer_cert = x509.load_pem_x509_certificate(issuer.cert.read_bytes())
    issuer_key = serialization.load_pem_private_key(issuer.key.read_bytes(), password=None)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris or ()]
    names += [x509.DNSName(d) for d in dns]
    if uris is not None or dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    leaf = Leaf(out / "leaf.crt", out / "leaf.key")
    leaf.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    chain = cert.public_bytes(serialization.Encoding.PEM)
    if signed_by is not None:
        chain += issuer.cert.read_bytes()
    leaf.cert.write_bytes(chain)
    return leaf


def unknown_method(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
    # No serializers: the payload goes out as raw bytes (the server has no message type for it anyway).
    return channel.unary_unary(path)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_cert(pki_dir: Path) -> Path:
    return Pki(pki_dir).ca_cert_path


@pytest.fixture(scope="module")
def record(seeded_records: list[Any]) -> Any:
    return active(seeded_records)


@pytest.fixture(scope="module")
def foreign_leaf(tmp_path_factory: pytest.TempPathFactory) -> Leaf:
    """agency/police of the same trust domain, but from another CA."""
    other = Pki(tmp_path_factory.mktemp("other-ca"))
    other.ensure_dev("juki.mie", [("agency", "police")])
    return leaf_of(other, POLICE)


@pytest.fixture(scope="module")
def expired_leaf(pki_dir: Path) -> Leaf:
    """Issued by the real CA, expired yesterday. A fresh identity: the shared dev certificates stay intact."""
    pki = Pki(pki_dir)
    info = pki.issue(
        "agency", "expired-mtls", not_after=datetime.now(UTC) - timedelta(days=1), overwrite=True
    )
    assert info.not_after < datetime.now(UTC)
    return Leaf(info.cert_path, info.key_path)


@pytest.fixture(scope="module")
def other_domain_leaf(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Leaf:
    return forge_leaf(
        pki_dir,
        tmp_path_factory.mktemp("other-domain"),
        cn=POLICE,
        uris=["spiffe://other.example/agency/police"],
    )


@dataclass
class Deployment:
    """A server of this module's own, over its own PKI (so certificates there may be revoked)."""

    pki: Pki
    server: Server
    records: list[Any]


@pytest.fixture
def own_deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    started: list[Server] = []

    def start(**overrides: Any) -> Deployment:
        pki = Pki(tmp_path / "pki")
        pki.ensure_dev("juki.mie", DEV_IDENTITIES)
        server = make_server(tmp_path / "srv", pki.directory, seeded=OWN_SEEDED, **overrides)
        server.start()
        started.append(server)
        return Deployment(pki, server, [entry.record for entry in generate(OWN_SEEDED, 1)])

    yield start
    for server in started:
        server.stop_all()


# --- 1-3: peers that never complete a call ----------------------------------------------------------


def test_valid_certificate_is_served(server: Server, record: Any, ca_cert: Path, connect: Connect) -> None:
    """The control for every refusal below: the same call with the dev certificate gets the record."""
    stub = connect(server, leaf_of(Pki(server.settings.pki_path), POLICE).credentials(ca_cert))
    view = stub.Lookup(police_lookup(record), timeout=5).record
    assert view.resident_code == record.resident_code
    assert view.my_number == record.my_number


def test_no_client_certificate_fails_the_handshake(
    server: Server, record: Any, ca_cert: Path, connect: Connect
) -> None:
    stub = connect(server, grpc.ssl_channel_credentials(root_certificates=ca_cert.read_bytes()))
    assert_refused_at_handshake(refused(stub.Lookup, police_lookup(record)), record)
    assert_refused_at_handshake(refused(stub.Ping, prefecture_pb2.PingRequest()), record)


def test_certificate_of_another_ca_fails_the_handshake(
    server: Server, record: Any, ca_cert: Path, foreign_leaf: Leaf, connect: Connect
) -> None:
    # Same trust domain and same identity as the real agency/police: only the issuing CA differs.
    spiffe, _ = spiffe_id_of_pem(foreign_leaf.cert.read_bytes())
    assert spiffe.uri == "spiffe://juki.mie/agency/police"
    # … and even the issuer name is the real CA's (same trust domain, same naming): only the key differs.
    issuer = x509.load_pem_x509_certificate(foreign_leaf.cert.read_bytes()).issuer
    assert issuer == x509.load_pem_x509_certificate(ca_cert.read_bytes()).subject
    stub = connect(server, foreign_leaf.credentials(ca_cert))
    assert_refused_at_handshake(refused(stub.Lookup, police_lookup(record)), record)


def test_certificate_signed_by_a_leaf_fails_the_handshake(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path, tmp_path: Path, connect: Connect
) -> None:
    """A real leaf's key is no CA: what it signs is not chained to the CA, even with the leaf presented."""
    leaf = forge_leaf(
        pki_dir, tmp_path, cn="admin/evil", uris=["spiffe://juki.mie/admin/evil"], signed_by=POLICE
    )
    stub = connect(server, leaf.credentials(ca_cert))
    assert_refused_at_handshake(refused(stub.Lookup, police_lookup(record)), record)


def test_expired_certificate_of_the_real_ca_fails_the_handshake(
    server: Server, record: Any, ca_cert: Path, expired_leaf: Leaf, connect: Connect
) -> None:
    stub = connect(server, expired_leaf.credentials(ca_cert))
    assert_refused_at_handshake(refused(stub.Lookup, police_lookup(record)), record)
    assert_refused_at_handshake(refused(stub.Ping, prefecture_pb2.PingRequest()), record)


def test_certificate_expiring_on_an_open_connection_stops_being_served(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path, tmp_path: Path, connect: Connect
) -> None:
    # A second certificate of a known identity, valid for three more seconds (the PKI directory's stays).
    leaf = forge_leaf(pki_dir, tmp_path, cn=EDUCATION, uris=[EDUCATION_URI], lifetime=timedelta(seconds=3))
    not_after = x509.load_pem_x509_certificate(leaf.cert.read_bytes()).not_valid_after_utc
    stub = connect(server, leaf.credentials(ca_cert))
    stub.Ping(prefecture_pb2.PingRequest(), timeout=5)  # connected (and identified) while still valid
    time.sleep(max(0.0, (not_after - datetime.now(UTC)).total_seconds()) + 1.1)
    error = refused(stub.Ping, prefecture_pb2.PingRequest())
    assert code_of(error) in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE), error
    assert_no_record_data(error, record)


@pytest.mark.parametrize("peer", ["none", "other-ca", "expired"])
def test_rejected_peer_receives_no_application_bytes(
    server: Server, ca_cert: Path, foreign_leaf: Leaf, expired_leaf: Leaf, peer: str
) -> None:
    """Below gRPC: the listener sends such a peer not even its HTTP/2 SETTINGS, let alone record data."""
    leaf = {"none": None, "other-ca": foreign_leaf, "expired": expired_leaf}[peer]
    assert raw_tls_bytes(server, ca_cert, leaf) == b""


def test_raw_tls_probe_sees_http2_from_a_valid_peer(server: Server, ca_cert: Path) -> None:
    """Control for the probe above: with a valid certificate the listener does answer (a SETTINGS frame)."""
    received = raw_tls_bytes(server, ca_cert, leaf_of(Pki(server.settings.pki_path), POLICE))
    assert len(received) >= 9
    assert received[3] == 0x04  # HTTP/2 frame type SETTINGS


# --- 4: revocation while the server runs ------------------------------------------------------------


def test_revoked_while_running_gets_unauthenticated_and_no_data(
    own_deployment: Callable[..., Deployment], connect: Connect
) -> None:
    own = own_deployment()
    record = active(own.records)
    ca = own.pki.ca_cert_path
    police = connect(own.server, leaf_of(own.pki, POLICE).credentials(ca))
    view = police.Lookup(police_lookup(record), timeout=5).record
    assert (view.resident_code, view.my_number) == (record.resident_code, record.my_number)

    revoked = own.pki.revoke(POLICE)
    assert revoked.revoked

    error = first_refusal(police.Lookup, police_lookup(record))
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED, error
    assert_no_record_data(error, record)

    # A new connection with the revoked certificate is refused too, for every method, known or not.
    fresh = connect(own.server, leaf_of(own.pki, POLICE).credentials(ca))
    again = refused(fresh.Lookup, police_lookup(record))
    assert code_of(again) == grpc.StatusCode.UNAUTHENTICATED
    assert_no_record_data(again, record)
    assert code_of(refused(fresh.Ping, prefecture_pb2.PingRequest())) == grpc.StatusCode.UNAUTHENTICATED
    channel = grpc.secure_channel(
        own.server.settings.prefecture_target, leaf_of(own.pki, POLICE).credentials(ca)
    )
    with channel:
        unknown = refused(unknown_method(channel, "/juki.v1.Prefecture/Nope"), b"")
    assert code_of(unknown) == grpc.StatusCode.UNAUTHENTICATED

    # A new certificate for the same identity (new serial) is served again: revocation is by serial.
    reissued = own.pki.issue("agency", "police", overwrite=True)
    assert reissued.serial != revoked.serial
    renewed = connect(own.server, leaf_of(own.pki, POLICE).credentials(ca))
    assert renewed.Lookup(police_lookup(record), timeout=5).record.my_number == record.my_number

    # Everyone else keeps working.
    education = connect(own.server, leaf_of(own.pki, EDUCATION).credentials(ca))
    request = prefecture_pb2.LookupRequest(resident_code=record.resident_code, purpose=EDUCATION_PURPOSE)
    assert education.Lookup(request, timeout=5).record.resident_code == record.resident_code
    connect(own.server, leaf_of(own.pki, "monitor/monitor-01").credentials(ca)).Ping(
        prefecture_pb2.PingRequest(), timeout=5
    )


# --- 5-6: identity is the sole URI SAN of this trust domain -----------------------------------------

UNKNOWN_IDENTITIES = {
    "other-trust-domain": (["spiffe://other.example/agency/police"], ()),
    "no-san-at-all": (None, ()),
    "dns-san-only": ([], ("police.juki.mie",)),
    "two-uri-sans": (["spiffe://juki.mie/agency/police", "spiffe://juki.mie/agency/education"], ()),
    "extra-path-segment": (["spiffe://juki.mie/agency/police/extra"], ()),
    "not-spiffe": (["https://juki.mie/agency/police"], ()),
    "upper-case-domain": (["spiffe://JUKI.MIE/agency/police"], ()),
    "domain-with-port": (["spiffe://juki.mie:443/agency/police"], ()),
    "unknown-role": (["spiffe://juki.mie/mayor/police"], ()),
}


@pytest.mark.parametrize("case", sorted(UNKNOWN_IDENTITIES))
def test_identity_not_of_this_deployment_gets_unauthenticated(
    server: Server,
    record: Any,
    ca_cert: Path,
    pki_dir: Path,
    tmp_path: Path,
    connect: Connect,
    case: str,
) -> None:
    uris, dns = UNKNOWN_IDENTITIES[case]
    # The CN names a real, fully granted identity: it must not matter.
    leaf = forge_leaf(pki_dir, tmp_path, cn=POLICE, uris=uris, dns=dns)
    stub = connect(server, leaf.credentials(ca_cert))
    error = refused(stub.Lookup, police_lookup(record))
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED, error
    assert_no_record_data(error, record)
    # Even the call every identified peer may make.
    assert code_of(refused(stub.Ping, prefecture_pb2.PingRequest())) == grpc.StatusCode.UNAUTHENTICATED


def test_identity_is_the_uri_san_never_the_cn(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path, tmp_path: Path, connect: Connect
) -> None:
    leaf = forge_leaf(pki_dir, tmp_path, cn=POLICE, uris=["spiffe://juki.mie/monitor/monitor-01"])
    stub = connect(server, leaf.credentials(ca_cert))
    # Authenticated (as monitor/monitor-01: every known identity may Ping) …
    stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
    # … but a monitor may not Lookup, whatever the CN says.
    error = refused(stub.Lookup, police_lookup(record))
    assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED, error
    assert_no_record_data(error, record)


# --- 7: unknown methods -----------------------------------------------------------------------------

UNKNOWN_PATHS = ["/juki.v1.Prefecture/Nope", "/juki.v1.Secret/Dump"]


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_method_from_unidentified_peer_is_unauthenticated(
    server: Server, ca_cert: Path, other_domain_leaf: Leaf, path: str
) -> None:
    with grpc.secure_channel(
        server.settings.prefecture_target, other_domain_leaf.credentials(ca_cert)
    ) as channel:
        error = refused(unknown_method(channel, path), b"")
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED, error


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_method_from_valid_peer_is_permission_denied(server: Server, path: str) -> None:
    credentials = channel_credentials(Pki(server.settings.pki_path), POLICE)
    with grpc.secure_channel(server.settings.prefecture_target, credentials) as channel:
        error = refused(unknown_method(channel, path), b"")
    assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED, error


# --- 8: SIGHUP reloads without a restart ------------------------------------------------------------


def test_sighup_keeps_serving_on_existing_and_new_channels(
    server: Server, record: Any, ca_cert: Path, connect: Connect
) -> None:
    assert server.proc is not None
    police = connect(server, leaf_of(Pki(server.settings.pki_path), POLICE).credentials(ca_cert))
    assert police.Lookup(police_lookup(record), timeout=5).record.resident_code == record.resident_code
    pid = server.proc.pid

    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)  # let the signal be handled before probing

    assert server.proc.poll() is None
    assert server.proc.pid == pid
    assert police.Lookup(police_lookup(record), timeout=5).record.resident_code == record.resident_code
    fresh = connect(server, leaf_of(Pki(server.settings.pki_path), POLICE).credentials(ca_cert))
    assert fresh.Lookup(police_lookup(record), timeout=5).record.my_number == record.my_number


def test_sighup_reloads_the_revocation_list_at_once(
    own_deployment: Callable[..., Deployment], connect: Connect
) -> None:
    # With an hour between file checks, only the SIGHUP reload can make the revocation visible in time.
    own = own_deployment(crl_check_interval=3600.0)
    assert own.server.proc is not None
    record = active(own.records)
    police = connect(own.server, leaf_of(own.pki, POLICE).credentials(own.pki.ca_cert_path))
    police.Lookup(police_lookup(record), timeout=5)
    own.pki.revoke(POLICE)
    # Control: the periodic check has not run yet, so the call is still served.
    police.Lookup(police_lookup(record), timeout=5)

    own.server.proc.send_signal(signal.SIGHUP)
    error = first_refusal(police.Lookup, police_lookup(record))
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED, error
    assert_no_record_data(error, record)
    assert own.server.proc.poll() is None


# --- 9: certificates that are never a client identity; unknown ids of known roles -------------------


def _health(channel: grpc.Channel) -> Any:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


def _reflection(channel: grpc.Channel, version: str) -> Any:
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))


def assert_unauthenticated_everywhere(
    server: Server, credentials: grpc.ChannelCredentials, record: Any, *, or_handshake: bool = False
) -> None:
    """Lookup, Ping, health and both reflection versions: UNAUTHENTICATED (or, with `or_handshake`, refused
    at the handshake already), no record data."""
    with grpc.secure_channel(server.settings.prefecture_target, credentials) as channel:
        stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
        calls: list[Callable[[], Any]] = [
            lambda: stub.Lookup(police_lookup(record), timeout=5),
            lambda: stub.Ping(prefecture_pb2.PingRequest(), timeout=5),
            lambda: _health(channel),
            lambda: _reflection(channel, "v1"),
            lambda: _reflection(channel, "v1alpha"),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            if or_handshake and code_of(info.value) == grpc.StatusCode.UNAVAILABLE:
                assert_refused_at_handshake(info.value, record)
                continue
            assert code_of(info.value) == grpc.StatusCode.UNAUTHENTICATED, info.value
            assert_no_record_data(info.value, record)


@pytest.mark.parametrize(
    "case",
    ["ca-true", "server-auth-only"],
)
def test_certificate_made_for_no_client_is_never_an_identity(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path, tmp_path: Path, case: str
) -> None:
    """The real agency/police URI SAN, signed by the deployment CA, but a CA certificate or one without the
    clientAuth usage: never a client identity."""
    options: dict[str, Any] = (
        {"ca": True} if case == "ca-true" else {"usages": [ExtendedKeyUsageOID.SERVER_AUTH]}
    )
    leaf = forge_leaf(pki_dir, tmp_path, cn=POLICE, uris=["spiffe://juki.mie/agency/police"], **options)
    # (TLS itself refuses a client certificate without clientAuth; CA:TRUE passes TLS and is refused here)
    assert_unauthenticated_everywhere(
        server, leaf.credentials(ca_cert), record, or_handshake=case == "server-auth-only"
    )
    # control: the same forgery as an ordinary client certificate is served
    good = forge_leaf(pki_dir, tmp_path / "good", cn=POLICE, uris=["spiffe://juki.mie/agency/police"])
    with grpc.secure_channel(server.settings.prefecture_target, good.credentials(ca_cert)) as channel:
        stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
        assert stub.Lookup(police_lookup(record), timeout=5).record.resident_code == record.resident_code


@pytest.mark.parametrize(
    "identity",
    [
        "agency/fire",  # a role the policy knows, an id it names nowhere
        "department/police",
        "municipal-cs/232017",  # 名古屋市: a municipality, but not of this prefecture
        "municipal-cs/999999",
        "prefectural-server/99",
        "prefectural-server/23",  # 愛知県's server: known to the national server only
        "fuhyo-server/13",
        "monitor/monitor-99",
        "admin/admin-99",
        "national/other",
    ],
)
def test_unknown_id_of_a_known_role_gets_unauthenticated_on_every_method(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path, tmp_path: Path, identity: str
) -> None:
    leaf = forge_leaf(pki_dir, tmp_path, cn=identity, uris=[f"spiffe://juki.mie/{identity}"])
    assert_unauthenticated_everywhere(server, leaf.credentials(ca_cert), record)


def test_issued_certificate_of_an_unknown_id_gets_unauthenticated(
    server: Server, record: Any, ca_cert: Path, pki_dir: Path
) -> None:
    """`juki pki issue agency fire` alone does not make agency/fire a caller (the policy must list it)."""
    info = Pki(pki_dir).issue("agency", "fire", overwrite=True)
    leaf = Leaf(info.cert_path, info.key_path)
    assert_unauthenticated_everywhere(server, leaf.credentials(ca_cert), record)


def test_unregistered_operator_is_unauthenticated_on_every_method(
    server: Server, record: Any, pki_dir: Path
) -> None:
    info = Pki(pki_dir).issue("operator", "op-unknown-mtls", overwrite=True)
    credentials = Leaf(info.cert_path, info.key_path).credentials(Pki(pki_dir).ca_cert_path)
    assert_unauthenticated_everywhere(server, credentials, record)
    with grpc.secure_channel(server.settings.prefecture_target, credentials) as channel:
        stub: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as info_:
            stub.ListOperators(admin_pb2.ListOperatorsRequest(), timeout=5)
    assert code_of(info_.value) == grpc.StatusCode.UNAUTHENTICATED  # not PERMISSION_DENIED: it is unknown


@pytest.mark.parametrize("identity", ["operator/op-0001", "prefectural-server/23"])
def test_the_national_server_knows_other_prefectures_but_no_operator(
    server: Server, pki_dir: Path, tmp_path: Path, identity: str
) -> None:
    """The national server has no operator registry: a (registered elsewhere) operator is unknown there;
    another prefecture's server is known (which changes it may send is the national server's check)."""
    leaf = forge_leaf(pki_dir, tmp_path, cn=identity, uris=[f"spiffe://juki.mie/{identity}"])
    credentials = leaf.credentials(Pki(pki_dir).ca_cert_path)
    with grpc.secure_channel(server.settings.national_target, credentials) as channel:
        ping = channel.unary_unary(
            "/juki.v1.National/Ping",
            request_serializer=prefecture_pb2.PingRequest.SerializeToString,
            response_deserializer=prefecture_pb2.PingResponse.FromString,
        )
        if identity.startswith("operator/"):
            with pytest.raises(grpc.RpcError) as info:
                ping(prefecture_pb2.PingRequest(), timeout=5)
            assert code_of(info.value) == grpc.StatusCode.UNAUTHENTICATED
        else:
            ping(prefecture_pb2.PingRequest(), timeout=5)


@pytest.mark.parametrize("identity", ["municipal-cs/245623", "monitor/monitor-01", "fuhyo-server/24"])
def test_known_identities_are_served_ping_health_and_reflection(server: Server, identity: str) -> None:
    """Control: identities of the policy's [identities] table (a list, or a rule) are served."""
    credentials = channel_credentials(Pki(server.settings.pki_path), identity)
    with grpc.secure_channel(server.settings.prefecture_target, credentials) as channel:
        prefecture_pb2_grpc.PrefectureStub(channel).Ping(prefecture_pb2.PingRequest(), timeout=5)  # type: ignore[no-untyped-call]
        assert _health(channel).status == health_pb2.HealthCheckResponse.SERVING
        for version in ("v1", "v1alpha"):
            (reply,) = _reflection(channel, version)
            assert "juki.v1.Prefecture" in {s.name for s in reply.list_services_response.service}


def test_sighup_reloads_the_known_identities(
    own_deployment: Callable[..., Deployment], tmp_path: Path, connect: Connect
) -> None:
    """Adding an identity: list it in [identities], issue its certificate, SIGHUP (no restart)."""
    policy = tmp_path / "policy.toml"
    text = (Path(__file__).parents[1] / "server" / "policy.toml").read_text(encoding="utf-8")
    policy.write_text(text, encoding="utf-8")
    own = own_deployment(policy_file=policy, with_national=False, crl_check_interval=3600.0)
    assert own.server.proc is not None
    info = own.pki.issue("agency", "fire")
    fire = connect(own.server, Leaf(info.cert_path, info.key_path).credentials(own.pki.ca_cert_path))
    error = refused(fire.Ping, prefecture_pb2.PingRequest())
    assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED

    listed = 'agency = ["police", "education"]'
    assert listed in text
    policy.write_text(text.replace(listed, 'agency = ["police", "education", "fire"]'), encoding="utf-8")
    own.server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        try:
            fire.Ping(prefecture_pb2.PingRequest(), timeout=5)
            break
        except grpc.RpcError as exc:
            assert code_of(exc) == grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() < deadline, "agency/fire still unknown after SIGHUP"
            time.sleep(0.05)
    record = active(own.records)
    # known now, but granted nothing beyond Ping: a lookup is PERMISSION_DENIED, no data
    denied = refused(fire.Lookup, police_lookup(record))
    assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert_no_record_data(denied, record)


# --- 10: a refused certificate is audited with the identity it claims and its serial ----------------


def _unauthenticated_entries(server: Server) -> list[dict[str, Any]]:
    return list(query(server.settings.path(server.settings.audit_dir), outcome="UNAUTHENTICATED"))


def test_revoked_certificate_is_audited_with_its_claimed_identity_and_serial(
    own_deployment: Callable[..., Deployment], connect: Connect
) -> None:
    own = own_deployment(with_national=False)
    record = active(own.records)
    police = connect(own.server, leaf_of(own.pki, POLICE).credentials(own.pki.ca_cert_path))
    police.Lookup(police_lookup(record), timeout=5)
    revoked = own.pki.revoke(POLICE)
    assert code_of(first_refusal(police.Lookup, police_lookup(record))) == grpc.StatusCode.UNAUTHENTICATED
    entries = [e for e in _unauthenticated_entries(own.server) if e["method"].endswith("/Lookup")]
    assert entries, "no UNAUTHENTICATED entry"
    entry = entries[-1]
    assert entry["claimed"] == "spiffe://juki.mie/agency/police"
    assert entry["serial"] == f"{revoked.serial:x}"
    assert entry["caller"] == "" and entry["role"] == ""  # a claim, never an authenticated caller
    assert entry["subjects"] and entry["items"] == []


def test_expired_certificate_on_an_open_connection_is_audited_with_its_claim(
    server: Server, ca_cert: Path, pki_dir: Path, tmp_path: Path, connect: Connect
) -> None:
    leaf = forge_leaf(pki_dir, tmp_path, cn="x", uris=[EDUCATION_URI], lifetime=timedelta(seconds=2))
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    stub = connect(server, leaf.credentials(ca_cert))
    stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
    time.sleep(max(0.0, (cert.not_valid_after_utc - datetime.now(UTC)).total_seconds()) + 1.1)
    error = refused(stub.Ping, prefecture_pb2.PingRequest())
    if code_of(error) == grpc.StatusCode.UNAVAILABLE:
        pytest.skip("the connection was closed at expiry before a call could be refused")
    claimed = [e for e in _unauthenticated_entries(server) if e.get("serial") == f"{cert.serial_number:x}"]
    assert [e["claimed"] for e in claimed] == [EDUCATION_URI]


# --- 11: protocol and suites (the /metrics ports match these: test_metrics_endpoint) ----------------


def _tls12_suite(server: Server, ca_cert: Path, ciphers: str) -> str | None:
    """The TLS 1.2 suite the gRPC port agrees to when offered only `ciphers`, None when it refuses."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    context.set_alpn_protocols(["h2"])
    leaf = leaf_of(Pki(server.settings.pki_path), "monitor/monitor-01")
    context.load_cert_chain(str(leaf.cert), str(leaf.key))
    host, port = server.settings.host, server.settings.prefecture_port
    with socket.create_connection((host, port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                cipher = tls.cipher()
                return cipher[0] if cipher else None
        except (ssl.SSLError, ConnectionError):
            return None


def test_grpc_port_speaks_tls12_with_aead_suites_only(server: Server, ca_cert: Path) -> None:
    assert _tls12_suite(server, ca_cert, "ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        assert _tls12_suite(server, ca_cert, f"{cbc}:@SECLEVEL=0") is None, cbc
