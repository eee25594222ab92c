"""The peer matrix (issue 11; SPEC §4.1, §4.2): every hostile certificate × every listener, and every role ×
every method of every service against policy.toml.

One set of real servers (prefectural, 附票, national) over a PKI of this module. Hostile certificates are
built here with `cryptography`, each claiming an identity that would get data on the listener it is tried
on (agency/police on the record servers, prefectural-server/24 on the national one, monitor/monitor-01 on
the metrics ports). Each is refused where SPEC §4.1 says — at the handshake, as UNAUTHENTICATED, or (a CN
that names someone else) as whoever its URI SAN names — and no refusal carries a resident's data in its
response, headers, trailers or error details.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import shutil
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from juki.v1 import admin_pb2, fuhyo_pb2, national_pb2, prefecture_pb2, records_pb2

from server.identity.pki import DEV_IDENTITIES, Pki, SpiffeId
from server.identity.policy import Decision, Policy
from server.seed.elsewhere import generate_elsewhere
from server.seed.population import generate
from tests.conftest import ELSEWHERE, SEEDED, Server, make_server

TRUST_DOMAIN = "juki.mie"
CHAIN_REFUSALS = {
    Decision.NO_METHOD,
    Decision.NO_PURPOSE,
    "operator not registered or revoked",
    "method not in the operator's registration",
    "purpose not in the operator's registration",
}


# ---------------------------------------------------------------------------------------------------------
# servers and certificates


@dataclass(frozen=True)
class Material:
    """What a peer presents: a key and certificate chain (PEM), or nothing."""

    key: bytes | None
    cert: bytes | None


@dataclass
class Matrix:
    server: Server
    pki: Pki
    superseded: dict[str, Material]
    revoked: dict[str, Material]
    channels: dict[tuple[str, str], grpc.Channel]


CLAIMED = ("agency/police", "prefectural-server/24", "monitor/monitor-01")


def _files(pki: Pki, identity: str) -> Material:
    cert, key = pki.cert_paths(*identity.split("/"))
    return Material(key.read_bytes(), cert.read_bytes())


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    base = tmp_path_factory.mktemp("matrix")
    pki = Pki(base / "pki")
    pki.ensure_dev(TRUST_DOMAIN, DEV_IDENTITIES)
    superseded, revoked = {}, {}
    for identity in CLAIMED:
        role, ident = identity.split("/")
        superseded[identity] = _files(pki, identity)  # then replaced, as `juki pki issue --overwrite` does
        pki.issue(role, ident, overwrite=True)
        pki.revoke(identity)
        revoked[identity] = _files(pki, identity)
        pki.issue(role, ident, overwrite=True)  # the certificate in force
    for role, ident in (("agency", "fire"), ("prefectural-server", "99"), ("monitor", "monitor-99")):
        pki.issue(role, ident)  # unknown ids of known roles
    server = make_server(base / "srv", pki.directory, with_fuhyo=True)
    server.start()
    made = Matrix(server, pki, superseded, revoked, {})
    yield made
    for channel in made.channels.values():
        channel.close()
    server.stop_all()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _leaf(
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    uris: list[str],
    cn: str,
    ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    valid: tuple[dt.timedelta, dt.timedelta] = (dt.timedelta(minutes=-5), dt.timedelta(days=30)),
) -> Material:
    """A certificate like the dev ones (ECDSA P-256), but with what the case makes hostile; `issuer` None:
    self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names.append(x509.DNSName("peer.invalid"))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid[0])
        .not_valid_after(now + valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return Material(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM))


def _dev_ca(pki: Pki) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert.subject, key


def _other_ca(pki: Pki) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    """Another CA under the very same name as the deployment's (only the key differs)."""
    return x509.load_pem_x509_certificate(pki.ca_cert_path.read_bytes()).subject, ec.generate_private_key(
        ec.SECP256R1()
    )


