"""Certificate rotation without a restart (SPEC §4.1): a server's own certificate and key, and the CA
bundle, are re-read on SIGHUP or when their files change. Connections open before keep working (a stream
open across the rotation goes on); new connections get the new certificate."""

from __future__ import annotations

import queue
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_reflection.v1alpha import reflection_pb2
from juki.v1 import fuhyo_pb2, prefecture_pb2, prefecture_pb2_grpc, records_pb2

from clients.fuhyo_cmds import fuhyo_stub
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident

POLL_LIMIT = 5.0
SERVER_IDENTITY = ("prefectural-server", "24")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Callable[..., tuple[Pki, Server]]]:
    started: list[Server] = []

    def start(**overrides: Any) -> tuple[Pki, Server]:
        pki = Pki(tmp_path / "pki")
        pki.ensure_dev("juki.mie", DEV_IDENTITIES)
        options: dict[str, Any] = {"seeded": 50, "with_national": False, **overrides}
        server = make_server(tmp_path / "srv", pki.directory, **options)
        server.start()
        started.append(server)
        return pki, server

    yield start
    for server in started:
        server.stop_all()


def credentials(pki: Pki, identity: str, roots: bytes | None = None) -> grpc.ChannelCredentials:
    role, _, ident = identity.partition("/")
    cert, key = pki.cert_paths(role, ident)
    return grpc.ssl_channel_credentials(
        root_certificates=roots or pki.ca_cert_path.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


def served_serial(server: Server, pki: Pki, port: int | None = None) -> int:
    """The serial of the certificate the gRPC port (or another port of the server) presents to a new TLS
    connection."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    context.set_alpn_protocols(["h2"])
    cert, key = pki.cert_paths("monitor", "monitor-01")
    context.load_cert_chain(cert, key)
    host, port = server.settings.host, port or server.settings.prefecture_port
    with (
        socket.create_connection((host, port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + POLL_LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {POLL_LIMIT} s"
        time.sleep(0.05)


class OpenStream:
    """A reflection stream kept open: each `ask()` is answered on the same call (the same connection)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self._responses = call(iter(self._requests.get, None), timeout=60)

    def ask(self) -> set[str]:
        self._requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = next(self._responses)
        return {s.name for s in reply.list_services_response.service}

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._responses:
            pass


def ping(channel: grpc.Channel, calls: int = 20) -> int:
    """Failures among `calls` Pings on one channel."""
    stub: Any = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    failures = 0
    for _ in range(calls):
        try:
            stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
        except grpc.RpcError:
            failures += 1
    return failures


def test_sighup_rotates_the_server_certificate_without_dropping_connections(
    deployment: Callable[..., tuple[Pki, Server]],
) -> None:
    # File checks an hour apart: only the SIGHUP can make the new certificate show in time.
    pki, server = deployment(crl_check_interval=3600.0)
    assert server.proc is not None
    target = server.settings.prefecture_target
    before = pki.cert_paths(*SERVER_IDENTITY)[0]
    old_serial = x509.load_pem_x509_certificate(before.read_bytes()).serial_number
    assert served_serial(server, pki) == old_serial
    with grpc.secure_channel(target, credentials(pki, "agency/police")) as open_channel:
        stream = OpenStream(open_channel)
        assert "juki.v1.Prefecture" in stream.ask()
        assert ping(open_channel) == 0

        # Calls keep going on the open channel all through the rotation.
        done, counts = threading.Event(), {"calls": 0, "failures": 0}

        def keep_calling() -> None:
            while not done.is_set() and counts["calls"] < 10_000:
                counts["failures"] += ping(open_channel, calls=1)
                counts["calls"] += 1

        caller = threading.Thread(target=keep_calling)
        caller.start()
        new = pki.issue(*SERVER_IDENTITY, overwrite=True)
        assert served_serial(server, pki) == old_serial  # control: not before the reload
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served_serial(server, pki) == new.serial)
        assert served_serial(server, pki, server.settings.prefecture_metrics_port) == new.serial
        switched = counts["calls"]
        wait_for(lambda: counts["calls"] >= switched + 50)  # and well after it
        done.set()
        caller.join(timeout=30)
        assert counts["calls"] > 0 and counts["failures"] == 0, counts

        assert "juki.v1.Prefecture" in stream.ask()  # the same call: the connection was not dropped
        assert ping(open_channel) == 0
        stream.close()
        with grpc.secure_channel(target, credentials(pki, "agency/education")) as fresh:
            assert ping(fresh, calls=3) == 0
    assert server.proc.poll() is None


def test_a_changed_certificate_file_is_picked_up_without_a_signal(
    deployment: Callable[..., tuple[Pki, Server]],
) -> None:
    pki, server = deployment()
    new = pki.issue(*SERVER_IDENTITY, overwrite=True)
    wait_for(lambda: served_serial(server, pki) == new.serial)


