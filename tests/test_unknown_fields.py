"""SPEC §4.2: unknown protobuf fields never reach a store, the outbox, J-LIS or a backup (issue 12 item 1).

A change notice carries a My Number in unknown fields at every depth (the request, the notice, its 4情報,
the 附票 record). The chain discards them when it decodes a request; the store drops them again before it
writes a record or queues a change (defence in depth). The number is then nowhere on disk in clear: not in
any file of the deployment (stores of the three servers, audit trails, logs) and not in a backup restored.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from juki.v1 import fuhyo_pb2, national_pb2, prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident, my_number

SMUGGLED = my_number(990_001)  # a My Number that only ever travels in unknown fields
MUNICIPALITY = "242012"


def unknown(number: int, text: str) -> bytes:
    """One length-delimited field of a number no message of juki.v1 defines."""
    data = text.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def smuggling_notice(notice: prefecture_pb2.ChangeNotice) -> bytes:
    """An ApplyUpdateRequest whose request, notice and 4情報 each carry the smuggled number (field 6 is
    ChangeNotice.four_info, field 1 ApplyUpdateRequest.notice: a repeated singular message merges)."""
    info = field(6, notice.four_info.SerializeToString() + unknown(901, SMUGGLED))
    inner = notice.SerializeToString() + unknown(902, SMUGGLED) + info
    return field(1, inner) + unknown(903, "my_number=" + SMUGGLED)


def smuggling_fuhyo_notice(notice: fuhyo_pb2.FuhyoNotice) -> bytes:
    record = field(5, notice.record.SerializeToString() + unknown(904, SMUGGLED))  # FuhyoNotice.record
    return field(1, notice.SerializeToString() + unknown(905, SMUGGLED) + record) + unknown(906, SMUGGLED)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("unknown"), pki_dir, seeded=300, elsewhere=20, with_fuhyo=True)
    srv.start()
    yield srv
    srv.stop_all()


def raw_call(server: Server, target: str, identity: str, method: str) -> Callable[..., Any]:
    channel = secure_channel(Pki(server.settings.pki_path), identity, target)
    server._channels.append(channel)
    return channel.unary_unary(method)


def last_sequence(server: Server) -> int:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.last_sequence(MUNICIPALITY)
    finally:
        store.env.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def files_holding(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def national_holds(server: Server, code: str) -> bool:
    store = server.open_national_reader()
    try:
        with store.reader() as tx:
            return tx.get(code) is not None
    finally:
        store.env.close()


def test_a_my_number_in_unknown_fields_is_nowhere_on_disk(deployment: Server, tmp_path: Path) -> None:
    srv = deployment
    town = Municipality(MUNICIPALITY, start=last_sequence(srv) + 1)
    code, number = fresh_resident()
    unary = town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2020-01-02")
    answer = raw_call(srv, srv.settings.prefecture_target, f"municipal-cs/{MUNICIPALITY}",
                      "/juki.v1.Prefecture/ApplyUpdate")(smuggling_notice(unary), timeout=10)  # fmt: skip
    assert prefecture_pb2.ApplyUpdateResponse.FromString(answer).result.sequence == unary.sequence

    streamed_code, streamed_number = fresh_resident()
    streamed = town.notice(streamed_code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=streamed_number)
    channel = secure_channel(Pki(srv.settings.pki_path), f"municipal-cs/{MUNICIPALITY}",
                             srv.settings.prefecture_target)  # fmt: skip
    srv._channels.append(channel)
    stream: Any = channel.stream_unary("/juki.v1.Prefecture/ApplyUpdates")
    done = prefecture_pb2.ApplyUpdatesResponse.FromString(
        stream(iter([smuggling_notice(streamed)]), timeout=10)
    )
    assert done.last_applied_sequence == streamed.sequence

    fuhyo_code, _ = fresh_resident()
    fuhyo_notice = fuhyo_pb2.FuhyoNotice(
        managing_municipality_code=MUNICIPALITY, sequence=1, kind=fuhyo_pb2.FUHYO_CHANGE_KIND_CREATE,
        change_date="2024-01-01",
        record=records_pb2.FuhyoRecord(
            resident_code=fuhyo_code, name_kanji="附票　花子", name_kana="フヒョウ　ハナコ",
            birth_date="1980-01-01", sex=records_pb2.SEX_FEMALE, address="三重県津市広明町13番地",
            managing_municipality_code=MUNICIPALITY, state_kind=1,
        ),
    )  # fmt: skip
    raw_call(srv, srv.settings.fuhyo_target, f"municipal-cs/{MUNICIPALITY}", "/juki.v1.Fuhyo/ApplyUpdate")(
        smuggling_fuhyo_notice(fuhyo_notice), timeout=10
    )

    # J-LIS received both changes (through the outbox and the relay) …
    wait_until(lambda: national_holds(srv, code) and national_holds(srv, streamed_code), "propagation")
    # … and the number is in no file of the deployment: stores, outbox, audit trails, logs.
    assert files_holding(srv.settings.home, SMUGGLED.encode()) == []

    # … nor in a backup of the three stores, restored.
    s = srv.settings
    sources = {
        "prefecture": s.data_path,
        "national": s.path(s.national_data_dir),
        "fuhyo": s.path(s.fuhyo_data_dir),
    }
    script = (
        "import json, pathlib, sys\n"
        "from server.backup import create_backup, restore_backup\n"
        "sources = {k: pathlib.Path(v) for k, v in json.loads(sys.argv[1]).items()}\n"
        "archive, key = pathlib.Path(sys.argv[2]), bytes(range(32))\n"
        "create_backup(sources, archive, key)\n"
        "restore_backup(archive, key, pathlib.Path(sys.argv[3]))\n"
    )
    archive, restored = tmp_path / "backup.jbk", tmp_path / "restored"
    subprocess.run(
        [sys.executable, "-c", script, json.dumps({k: str(v) for k, v in sources.items()}), str(archive),
         str(restored)],
        check=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert sorted(p.name for p in restored.iterdir()) == ["fuhyo", "national", "prefecture"]
    assert files_holding(restored, SMUGGLED.encode()) == []


# --- the store's own defence (behind the chain) ----------------------------------------------------------


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ResidentStore]:
    keys = DataKeys.load_or_create(tmp_path / "keys" / "data.keys")
    env = LmdbEnv(tmp_path / "data", DB_NAMES)
    yield ResidentStore(env, MyNumberSealer(keys))
    env.close()


def with_unknown(message: Message) -> Message:
    message.MergeFromString(unknown(907, SMUGGLED))
    return message


def test_the_store_drops_unknown_fields_of_records_and_outbox_changes(store: ResidentStore) -> None:
    code, number = fresh_resident()
    record = records_pb2.ResidentRecord(resident_code=code, municipality_code=MUNICIPALITY)
    record.four_info.CopyFrom(
        records_pb2.FourInfo(
            name_kanji="三重　太郎",
            name_kana="ミエ　タロウ",
            birth_date="1990-01-01",
            sex=records_pb2.SEX_MALE,
            address="三重県津市",
        )
    )
    with_unknown(record.four_info)
    with_unknown(record)
    notice = prefecture_pb2.ChangeNotice(municipality_code=MUNICIPALITY, sequence=1, resident_code=code)
    change = with_unknown(national_pb2.PropagatedChange(notice=with_unknown(notice)))

    def work(tx: Any) -> None:
        tx.put_record(record, number)
        tx.enqueue_outbox(change.SerializeToString(), 0)  # as bytes …
        tx.enqueue_outbox(change, 0)  # … or as a message

    store.apply_sync(work)
    with store.reader() as tx:
        payloads = [payload for _, payload in tx.outbox_batch(10)]
    with store.env.read() as txn:  # the bytes at rest
        raw = txn.get(code.encode(), db=store.env.dbs["records"])
        held = None if raw is None else bytes(raw)
    assert held is not None and SMUGGLED.encode() not in held
    assert len(payloads) == 2
    for payload in payloads:
        assert SMUGGLED.encode() not in payload
        assert national_pb2.PropagatedChange.FromString(payload).notice.resident_code == code