def _uri(identity: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/{identity}"


HANDSHAKE, IDENTITY, SAN_ONLY = "refused at the handshake", "UNAUTHENTICATED", "only the URI SAN counts"
Build = Callable[[Matrix, str], Material]


def _unknown_id(m: Matrix, claimed: str) -> Material:
    role = claimed.split("/")[0]
    return _files(m.pki, {"agency": "agency/fire", "monitor": "monitor/monitor-99"}.get(role, f"{role}/99"))


CASES: dict[str, tuple[str, Build]] = {
    "no certificate": (HANDSHAKE, lambda m, c: Material(None, None)),
    "self-signed": (HANDSHAKE, lambda m, c: _leaf(None, uris=[_uri(c)], cn=c)),
    "other CA": (HANDSHAKE, lambda m, c: _leaf(_other_ca(m.pki), uris=[_uri(c)], cn=c)),
    "expired": (
        HANDSHAKE,
        lambda m, c: _leaf(
            _dev_ca(m.pki), uris=[_uri(c)], cn=c, valid=(dt.timedelta(days=-30), dt.timedelta(minutes=-5))
        ),
    ),
    "not yet valid": (
        HANDSHAKE,
        lambda m, c: _leaf(
            _dev_ca(m.pki), uris=[_uri(c)], cn=c, valid=(dt.timedelta(days=1), dt.timedelta(days=30))
        ),
    ),
    "server-only EKU": (
        HANDSHAKE,
        lambda m, c: _leaf(_dev_ca(m.pki), uris=[_uri(c)], cn=c, usages=(ExtendedKeyUsageOID.SERVER_AUTH,)),
    ),
    "revoked": (IDENTITY, lambda m, c: m.revoked[c]),
    "superseded": (IDENTITY, lambda m, c: m.superseded[c]),
    "CA:TRUE": (IDENTITY, lambda m, c: _leaf(_dev_ca(m.pki), uris=[_uri(c)], cn=c, ca=True)),
    "CN≠SAN": (SAN_ONLY, lambda m, c: _leaf(_dev_ca(m.pki), uris=[_uri("auditor/auditor-01")], cn=c)),
    "two URI SANs": (
        IDENTITY,
        lambda m, c: _leaf(_dev_ca(m.pki), uris=[_uri(c), _uri("admin/admin-01")], cn=c),
    ),
    "foreign trust domain": (
        IDENTITY,
        lambda m, c: _leaf(_dev_ca(m.pki), uris=[_uri(c, "evil.example")], cn=c),
    ),
    "no URI SAN": (IDENTITY, lambda m, c: _leaf(_dev_ca(m.pki), uris=[], cn=c)),
    "unknown id of a known role": (IDENTITY, _unknown_id),
}
GRPC_LISTENERS = ("prefecture", "fuhyo", "national")
METRICS_LISTENERS = ("prefecture-metrics", "fuhyo-metrics", "national-metrics")


def _marked(case: str, listener: str) -> Any:
    return pytest.param(case, listener, id=f"{listener}:{case}")


# ---------------------------------------------------------------------------------------------------------
# what is secret, and how a reply is searched for it


MIE = next(e.record for e in generate(SEEDED, 1) if e.record.state == records_pb2.RECORD_STATE_ACTIVE)
OTHER = next(iter(generate_elsewhere(ELSEWHERE))).record  # a resident of another prefecture (J-LIS)
MIE_CODE, OTHER_CODE = MIE.resident_code, OTHER.resident_code
# values of the residents the probes ask for: none may appear in any refusal
SECRETS = [
    value
    for r in (MIE, OTHER)
    for value in (r.resident_code, r.my_number, r.four_info.name_kanji, r.four_info.address)
    if value
]


def assert_no_record_data(*parts: Any) -> None:
    blob = b""
    for part in parts:
        if part is None:
            continue
        if isinstance(part, bytes):
            blob += part
        elif isinstance(part, tuple | list):
            for item in part:
                key, value = item if isinstance(item, tuple) else (item.key, item.value)
                blob += key.encode() + (value if isinstance(value, bytes) else str(value).encode())
        else:
            blob += str(part).encode()
    for value in SECRETS:
        assert value.encode() not in blob, "a refusal carries record data"


@dataclass
class Reply:
    code: grpc.StatusCode
    details: str
    response: bytes | None
    initial: Any
    trailing: Any


def _call(channel: grpc.Channel, method: str, method_desc: MethodDescriptor, request: bytes) -> Reply:
    """Any kind of method through a generic call (bytes in, bytes out); a response stream is read to its
    first message, then cancelled."""
    try:
        if method_desc.client_streaming and method_desc.server_streaming:
            responses: Any = channel.stream_stream(method)(iter([request]), timeout=5)
        elif method_desc.server_streaming:
            responses = channel.unary_stream(method)(request, timeout=5)
        else:
            unary: Any = (
                channel.stream_unary(method) if method_desc.client_streaming else channel.unary_unary(method)
            )
            sent = iter([request]) if method_desc.client_streaming else request
            response, call = unary.with_call(sent, timeout=5)
            return Reply(grpc.StatusCode.OK, "", response, call.initial_metadata(), call.trailing_metadata())
        first = next(responses, None)
        initial = responses.initial_metadata()
        responses.cancel()
        return Reply(grpc.StatusCode.OK, "", first, initial, ())
    except grpc.RpcError as error:
        failed: Any = error
        return Reply(
            failed.code(), failed.details() or "", None, failed.initial_metadata(), failed.trailing_metadata()
        )


def _credentials(pki: Pki, material: Material) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert_path.read_bytes(),
        private_key=material.key,
        certificate_chain=material.cert,
    )