def test_a_broken_certificate_file_keeps_the_one_in_force(
    deployment: Callable[..., tuple[Pki, Server]],
) -> None:
    pki, server = deployment()
    assert server.proc is not None
    serial = served_serial(server, pki)
    cert, _ = pki.cert_paths(*SERVER_IDENTITY)
    other = pki.issue("national", "jlis", overwrite=True)  # a valid certificate, but not for this key
    cert.write_bytes(other.cert_path.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert served_serial(server, pki) == serial
    assert server.proc.poll() is None


def test_an_overlapping_ca_bundle_admits_the_new_ca_on_sighup(
    deployment: Callable[..., tuple[Pki, Server]], tmp_path: Path
) -> None:
    pki, server = deployment(crl_check_interval=3600.0)
    assert server.proc is not None
    new_ca = Pki(tmp_path / "new-ca")
    new_ca.ensure_dev("juki.mie", [("agency", "police")])
    bundle = pki.ca_cert_path.read_bytes() + new_ca.ca_cert_path.read_bytes()
    target = server.settings.prefecture_target
    with grpc.secure_channel(target, credentials(new_ca, "agency/police", roots=bundle)) as early:
        assert ping(early, calls=1) == 1  # control: the new CA is not trusted yet

    pki.ca_cert_path.write_bytes(bundle)  # old CA first: it still signs the CRL and the server's certificate
    server.proc.send_signal(signal.SIGHUP)

    def new_ca_served() -> bool:
        with grpc.secure_channel(target, credentials(new_ca, "agency/police", roots=bundle)) as channel:
            return ping(channel, calls=1) == 0

    wait_for(new_ca_served)
    with grpc.secure_channel(target, credentials(pki, "agency/police")) as old:
        assert ping(old, calls=3) == 0  # certificates of the old CA go on being served


def test_a_server_whose_certificate_was_replaced_still_reaches_its_peers(
    deployment: Callable[..., tuple[Pki, Server]],
) -> None:
    """`pki issue --overwrite` revokes the replaced certificate, so the channels a server opened to its
    peers must move to the new one: forwarding and the relay to the national server, the restricted link
    from the 附票 server to the prefectural server."""
    pki, server = deployment(with_national=True, with_fuhyo=True)
    other = next(iter(generate_elsewhere(1))).record
    assert forwarded(server, other.resident_code)  # control, and the channels are open now
    linked = next((code for code in fuhyo_codes() if fetched(server, code, "before")), None)

    fuhyo = ("fuhyo-server", "24")
    old = {identity: pem_pair(pki, identity) for identity in (SERVER_IDENTITY, fuhyo)}
    for identity in old:
        pki.issue(*identity, overwrite=True)  # the old certificate is on the CRL from now on
    # the peers refuse the old certificates now (so whatever still presents one is refused too) …
    wait_for(lambda: refused_with(pki, old[SERVER_IDENTITY], server.settings.national_target, "National"))
    wait_for(lambda: refused_with(pki, old[fuhyo], server.settings.prefecture_target, "Prefecture"))

    # … and the servers have moved on to their new ones
    wait_for(lambda: forwarded(server, other.resident_code))
    town = Municipality("242012")
    code, number = fresh_resident()
    notice = town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number)
    server.stub("municipal-cs/242012").ApplyUpdate(
        prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10
    )
    wait_for(lambda: national_holds(server, code))
    if linked is not None:
        wait_for(lambda: fetched(server, linked, "after"))


def pem_pair(pki: Pki, identity: tuple[str, str]) -> tuple[bytes, bytes]:
    cert, key = pki.cert_paths(*identity)
    return cert.read_bytes(), key.read_bytes()


def refused_with(pki: Pki, pair: tuple[bytes, bytes], target: str, service: str) -> bool:
    """Whether the server at `target` refuses its Ping to this certificate (UNAUTHENTICATED)."""
    cert, key = pair
    creds = grpc.ssl_channel_credentials(pki.ca_cert_path.read_bytes(), key, cert)
    with grpc.secure_channel(target, creds) as channel:
        try:
            channel.unary_unary(f"/juki.v1.{service}/Ping")(b"", timeout=5)
        except grpc.RpcError as error:
            return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
    return False


def forwarded(server: Server, resident_code: str) -> bool:
    request = prefecture_pb2.ProvideRequest(purpose="bt5-tax-vehicle", resident_code=resident_code)
    try:
        answer = server.stub("department/tax").Provide(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # the national server refused the peer
        return False
    return bool(answer.source == prefecture_pb2.RECORD_SOURCE_NATIONAL)


def national_holds(server: Server, resident_code: str) -> bool:
    store = server.open_national_reader()
    try:
        with store.reader() as tx:
            return tx.get(resident_code) is not None
    finally:
        store.env.close()


def fuhyo_codes() -> list[str]:
    return [record.resident_code for record in generate_fuhyo(50, 1)][:10]


def fetched(server: Server, code: str, tag: str) -> bool:
    """Whether the 附票 server obtained a My Number over the restricted link for this person."""
    request = fuhyo_pb2.FuhyoProvideRequest(
        resident_code=code,
        purpose="bt6-police-driving-licence",
        include_my_number=True,
        request_id=f"rotation-{tag}-{code}-{time.monotonic_ns()}",
    )
    try:
        answer = fuhyo_stub(server.settings, "agency/police").Provide(request, timeout=10)
    except grpc.RpcError:
        return False
    return bool(answer.my_number)
