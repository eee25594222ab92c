"""/metrics: HTTPS with the monitor's client certificate only; no personal data in what it shows."""

from __future__ import annotations

import http.client
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


def test_no_client_certificate_fails_the_handshake(server: Server) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        scrape(server, None)


def test_metrics_carry_no_personal_data(server: Server, seeded_records: list[Any]) -> None:
    _, text = scrape(server, "monitor/monitor-01")
    for record in seeded_records[:300]:
        assert record.resident_code not in text and record.my_number not in text
        assert record.four_info.name_kanji not in text