def _target(m: Matrix, listener: str) -> str:
    s = m.server.settings
    return {"prefecture": s.prefecture_target, "fuhyo": s.fuhyo_target, "national": s.national_target}[
        listener
    ]


# ---------------------------------------------------------------------------------------------------------
# hostile certificates × listeners

PROBES: dict[str, tuple[str, str, MethodDescriptor, bytes]] = {
    # listener: (claimed identity, data method, its descriptor, a request that would get data)
    "prefecture": (
        "agency/police",
        "/juki.v1.Prefecture/Lookup",
        prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"].methods_by_name["Lookup"],
        prefecture_pb2.LookupRequest(
            resident_code=MIE_CODE, purpose="bt6-police-driving-licence"
        ).SerializeToString(),
    ),
    "fuhyo": (
        "agency/police",
        "/juki.v1.Fuhyo/Lookup",
        fuhyo_pb2.DESCRIPTOR.services_by_name["Fuhyo"].methods_by_name["Lookup"],
        fuhyo_pb2.FuhyoLookupRequest(
            resident_code=MIE_CODE, purpose="bt6-police-driving-licence"
        ).SerializeToString(),
    ),
    "national": (
        "prefectural-server/24",
        "/juki.v1.National/Query",
        national_pb2.DESCRIPTOR.services_by_name["National"].methods_by_name["Query"],
        national_pb2.NationalQueryRequest(
            resident_code=OTHER_CODE, purpose="bt6-police-driving-licence", requester=_uri("agency/police")
        ).SerializeToString(),
    ),
}
PING = prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"].methods_by_name["Ping"]


def _grpc_probe(m: Matrix, listener: str, material: Material) -> tuple[Reply, Reply]:
    """(Ping, the data call) with `material` on a fresh channel."""
    _, method, descriptor, request = PROBES[listener]
    service = {"prefecture": "Prefecture", "fuhyo": "Fuhyo", "national": "National"}[listener]
    with grpc.secure_channel(_target(m, listener), _credentials(m.pki, material)) as channel:
        ping = _call(channel, f"/juki.v1.{service}/Ping", PING, b"")
        data = _call(channel, method, descriptor, request)
    return ping, data


