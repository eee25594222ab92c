"""/metrics: HTTPS with the monitor's client certificate only; no personal data in what it shows."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

import pytest

from server.identity.pki import Pki
from tests.conftest import Server


def scrape(server: Server, identity: str | None, port: int | None = None) -> tuple[int, str]:
    pki = Pki(server.settings.pki_path)
    context = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    if identity is not None:
        role, _, ident = identity.partition("/")
        cert, key = pki.cert_paths(role, ident)
        context.load_cert_chain(cert, key)
    target = port or server.settings.prefecture_metrics_port
    connection = http.client.HTTPSConnection("127.0.0.1", target, context=context, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_the_monitor_scrapes_the_outbox_metrics(server: Server) -> None:
    status, text = scrape(server, "monitor/monitor-01")
    assert status == 200
    for name in ("juki_outbox_depth", "juki_outbox_oldest_age_seconds", "juki_relay_attempts_total"):
        assert name in text


def test_the_national_server_has_its_own_endpoint(server: Server) -> None:
    status, text = scrape(server, "monitor/monitor-01", server.settings.national_metrics_port)
    assert status == 200 and "python_info" in text


@pytest.mark.parametrize("identity", ["agency/police", "operator/op-0001", "admin/admin-01"])
def test_other_identities_get_nothing(server: Server, identity: str) -> None:
    status, text = scrape(server, identity)
    assert status == 403 and "juki_" not in text


def test_an_unknown_monitor_id_gets_nothing(server: Server) -> None:
    """A monitor certificate of the CA, but an id policy.toml [identities] does not list."""
    Pki(server.settings.pki_path).issue("monitor", "monitor-unlisted", overwrite=True)
    status, text = scrape(server, "monitor/monitor-unlisted")
    assert status == 403 and "juki_" not in text


def test_no_client_certificate_fails_the_handshake(server: Server) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        scrape(server, None)


def test_metrics_carry_no_personal_data(server: Server, seeded_records: list[Any]) -> None:
    _, text = scrape(server, "monitor/monitor-01")
    for record in seeded_records[:300]:
        assert record.resident_code not in text and record.my_number not in text
        assert record.four_info.name_kanji not in text


def test_idle_connections_do_not_block_a_scrape(server: Server) -> None:
    """Connections that never start TLS (no certificate, no byte) hold nothing up: the monitor's scrape is
    served while they stay open (the scrape's own socket timeout bounds the wait)."""
    port = server.settings.prefecture_metrics_port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        status, text = scrape(server, "monitor/monitor-01")
        assert status == 200 and "juki_outbox_depth" in text
        # and a half-done handshake (the ClientHello's first bytes, then silence) holds up nothing either
        idle[0].sendall(b"\x16\x03\x01\x00")
        assert scrape(server, "monitor/monitor-01")[0] == 200
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_connection_is_closed_by_the_server(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.settings.prefecture_metrics_port)) as sock:
        sock.settimeout(30)  # the server's handshake deadline is a few seconds; this only bounds the test
        assert sock.recv(1) == b""


def _tls12_context(server: Server, ciphers: str) -> ssl.SSLContext:
    pki = Pki(server.settings.pki_path)
    context = ssl.create_default_context(cafile=str(pki.ca_cert_path))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    cert, key = pki.cert_paths("monitor", "monitor-01")
    context.load_cert_chain(cert, key)
    return context


def _handshake(server: Server, context: ssl.SSLContext) -> str | None:
    """The suite agreed with the metrics port, None when the handshake fails."""
    port = server.settings.prefecture_metrics_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                cipher = tls.cipher()
                return cipher[0] if cipher else None
        except (ssl.SSLError, ConnectionError):
            return None


def test_metrics_port_speaks_tls12_with_aead_suites_only(server: Server) -> None:
    agreed = _handshake(server, _tls12_context(server, "ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert agreed == "ECDHE-ECDSA-AES128-GCM-SHA256"  # control
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        assert _handshake(server, _tls12_context(server, f"{cbc}:@SECLEVEL=0")) is None, cbc
