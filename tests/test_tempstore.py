"""SPEC §5.3 and §6.4, the 附票 server's temporary area (一時保存領域): a My Number is held only for its
requester, only until acknowledged or its TTL, and cannot be recovered afterwards — not even from a copy of
the files. Real LMDB in tmp_path, an injected clock."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from cryptography.exceptions import InvalidTag
from prometheus_client import REGISTRY

from server.backup.archive import TEMPSTORE_MARKER, BackupError, create_backup, is_tempstore
from server.storage.lmdbenv import LmdbEnv
from server.tempstore import AlreadyHeld, NotHeld, TempStore, TempStoreError, WrongOwner
from server.tempstore.entry import SealedEntry, new_key, seal, unseal, wipe

POLICE = "spiffe://juki.mie/agency/police"
TAX = "spiffe://juki.mie/department/tax"
MY_NUMBER = "123456789018"
PAYLOAD = f'{{"name":"三重 太郎","resident_code":"24012345678","my_number":"{MY_NUMBER}"}}'.encode()
TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def erasures(cause: str) -> float:
    return REGISTRY.get_sample_value("juki_tempstore_erasures_total", {"cause": cause}) or 0.0


def entries_gauge() -> float:
    return REGISTRY.get_sample_value("juki_tempstore_entries") or 0.0


def files_hold(directory: Path, needle: bytes) -> bool:
    return any(needle in path.read_bytes() for path in directory.iterdir() if path.is_file())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def area(tmp_path: Path) -> Path:
    return tmp_path / "fuhyo-temporary-area"


@pytest.fixture
def store(area: Path, clock: Clock) -> Iterator[TempStore]:
    held = TempStore(area, ttl=TTL, now=clock)
    yield held
    held.close()


def test_the_requester_gets_the_answer_back(store: TempStore) -> None:
    store.put("req-1", POLICE, PAYLOAD)
    assert store.get("req-1", POLICE) == PAYLOAD
    assert store.get("req-1", POLICE) == PAYLOAD  # redelivery can be asked again while held
    assert store.entries() == 1
    assert entries_gauge() == 1


def test_another_caller_is_refused_and_learns_nothing(store: TempStore) -> None:
    store.put("req-1", POLICE, PAYLOAD)
    for call in (store.get, store.ack):
        with pytest.raises(WrongOwner) as refused:
            call("req-1", TAX)
        message = str(refused.value)
        assert MY_NUMBER not in message and "三重" not in message and "24012345678" not in message
        assert POLICE not in message
    assert store.get("req-1", POLICE) == PAYLOAD  # the refusal erased nothing


def test_an_acknowledged_answer_is_gone(store: TempStore) -> None:
    before = erasures("ack")
    store.put("req-1", POLICE, PAYLOAD)
    store.ack("req-1", POLICE)
    with pytest.raises(NotHeld):
        store.get("req-1", POLICE)
    with pytest.raises(NotHeld):
        store.ack("req-1", POLICE)
    assert erasures("ack") == before + 1
    assert store.entries() == 0 and entries_gauge() == 0
    with store.env.read() as txn:
        assert txn.get(b"req-1", db=store.env.dbs["entries"]) is None


def test_an_answer_past_its_ttl_is_erased_and_counted(store: TempStore, clock: Clock) -> None:
    before = erasures("ttl")
    store.put("req-1", POLICE, PAYLOAD)
    store.put("req-2", POLICE, PAYLOAD)
    clock.advance(TTL - 1)
    store.put("req-3", POLICE, PAYLOAD)
    assert store.expire() == 0
    assert store.get("req-1", POLICE) == PAYLOAD
    clock.advance(1)
    assert store.expire() == 2
    for request_id in ("req-1", "req-2"):
        with pytest.raises(NotHeld):
            store.get(request_id, POLICE)
    assert store.get("req-3", POLICE) == PAYLOAD
    assert erasures("ttl") == before + 2
    assert store.entries() == 1 and entries_gauge() == 1
    with store.env.read() as txn:
        assert [key for key, _ in txn.cursor(db=store.env.dbs["entries"])] == [b"req-3"]


def test_an_expired_answer_is_refused_even_before_the_sweep(store: TempStore, clock: Clock) -> None:
    before = erasures("ttl")
    store.put("req-1", POLICE, PAYLOAD)
    clock.advance(TTL)
    with pytest.raises(NotHeld):
        store.get("req-1", POLICE)
    with pytest.raises(NotHeld):
        store.get("req-1", TAX)  # expired: not even its existence is confirmed
    assert erasures("ttl") == before + 1  # its key was destroyed when the expiry was noticed
    assert store.expire() == 0  # already counted; the sweep deletes its record
    with store.env.read() as txn:
        assert txn.get(b"req-1", db=store.env.dbs["entries"]) is None


def test_a_live_request_id_is_not_taken_twice(store: TempStore, clock: Clock) -> None:
    store.put("req-1", POLICE, PAYLOAD)
    with pytest.raises(AlreadyHeld):
        store.put("req-1", POLICE, b"other")
    with pytest.raises(AlreadyHeld):
        store.put("req-1", TAX, b"other")
    assert store.get("req-1", POLICE) == PAYLOAD
    clock.advance(TTL)
    store.put("req-1", TAX, b"later")  # the expired entry gives way
    assert store.get("req-1", TAX) == b"later"
    with pytest.raises(WrongOwner):
        store.get("req-1", POLICE)


def test_the_files_never_hold_the_answer(store: TempStore, area: Path, clock: Clock) -> None:
    store.put("req-1", POLICE, PAYLOAD)
    store.put("req-2", TAX, PAYLOAD)
    assert not files_hold(area, MY_NUMBER.encode())
    assert not files_hold(area, "三重 太郎".encode())
    store.ack("req-1", POLICE)
    clock.advance(TTL)
    assert store.expire() == 1
    assert not files_hold(area, MY_NUMBER.encode())
    assert not files_hold(area, "三重 太郎".encode())


def test_a_restart_erases_every_entry(area: Path, clock: Clock) -> None:
    before = erasures("restart")
    first = TempStore(area, ttl=TTL, now=clock)
    for n in range(3):
        first.put(f"req-{n}", POLICE, PAYLOAD)
    first.close()
    assert entries_gauge() == 0

    second = TempStore(area, ttl=TTL, now=clock)
    try:
        assert second.entries() == 0
        for n in range(3):
            with pytest.raises(NotHeld):
                second.get(f"req-{n}", POLICE)
        with second.env.read() as txn:
            assert txn.stat(second.env.dbs["entries"])["entries"] == 0
        assert erasures("restart") == before + 3
    finally:
        second.close()


def test_a_copy_of_the_files_cannot_be_decrypted(store: TempStore, area: Path, tmp_path: Path) -> None:
    store.put("req-1", POLICE, PAYLOAD)
    copy = tmp_path / "stolen"
    shutil.copytree(area, copy)

    # What the copy holds: the owner in clear, a nonce and ciphertext — no trace of the answer.
    env = lmdb.open(str(copy), max_dbs=2, readonly=True)
    try:
        with env.begin(db=env.open_db(b"entries", create=False)) as txn:
            raw = bytes(txn.get(b"req-1"))
    finally:
        env.close()
    assert MY_NUMBER.encode() not in raw and "三重".encode() not in raw
    sealed = SealedEntry.decode(raw)
    assert sealed.owner == POLICE
    with pytest.raises(InvalidTag):
        unseal(new_key(), "req-1", sealed)  # any key but the one that existed only in memory

    before = erasures("restart")
    opened = TempStore(copy, ttl=TTL)
    try:
        with pytest.raises(NotHeld):
            opened.get("req-1", POLICE)
        assert opened.entries() == 0
        assert erasures("restart") == before + 1
    finally:
        opened.close()
    assert store.get("req-1", POLICE) == PAYLOAD  # the running server still holds its own


def test_the_area_is_private_and_never_backed_up(store: TempStore, area: Path, tmp_path: Path) -> None:
    assert (area / TEMPSTORE_MARKER).is_file()
    assert is_tempstore(area)
    assert stat.S_IMODE(area.stat().st_mode) == 0o700
    assert stat.S_IMODE((area / "data.mdb").stat().st_mode) == 0o600
    store.put("req-1", POLICE, PAYLOAD)
    with pytest.raises(BackupError, match="temporary area"):
        create_backup({"fuhyo-temp": area}, tmp_path / "a.jkb", secrets.token_bytes(32))
    assert not (tmp_path / "a.jkb").exists()


def test_another_environment_is_never_taken_for_the_area(tmp_path: Path) -> None:
    database = tmp_path / "fuhyo"
    LmdbEnv(database, ("records",)).close()
    with pytest.raises(TempStoreError, match="not a temporary area"):
        TempStore(database)
    assert not (database / TEMPSTORE_MARKER).exists()


@pytest.mark.parametrize("request_id", ["", "x" * 65, "a/b", "req 1", "依頼1", "req\n"])
def test_request_ids_are_checked(store: TempStore, request_id: str) -> None:
    with pytest.raises(ValueError):
        store.put(request_id, POLICE, PAYLOAD)
    with pytest.raises(ValueError):
        store.get(request_id, POLICE)
    with pytest.raises(ValueError):
        store.ack(request_id, POLICE)


def test_request_ids_of_the_allowed_alphabet_are_taken(store: TempStore) -> None:
    for request_id in ("a", "x" * 64, "fuhyo-24:2024.01_0001"):
        store.put(request_id, POLICE, PAYLOAD)
        assert store.get(request_id, POLICE) == PAYLOAD


def test_shutdown_erases_everything_and_counts_it(store: TempStore) -> None:
    before = erasures("shutdown")
    store.put("req-1", POLICE, PAYLOAD)
    store.put("req-2", TAX, PAYLOAD)
    assert store.erase_all("shutdown") == 2
    assert erasures("shutdown") == before + 2
    assert store.entries() == 0
    with store.env.read() as txn:
        assert txn.stat(store.env.dbs["entries"])["entries"] == 0
    with pytest.raises(ValueError):
        store.erase_all("because")


def test_the_expiry_loop_erases_on_schedule(store: TempStore, clock: Clock) -> None:
    before = erasures("ttl")

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(store.run_expiry(every=0.01, stop=stop))
        await store.put_async("req-1", POLICE, PAYLOAD)
        await store.put_async("req-2", TAX, PAYLOAD)
        await store.ack_async("req-2", TAX)
        await asyncio.sleep(0.05)
        assert store.entries() == 1  # not yet due
        clock.advance(TTL)
        for _ in range(200):
            if store.entries() == 0:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(loop, 5)

    asyncio.run(scenario())
    assert store.entries() == 0
    assert erasures("ttl") == before + 1
    with store.env.read() as txn:
        assert txn.stat(store.env.dbs["entries"])["entries"] == 0


def test_a_sealed_answer_is_bound_to_its_request_and_owner() -> None:
    key = new_key()
    sealed = seal(key, "req-1", POLICE, PAYLOAD)
    assert unseal(key, "req-1", sealed) == PAYLOAD
    with pytest.raises(InvalidTag):
        unseal(key, "req-2", sealed)  # moved to another request id
    with pytest.raises(InvalidTag):
        unseal(key, "req-1", SealedEntry(TAX, sealed.nonce, sealed.ciphertext))  # relabelled owner
    wipe(key)
    assert key == bytearray(32)
    with pytest.raises(InvalidTag):
        unseal(key, "req-1", sealed)


def test_callers_on_many_threads_leave_nothing_behind(store: TempStore, clock: Clock) -> None:
    failures: list[BaseException] = []

    def caller(worker: int) -> None:
        try:
            calls(worker)
        except BaseException as exc:
            failures.append(exc)

    def calls(worker: int) -> None:
        for n in range(20):
            request_id = f"w{worker}-{n}"
            store.put(request_id, POLICE, PAYLOAD)
            assert store.get(request_id, POLICE) == PAYLOAD
            if n % 2:
                store.ack(request_id, POLICE)
            else:
                store.expire()

    threads = [threading.Thread(target=caller, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.entries() == 40
    clock.advance(TTL)
    assert store.expire() == 40
    with store.env.read() as txn:
        assert txn.stat(store.env.dbs["entries"])["entries"] == 0


def test_each_caller_has_its_own_request_ids() -> None:
    from server.tempstore import caller_slot, check_request_id

    police, tax = "spiffe://juki.mie/agency/police", "spiffe://juki.mie/department/tax"
    slot = caller_slot(police, "req-1")
    assert slot == caller_slot(police, "req-1") != caller_slot(tax, "req-1") != caller_slot(police, "req-2")
    assert check_request_id(slot) == slot  # a valid id of the area itself