def test_the_genuine_certificates_get_data_on_every_grpc_listener(matrix: Matrix) -> None:
    for listener in GRPC_LISTENERS:
        ping, data = _grpc_probe(matrix, listener, _files(matrix.pki, PROBES[listener][0]))
        assert ping.code == grpc.StatusCode.OK and data.code == grpc.StatusCode.OK, (listener, data.details)
        assert data.response  # a record: what the hostile certificates below must never get


@pytest.mark.parametrize(("case", "listener"), [_marked(c, li) for c in CASES for li in GRPC_LISTENERS])
def test_a_hostile_certificate_gets_no_data_on_a_grpc_listener(
    matrix: Matrix, case: str, listener: str
) -> None:
    expected, build = CASES[case]
    ping, data = _grpc_probe(matrix, listener, build(matrix, PROBES[listener][0]))
    for reply in (ping, data):
        assert_no_record_data(reply.details, reply.initial, reply.trailing)
    assert data.response is None
    if expected == HANDSHAKE:
        assert (ping.code, data.code) == (grpc.StatusCode.UNAVAILABLE,) * 2
    elif expected == IDENTITY:
        allowed = {grpc.StatusCode.UNAUTHENTICATED}
        if case == "CA:TRUE":
            allowed.add(grpc.StatusCode.UNAVAILABLE)  # refusing it at the handshake is as good
        assert ping.code in allowed and data.code in allowed, (ping.code, data.code)
    else:  # SAN_ONLY: the caller is the auditor its URI SAN names, whatever the CN claims
        assert ping.code == grpc.StatusCode.OK
        assert data.code == grpc.StatusCode.PERMISSION_DENIED


def _scrape(m: Matrix, listener: str, material: Material) -> tuple[int | None, bytes]:
    """(HTTP status, body) of GET /metrics with `material`; status None: refused at the handshake."""
    s = m.server.settings
    port = {
        "prefecture-metrics": s.prefecture_metrics_port,
        "fuhyo-metrics": s.fuhyo_metrics_port,
        "national-metrics": s.national_metrics_port,
    }[listener]
    context = ssl.create_default_context(cafile=str(m.pki.ca_cert_path))
    context.check_hostname = False  # the listener's certificate is checked against the CA only
    directory = m.server.settings.home / "scrape"
    directory.mkdir(exist_ok=True)
    if material.cert is not None and material.key is not None:
        cert, key = directory / "peer.crt", directory / "peer.key"
        cert.write_bytes(material.cert)
        key.write_bytes(material.key)
        context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        connection.close()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)


def test_the_monitor_certificate_scrapes_every_metrics_listener(matrix: Matrix) -> None:
    for listener in METRICS_LISTENERS:
        status, body = _scrape(matrix, listener, _files(matrix.pki, "monitor/monitor-01"))
        assert status == 200 and b"juki_" in body, listener


@pytest.mark.parametrize(
    ("case", "listener"),
    [_marked(c, li) for c in CASES if c != "unknown id of a known role" for li in METRICS_LISTENERS],
)
def test_a_hostile_certificate_gets_nothing_on_a_metrics_listener(
    matrix: Matrix, case: str, listener: str
) -> None:
    expected, build = CASES[case]
    status, body = _scrape(matrix, listener, build(matrix, "monitor/monitor-01"))
    if expected == HANDSHAKE:
        assert status is None
    else:
        assert status in (None, 401, 403)
    assert b"juki_" not in body and b"grpc_" not in body
    assert_no_record_data(body)


# ---------------------------------------------------------------------------------------------------------
# every role × every method of every service, against policy.toml

