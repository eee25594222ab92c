"""Issue 12 item 10: the 附票→prefecture and prefecture→national calls get the caller's remaining deadline,
capped (`link_timeout_max`), not a fixed timeout.

A peer process is frozen (SIGSTOP) for longer than the old fixed timeout and thawed within the caller's
deadline: the caller gets its answer. With the cap below the caller's deadline, the cap applies.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import fuhyo_pb2, prefecture_pb2

from clients.fuhyo_cmds import fuhyo_stub
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo
from server.seed.population import generate
from tests.conftest import SEEDED, Server, make_server

P = prefecture_pb2
POLICE = ("agency/police", "bt6-police-driving-licence")
OLD_FIXED_TIMEOUT = 1.0  # the fixed timeout the links used (5 s by default), short here


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("deadlines"), pki_dir, with_fuhyo=True, national_timeout=OLD_FIXED_TIMEOUT
    )
    srv.start()
    yield srv
    srv.stop_all()


def _frozen_for(proc: Any, seconds: float) -> threading.Thread:
    """Stop a server process now and let it go on after `seconds` (in a thread)."""
    os.kill(proc.pid, signal.SIGSTOP)

    def thaw() -> None:
        time.sleep(seconds)
        os.kill(proc.pid, signal.SIGCONT)

    thread = threading.Thread(target=thaw)
    thread.start()
    return thread


def test_a_forwarded_lookup_waits_for_the_national_server_within_the_callers_deadline(
    deployment: Server,
) -> None:
    person = next(iter(generate_elsewhere(5))).record
    stub = deployment.stub(POLICE[0])
    request = P.LookupRequest(purpose=POLICE[1], resident_code=person.resident_code)
    assert stub.Lookup(request, timeout=10).source == P.RECORD_SOURCE_NATIONAL  # connected, warm
    thread = _frozen_for(deployment.national_proc, 2.5 * OLD_FIXED_TIMEOUT)
    try:
        answer = stub.Lookup(request, timeout=15)
    finally:
        thread.join()
    assert answer.record.resident_code == person.resident_code


def test_the_my_number_link_waits_for_the_prefectural_server_within_the_callers_deadline(
    deployment: Server,
) -> None:
    abroad = [r for r in generate_fuhyo(SEEDED, 1) if r.state_kind == 2]
    numbers = {e.record.resident_code: e.record.my_number for e in generate(SEEDED, 1)}
    stub = fuhyo_stub(deployment.settings, POLICE[0])

    def provide(person: Any, request_id: str, timeout: float) -> Any:
        request = fuhyo_pb2.FuhyoProvideRequest(
            resident_code=person.resident_code,
            purpose=POLICE[1],
            include_my_number=True,
            request_id=request_id,
        )
        return stub.Provide(request, timeout=timeout)

    assert provide(abroad[0], "deadline-1", 10).my_number  # connected, warm
    thread = _frozen_for(deployment.proc, 2.5 * OLD_FIXED_TIMEOUT)
    try:
        answer = provide(abroad[1], "deadline-2", 15)
    finally:
        thread.join()
    assert answer.my_number == numbers[abroad[1].resident_code]


def test_the_cap_applies_when_the_callers_deadline_is_longer(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(tmp_path / "srv", pki_dir, seeded=20, link_timeout_max=0.5)
    srv.start()
    try:
        person = next(iter(generate_elsewhere(5))).record
        stub = srv.stub(POLICE[0])
        request = P.LookupRequest(purpose=POLICE[1], resident_code=person.resident_code)
        stub.Lookup(request, timeout=10)
        thread = _frozen_for(srv.national_proc, 2.0)
        try:
            with pytest.raises(grpc.RpcError) as info:
                stub.Lookup(request, timeout=10)
        finally:
            thread.join()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # at the cap, not at the caller's 10 s
    finally:
        srv.stop_all()
