"""SPEC §4.3, §6.1, §10: the resident store on real LMDB files.

My Number sealed at rest and bound to its record, keys outside the data directory, a map that grows by
itself, stale reader slots of killed processes cleared at start, and history kept on every change.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.exceptions import InvalidTag
from juki.v1 import prefecture_pb2, records_pb2

from server.app import open_store
from server.domain.codes import my_number_check_digit
from server.domain.errors import DomainError
from server.domain.reconcile import record_digest
from server.domain.updates import apply_notice, validate_notice
from server.seed.load import load
from server.seed.population import SeedEntry, generate
from server.settings import Settings
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore, ResidentTxn
from server.storage.sealing import DataKeys, MyNumberSealer

SEEDED = 3000
CHECKED = 400  # seeded residents whose My Number is looked for in the raw files
JST = dt.timezone(dt.timedelta(hours=9), "JST")
NOW = dt.datetime(2025, 6, 2, 10, 0, tzinfo=JST)
TODAY = NOW.date()
MUNICIPALITY = "242012"
VALID_MY_NUMBER = "983205673214"


def my_number_for(first11: str) -> str:
    return first11 + str(my_number_check_digit(first11))


def raw_files(directory: Path) -> bytes:
    """Every byte of every file of a directory (data.mdb and lock.mdb for an LMDB environment)."""
    return b"".join(path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file())


def databases_holding(store: ResidentStore, needle: bytes) -> list[str]:
    """Names of the named databases with a key or value containing `needle` as plain bytes."""
    found = []
    with store.env.read() as txn:
        for name, db in store.env.dbs.items():
            with txn.cursor(db=db) as cursor:
                if any(needle in bytes(key) or needle in bytes(value) for key, value in cursor):
                    found.append(name)
    return found


@dataclass
class Seeded:
    settings: Settings
    store: ResidentStore
    entries: list[SeedEntry]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    settings = Settings(home=tmp_path_factory.mktemp("store"))
    store = open_store(settings)
    entries = list(generate(SEEDED, 1))
    load(store, entries)
    yield Seeded(settings, store, entries)
    store.env.close()


# --- My Number at rest (SPEC §4.3) -----------------------------------------------------------------------


def test_my_number_is_not_in_the_data_files_in_clear(seeded: Seeded) -> None:
    raw = raw_files(seeded.settings.data_path)
    checked = seeded.entries[:CHECKED]
    # The control: what is stored in clear (resident code, name) is found by the same byte search.
    for entry in checked[:20]:
        assert entry.record.resident_code.encode() in raw
        assert entry.record.four_info.name_kanji.encode() in raw
    numbers = [e.record.my_number for e in checked] + [h.my_number for e in checked for h in e.history]
    assert len(numbers) > CHECKED
    leaked = [n for n in numbers if n.encode() in raw]
    assert leaked == []


def test_the_store_opens_every_sealed_my_number(seeded: Seeded) -> None:
    with seeded.store.reader() as tx:
        for entry in seeded.entries[:CHECKED]:
            code = entry.record.resident_code
            assert tx.my_number(code) == entry.record.my_number
            assert tx.code_by_my_number(entry.record.my_number) == code
            assert [v.my_number for v in tx.history(code)] == [h.my_number for h in entry.history]
            stored = tx.get(code)
            assert stored is not None and stored.my_number == ""  # the record itself carries none


def test_key_file_is_outside_the_data_directory_and_private(seeded: Seeded) -> None:
    keys_path = seeded.settings.keys_path.resolve()
    data_path = seeded.settings.data_path.resolve()
    assert keys_path.is_file()
    assert not keys_path.is_relative_to(data_path)
    assert not any(p.resolve() == keys_path for p in data_path.rglob("*"))
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_path.parent.stat().st_mode) & 0o077 == 0
    keys = DataKeys.load(keys_path)
    raw = raw_files(data_path)
    for key in (keys.my_number_key, keys.my_number_index_key):
        assert key not in raw
        assert base64.b64encode(key) not in raw


def test_sealed_my_number_is_bound_to_its_resident_code(seeded: Seeded) -> None:
    sealer = seeded.store.sealer
    sealed = sealer.seal("12345678901", VALID_MY_NUMBER)
    assert sealer.open("12345678901", sealed) == VALID_MY_NUMBER
    assert VALID_MY_NUMBER.encode() not in sealed
    assert sealer.seal("12345678901", VALID_MY_NUMBER) != sealed  # a fresh nonce every time
    with pytest.raises(InvalidTag):
        sealer.open("12345678902", sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(InvalidTag):
        sealer.open("12345678901", tampered)
    with pytest.raises(InvalidTag):
        MyNumberSealer(DataKeys.generate()).open("12345678901", sealed)


class Rollback(Exception):
    pass


def test_sealed_value_moved_to_another_record_does_not_open(seeded: Seeded) -> None:
    store = seeded.store
    first, second = (e.record.resident_code for e in seeded.entries[:2])
    numbers = store.env.dbs["my_numbers"]
    with pytest.raises(Rollback), store.env.env.begin(write=True) as txn:
        txn.put(second.encode(), bytes(txn.get(first.encode(), db=numbers)), db=numbers)
        with pytest.raises(InvalidTag):
            ResidentTxn(store, txn).my_number(second)
        raise Rollback  # leave the shared store as it was
    with store.reader() as tx:
        assert tx.my_number(second) == seeded.entries[1].record.my_number


# --- map growth (SPEC §10) -------------------------------------------------------------------------------


def test_a_tiny_map_grows_by_itself(tmp_path: Path) -> None:
    tiny = 64 * 1024
    settings = Settings(home=tmp_path, map_size=tiny)
    store = open_store(settings)
    try:
        assert store.env.map_use()[1] == tiny
        report = load(store, generate(SEEDED, 1))
        used, size = store.env.map_use()
        assert report.records == SEEDED
        assert size > tiny
        assert used <= size
        with store.reader() as tx:
            assert tx.count("records") == SEEDED
    finally:
        store.env.close()
    # Reopened with the same tiny setting, the environment takes the size its data needs.
    reopened = open_store(settings)
    try:
        assert reopened.env.map_use()[1] >= used
        with reopened.reader() as tx:
            assert tx.count("records") == SEEDED
    finally:
        reopened.env.close()


# --- stale reader slots ----------------------------------------------------------------------------------

LMDB_OPEN = "env = lmdb.open(sys.argv[1], max_dbs=16, max_readers=1024, subdir=True)"
# Holds the environment open (no transaction) and reports its reader table on request.
HOLDER = textwrap.dedent(
    f"""
    import sys, lmdb
    {LMDB_OPEN}
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "readers":
            break
        print(env.readers().replace("\\n", "|"), flush=True)
    env.close()
    """
)
# Opens the environment, begins a read transaction and waits to be killed.
READER = textwrap.dedent(
    f"""
    import os, sys, time, lmdb
    {LMDB_OPEN}
    txn = env.begin()
    print(os.getpid(), flush=True)
    time.sleep(120)
    """
)


def reader_pids(table: str) -> set[int]:
    """Process ids of LMDB's reader table as `Environment.readers()` prints it."""
    pids = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].isdigit():
            pids.add(int(fields[0]))
    return pids