ROLE_IDENTITIES = (
    "municipal-cs/242012",
    "national/jlis",
    "agency/police",
    "agency/education",
    "department/health",
    "department/tax",
    "operator/op-0001",
    "fuhyo-server/24",
    "prefectural-server/24",
    "admin/admin-01",
    "auditor/auditor-01",
    "monitor/monitor-01",
)
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
SERVED: dict[str, tuple[ServiceDescriptor, ...]] = {
    "prefecture": (prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"], ADMIN, HEALTH, REFLECTION),
    "fuhyo": (fuhyo_pb2.DESCRIPTOR.services_by_name["Fuhyo"], ADMIN, HEALTH, REFLECTION),
    "national": (national_pb2.DESCRIPTOR.services_by_name["National"], HEALTH, REFLECTION),
}
METHODS = [
    (listener, service, method)
    for listener, services in SERVED.items()
    for service in services
    for method in service.methods
]
POLICY = Policy.load()


def _takes_purpose(service: ServiceDescriptor, method: MethodDescriptor) -> bool:
    # the Admin service's `purpose` names what an approval is for, not the caller's purpose
    return service is not ADMIN and "purpose" in method.input_type.fields_by_name


def _request(method: MethodDescriptor, purpose: str) -> bytes:
    """A request naming a real resident (so a refusal has something to leak) and the given purpose."""
    message: Any = message_factory.GetMessageClass(method.input_type)()
    fields = method.input_type.fields_by_name
    if "purpose" in fields:
        message.purpose = purpose
    if "resident_code" in fields:
        message.resident_code = MIE_CODE
    if "declared_count" in fields:
        message.declared_count = 1
    if "list_services" in fields:
        message.list_services = ""
    return bytes(message.SerializeToString())


def _known_at(listener: str) -> Any:
    """The identities a listener's server knows (policy.toml [identities], as the server computes them)."""
    if listener.startswith("national"):
        return POLICY.known_identities("24", any_prefecture=True, registry=False)
    return POLICY.known_identities("24")


def _channel(m: Matrix, identity: str, listener: str) -> grpc.Channel:
    key = (identity, listener)
    if key not in m.channels:
        m.channels[key] = grpc.secure_channel(
            _target(m, listener), _credentials(m.pki, _files(m.pki, identity))
        )
    return m.channels[key]


@pytest.mark.parametrize("identity", ROLE_IDENTITIES)
@pytest.mark.parametrize(
    ("listener", "service", "method"),
    METHODS,
    ids=[f"{li}:{s.name}.{me.name}" for li, s, me in METHODS],
)
def test_every_role_gets_what_the_policy_grants_and_nothing_else(
    matrix: Matrix, listener: str, service: ServiceDescriptor, method: MethodDescriptor, identity: str
) -> None:
    caller = SpiffeId.parse(_uri(identity))
    path = f"/{service.full_name}/{method.name}"
    channel = _channel(matrix, identity, listener)
    granted = POLICY.check(caller, path, None) == Decision.ALLOW
    purposes = sorted(POLICY.purposes_of(caller.role, path, caller.id)) if granted else []
    purpose = purposes[0] if purposes else "identity-check"
    reply = _call(channel, path, method, _request(method, purpose))
    assert reply.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), reply.details
    if not _known_at(listener)(caller):  # e.g. an operator at the national server, which has no registry
        assert reply.code == grpc.StatusCode.UNAUTHENTICATED
        assert reply.response is None
        assert_no_record_data(reply.details, reply.initial, reply.trailing)
        return
    if not granted:
        assert (reply.code, reply.details) == (grpc.StatusCode.PERMISSION_DENIED, Decision.NO_METHOD)
        assert reply.response is None
        assert_no_record_data(reply.details, reply.initial, reply.trailing)
        return
    assert reply.code != grpc.StatusCode.UNAUTHENTICATED
    assert not (reply.code == grpc.StatusCode.PERMISSION_DENIED and reply.details in CHAIN_REFUSALS), (
        reply.details
    )
    if _takes_purpose(service, method):  # the same call for a purpose the policy does not grant it
        other = _call(channel, path, method, _request(method, "bt5-health-statistics-not-a-purpose"))
        assert (other.code, other.details) == (grpc.StatusCode.PERMISSION_DENIED, Decision.NO_PURPOSE)
        assert other.response is None
        assert_no_record_data(other.details, other.initial, other.trailing)