def spawn(script: str, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline().strip()


def killed_reader(path: Path) -> int:
    """The pid of a process that held a read transaction on `path` when it was SIGKILLed."""
    proc = spawn(READER, path)
    try:
        pid = int(read_line(proc.stdout))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return pid


@pytest.fixture
def env_path(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    LmdbEnv(path, DB_NAMES).close()  # the environment exists, with its named databases, and is closed
    return path


def holder_readers(holder: subprocess.Popen[str]) -> set[int]:
    assert holder.stdin is not None
    holder.stdin.write("readers\n")
    holder.stdin.flush()
    return reader_pids(read_line(holder.stdout).replace("|", "\n"))


def test_stale_reader_slot_is_cleared_at_start_while_another_process_holds_the_env(
    env_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The case reader_check exists for: a server restarted while another process (a backup, an admin
    tool, the read-only reader of a test) keeps the environment open, so LMDB does not reset the table."""
    holder = spawn(HOLDER, env_path)
    try:
        assert read_line(holder.stdout) == "ready"
        dead = killed_reader(env_path)
        assert dead in holder_readers(holder)  # the dead process still occupies a slot

        with caplog.at_level(logging.INFO, logger="server.storage.lmdbenv"):
            env = LmdbEnv(env_path, DB_NAMES)
        try:
            cleared = [r for r in caplog.records if r.getMessage() == "cleared stale LMDB reader slots"]
            assert len(cleared) == 1
            count: Any = cleared[0].__dict__["count"]
            assert count >= 1
            assert dead not in reader_pids(env.env.readers())
            assert dead not in holder_readers(holder)
            with env.read() as txn:  # and reading works as usual
                assert txn.stat(env.dbs["records"])["entries"] == 0
        finally:
            env.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("quit\n")
        holder.stdin.close()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_stale_reader_slot_is_gone_after_a_restart_alone(env_path: Path) -> None:
    """When no other process has the environment open, LMDB itself resets the reader table on open, so
    there is nothing left for reader_check to clear: what is observable is only that the slot is gone."""
    dead = killed_reader(env_path)
    env = LmdbEnv(env_path, DB_NAMES)
    try:
        assert dead not in reader_pids(env.env.readers())
        assert env.env.reader_check() == 0
    finally:
        env.close()


# --- history (SPEC §6.1) ---------------------------------------------------------------------------------


def apply(store: ResidentStore, notice: prefecture_pb2.ChangeNotice) -> None:
    validate_notice(notice, today=TODAY)
    applied = store.apply_sync(
        lambda tx: apply_notice(tx, notice, caller_municipality=MUNICIPALITY, now=lambda: NOW)
    )
    assert not applied.replayed


def creation(sequence: int, resident_code: str, my_number: str, address: str) -> prefecture_pb2.ChangeNotice:
    return prefecture_pb2.ChangeNotice(
        municipality_code=MUNICIPALITY,
        sequence=sequence,
        resident_code=resident_code,
        change_reason=records_pb2.CHANGE_REASON_SHUSSEI,
        change_date="2020-01-02",
        four_info=records_pb2.FourInfo(
            name_kanji="三重　花子",
            name_kana="ミエ　ハナコ",
            birth_date="2020-01-02",
            sex=records_pb2.SEX_FEMALE,
            address=address,
        ),
        my_number=my_number,
        oaza_code="1001",
        timestamp="2020-01-03T09:30:00+09:00",
    )


def followed_by(
    notice: prefecture_pb2.ChangeNotice,
    reason: records_pb2.ChangeReason,
    change_date: str,
    **changes: str,
) -> prefecture_pb2.ChangeNotice:
    nxt = prefecture_pb2.ChangeNotice()
    nxt.CopyFrom(notice)
    nxt.sequence = notice.sequence + 1
    nxt.change_reason = reason
    nxt.change_date = change_date
    for name, value in changes.items():
        if name == "address":
            nxt.four_info.address = value
        else:
            setattr(nxt, name, value)
    return nxt


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResidentStore]:
    opened = open_store(Settings(home=tmp_path))
    yield opened
    opened.env.close()


def test_tenkyo_keeps_the_previous_version_with_its_address_and_my_number(store: ResidentStore) -> None:
    code = "90000000001"
    old_number, new_number = VALID_MY_NUMBER, my_number_for("12345678901")
    old_address, new_address = "三重県津市広明町13番地", "三重県津市丸之内1番1号"
    created = creation(1, code, old_number, old_address)
    renumbered = followed_by(
        created, records_pb2.CHANGE_REASON_KOJIN_BANGO_HENKO, "2021-04-01", my_number=new_number
    )
    moved = followed_by(
        renumbered, records_pb2.CHANGE_REASON_TENKYO, "2024-07-08", address=new_address, oaza_code="1002"
    )
    for notice in (created, renumbered, moved):
        apply(store, notice)

    with store.reader() as tx:
        current = tx.get(code)
        assert current is not None
        assert (current.four_info.address, current.oaza_code, current.sequence) == (new_address, "1002", 3)
        assert current.change_reason == records_pb2.CHANGE_REASON_TENKYO
        assert tx.my_number(code) == new_number
        history = tx.history(code)
        assert [(v.record.four_info.address, v.my_number, v.record.sequence) for v in history] == [
            (old_address, old_number, 1),
            (old_address, new_number, 2),
        ]
        assert [v.record.change_reason for v in history] == [
            records_pb2.CHANGE_REASON_SHUSSEI,
            records_pb2.CHANGE_REASON_KOJIN_BANGO_HENKO,
        ]
        assert history[-1].record.change_date == "2021-04-01"
        assert all(v.record.my_number == "" for v in history)  # the number is only in the sealed part
        assert tx.code_by_my_number(old_number) is None
        assert tx.code_by_my_number(new_number) == code
        assert tx.last_sequence(MUNICIPALITY) == 3
    # The history's copies of the two numbers are sealed too.
    for number in (old_number, new_number):
        assert "history" not in databases_holding(store, number.encode())


def test_tenkyo_of_a_seeded_resident_adds_one_history_version(store: ResidentStore) -> None:
    entries = list(generate(300, 1))
    load(store, entries)
    entry = next(
        e
        for e in entries
        if e.record.municipality_code == MUNICIPALITY and e.record.state == records_pb2.RECORD_STATE_ACTIVE
    )
    record = entry.record
    notice = prefecture_pb2.ChangeNotice(
        municipality_code=MUNICIPALITY,
        sequence=1,
        resident_code=record.resident_code,
        change_reason=records_pb2.CHANGE_REASON_TENKYO,
        change_date="2025-05-01",
        four_info=record.four_info,
        my_number=record.my_number,
        name_gaiji_count=record.name_gaiji_count,
        address_gaiji_count=record.address_gaiji_count,
        name_gaiji_change_seq=record.name_gaiji_change_seq,
        address_gaiji_change_seq=record.address_gaiji_change_seq,
        oaza_code=record.oaza_code,
        timestamp="2025-05-01T10:00:00+09:00",
    )
    if record.HasField("former_surname"):
        notice.former_surname.CopyFrom(record.former_surname)
    notice.four_info.address = "三重県津市西丸之内23番1号"
    apply(store, notice)

    with store.reader() as tx:
        history = tx.history(record.resident_code)
        assert len(history) == len(entry.history) + 1
        previous = history[-1]
        assert previous.record.four_info.address == record.four_info.address
        assert previous.my_number == record.my_number
        assert previous.record.change_reason == record.change_reason
        current = tx.get(record.resident_code)
        assert current is not None and current.four_info.address == "三重県津市西丸之内23番1号"
        assert tx.my_number(record.resident_code) == record.my_number


# Regression: the outbox entry of an applied notice carries its My Number, so it is sealed too (SPEC §4.3).
def test_applied_notice_leaves_no_my_number_in_clear(store: ResidentStore) -> None:
    number = VALID_MY_NUMBER
    apply(store, creation(1, "90000000001", number, "三重県津市広明町13番地"))
    with store.reader() as tx:
        assert tx.my_number("90000000001") == number
    assert databases_holding(store, number.encode()) == []
    assert number.encode() not in raw_files(store.env.path)


# --- schema 1 → 2: no plain digest over a My Number is kept ------------------------------------------------


def _plain_notice_digest(notice: prefecture_pb2.ChangeNotice) -> bytes:
    """Schema 1's (server.domain.updates.notice_digest before keying)."""
    return hashlib.sha256(notice.SerializeToString(deterministic=True)).digest()


def _as_schema_1(store: ResidentStore, notices: list[prefecture_pb2.ChangeNotice]) -> None:
    """Rewrite a store as the old code left it: plain record digests in idx_municipality, plain notice
    digests in applied, schema version 1."""

    def rewrite(txn: Any) -> None:
        tx, dbs = ResidentTxn(store, txn), store.env.dbs
        for key in [bytes(k) for k in txn.cursor(db=dbs["idx_municipality"]).iternext(values=False)]:
            code = key[6:].decode()
            record = tx.get(code)
            assert record is not None
            txn.put(key, record_digest(record, tx.my_number(code)), db=dbs["idx_municipality"])
        for notice in notices:
            key = notice.municipality_code.encode() + notice.sequence.to_bytes(8, "big")
            value = bytes(txn.get(key, db=dbs["applied"]))
            txn.put(key, _plain_notice_digest(notice) + value[32:], db=dbs["applied"])
        txn.put(b"schema_version", b"1", db=dbs["meta"])

    store.env.write_sync(rewrite)


def test_a_schema_1_store_is_migrated_on_open_to_keyed_digests(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = open_store(settings)
    load(store, generate(200, 3))
    first = creation(1, "90000000001", VALID_MY_NUMBER, "三重県津市広明町13番地")
    second = followed_by(
        first, records_pb2.CHANGE_REASON_TENKYO, "2021-05-01", address="三重県津市西丸之内1番"
    )
    for notice in (first, second):
        apply(store, notice)
    with store.reader() as tx:
        digests_before = dict(tx.municipality_digests(MUNICIPALITY))
    _as_schema_1(store, [first, second])
    store.env.close()

    store = open_store(settings)  # migrates
    try:
        dbs = store.env.dbs
        with store.env.read() as txn:
            assert bytes(txn.get(b"schema_version", db=dbs["meta"])) == b"3"  # and on to 3
            assert {bytes(v) for _, v in txn.cursor(db=dbs["idx_municipality"])} == {b""}
            assert txn.stat(dbs["idx_municipality"])["entries"] == 200 + 1
        with store.reader() as tx:
            for notice in (first, second):
                held = tx.applied(MUNICIPALITY, notice.sequence)
                assert held is not None
                plain = _plain_notice_digest(notice)
                assert held[0] == store.sealer.keyed_digest(plain) != plain
            assert dict(tx.municipality_digests(MUNICIPALITY)) == digests_before  # 整合 answers as before
        # a replay after the migration is still recognised, a conflicting one still refused
        replay = store.apply_sync(
            lambda tx: apply_notice(tx, first, caller_municipality=MUNICIPALITY, now=lambda: NOW)
        )
        assert replay.replayed
        conflicting = prefecture_pb2.ChangeNotice()
        conflicting.CopyFrom(first)
        conflicting.four_info.name_kanji = "三重　別子"
        with pytest.raises(DomainError, match="conflicting replay"):
            store.apply_sync(
                lambda tx: apply_notice(tx, conflicting, caller_municipality=MUNICIPALITY, now=lambda: NOW)
            )
    finally:
        store.env.close()
    store = open_store(settings)  # opening again changes nothing
    try:
        with store.reader() as tx:
            again = tx.applied(MUNICIPALITY, first.sequence)
        assert again is not None and again[0] == store.sealer.keyed_digest(_plain_notice_digest(first))
    finally:
        store.env.close()


def test_a_store_of_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = open_store(settings)
    store.env.write_sync(lambda txn: txn.put(b"schema_version", b"9", db=store.env.dbs["meta"]))
    store.env.close()
    with pytest.raises(RuntimeError, match="schema"):
        open_store(settings)


def test_municipality_digests_in_short_reads_are_those_of_one_read(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path))
    try:
        load(store, generate(400, 4))
        with store.reader() as tx:
            whole = list(tx.municipality_digests(MUNICIPALITY))
        assert len(whole) > 20
        for per_read in (1, 7, len(whole), len(whole) + 1):
            assert asyncio.run(store.municipality_digests(MUNICIPALITY, per_read=per_read)) == whole
    finally:
        store.env.close()
