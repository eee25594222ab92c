"""SPEC §4.3 backups: an archive taken while the server writes restores a consistent store; whoever holds an
archive without its key learns nothing; any damage is named; the temporary area is never backed up."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from juki.v1 import prefecture_pb2, records_pb2

from clients.backup_cmds import backup
from server.app import open_store
from server.backup import (
    BackupError,
    BackupKey,
    Manifest,
    archive_name,
    backup_schedule,
    create_backup,
    mark_tempstore,
    read_manifest,
    restore_backup,
    verify_backup,
)
from server.backup.archive import HEADER_SIZE, MANIFEST_AREA, _Header, _Sealer
from server.seed.load import load
from server.seed.population import SeedEntry, generate
from server.settings import Settings
from server.storage import registry
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore, ResidentTxn
from server.storage.sealing import DataKeys, MyNumberSealer
from tests.conftest import make_server
from tests.notices import Municipality, fresh_resident

R = records_pb2
ISE = "242039"
SEEDED = 2000
STREAM = 2400
SMALL_CHUNK = 64 << 10


def open_restored(directory: Path, keys_file: Path, *, readonly: bool = False) -> ResidentStore:
    """A restored environment opened the way the server opens its own (registry included)."""
    env = LmdbEnv(directory, DB_NAMES + registry.DB_NAMES, readonly=readonly)
    return ResidentStore(env, MyNumberSealer(DataKeys.load(keys_file)))


def live_sequence(settings: Settings) -> int:
    """The server's last applied sequence for Ise (py-lmdb: no handle may stay open while we back up)."""
    store = open_restored(settings.data_path, settings.keys_path, readonly=True)
    try:
        with store.reader() as tx:
            return tx.last_sequence(ISE)
    finally:
        store.env.close()


def build_stream() -> list[Any]:
    """Creations, every third notice a 転居 of a resident created earlier in the stream."""
    town = Municipality(ISE)
    notices: list[Any] = []
    residents: list[tuple[str, str]] = []
    for i in range(STREAM):
        if i % 3 == 2:
            code, number = residents[i // 3]
            notices.append(
                town.notice(
                    code, R.CHANGE_REASON_TENKYO, my_number=number, address=f"三重県伊勢市岩渕{i}番地"
                )
            )
        else:
            code, number = fresh_resident()
            residents.append((code, number))
            notices.append(town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number))
    return notices


def last_notice_per_resident(notices: list[Any], applied: int) -> dict[str, Any]:
    state: dict[str, Any] = {n.resident_code: None for n in notices}
    for n in notices[:applied]:
        state[n.resident_code] = n
    return state


def assert_snapshot_consistent(tx: ResidentTxn, notices: list[Any], seeded: list[SeedEntry]) -> int:
    """Exactly notices 1…S (S the restored last sequence) are in the store, each whole; the seed is intact."""
    applied = tx.last_sequence(ISE)
    for code, last in last_notice_per_resident(notices, applied).items():
        record = tx.get(code)
        if last is None:
            assert record is None, f"{code}: a notice past sequence {applied} left a record"
            continue
        assert record is not None and record.sequence == last.sequence
        assert record.four_info.address == last.four_info.address
        assert tx.my_number(code) == last.my_number
        assert tx.code_by_my_number(last.my_number) == code
        assert len(tx.history(code)) == sum(1 for n in notices[:applied] if n.resident_code == code) - 1
    for seq in range(1, applied + 1):
        assert tx.applied(ISE, seq) is not None
    assert tx.applied(ISE, applied + 1) is None
    assert tx.outbox_depth() == applied, "every applied notice queued for the national server, once"
    creations = sum(1 for n in notices[:applied] if n.change_reason == R.CHANGE_REASON_SHUSSEI)
    assert tx.count("records") == len(seeded) + creations
    for db in ("idx_name", "idx_birth", "idx_address"):
        assert tx.count(db) == tx.count("records"), f"{db} out of step with records"
    for entry in seeded:
        code = entry.record.resident_code
        record = tx.get(code)
        assert record is not None and record.four_info == entry.record.four_info
        assert tx.my_number(code) == entry.record.my_number
        assert tx.code_by_my_number(entry.record.my_number) == code
    return int(applied)


def test_backup_of_a_running_server_restores_the_store_as_of_its_snapshot(
    tmp_path: Path, pki_dir: Path
) -> None:
    srv = make_server(
        tmp_path / "srv",
        pki_dir,
        seeded=SEEDED,
        with_national=False,
        apply_batch_size=20,
        relay_enabled=False,
    )
    seeded = list(generate(SEEDED, 1))
    notices = build_stream()
    key = BackupKey.load_or_create(tmp_path / "keys" / "backup.key").secret
    srv.start()
    try:
        stub = srv.stub(f"municipal-cs/{ISE}")
        outcome: dict[str, Any] = {}

        def requests() -> Iterator[Any]:
            for notice in notices:
                time.sleep(0.002)  # a steady stream of commits for the backups to run into
                yield prefecture_pb2.ApplyUpdateRequest(notice=notice)

        def push() -> None:
            try:
                outcome["response"] = stub.ApplyUpdates(requests(), timeout=60)
            except Exception as exc:
                outcome["error"] = exc

        pusher = threading.Thread(target=push)
        pusher.start()
        deadline = time.monotonic() + 20
        while live_sequence(srv.settings) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        taken: list[tuple[Path, int, int, Manifest]] = []
        for n in range(3):
            time.sleep(0.2)
            before = live_sequence(srv.settings)
            archive = tmp_path / f"live-{n}.jkb"
            # Read slowly (the copy waits on its pipe), so that the server commits many times meanwhile.
            manifest = create_backup(
                {"prefecture": srv.settings.data_path},
                archive,
                key,
                chunk_size=SMALL_CHUNK,
                progress=lambda _: time.sleep(0.005),
            )
            after = live_sequence(srv.settings)
            taken.append((archive, before, after, manifest))
        assert pusher.is_alive(), "the stream ended before the last backup; nothing ran concurrently"
        pusher.join(timeout=60)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["response"].last_applied_sequence == STREAM

        original = open_restored(srv.settings.data_path, srv.settings.keys_path, readonly=True)
        try:
            for n, (archive, before, after, manifest) in enumerate(taken):
                assert [e.name for e in manifest.environments] == ["prefecture"]
                target = tmp_path / f"restored-{n}"
                assert restore_backup(archive, key, target) == manifest
                assert sorted(p.name for p in target.iterdir()) == ["prefecture"]
                restored = open_restored(target / "prefecture", srv.settings.keys_path)
                try:
                    with restored.reader() as tx, original.reader() as now:
                        snapshot_point = assert_snapshot_consistent(tx, notices, seeded)
                        assert 0 < before <= snapshot_point < after < STREAM, "writes ran during the copy"
                        # Every record restored equals the live one, unless a later notice changed it since.
                        changed_later = {x.resident_code for x in notices[snapshot_point:]}
                        for entry in seeded:
                            code = entry.record.resident_code
                            assert tx.get(code) == now.get(code)
                            assert len(tx.history(code)) == len(now.history(code))
                        for code, last in last_notice_per_resident(notices, snapshot_point).items():
                            if last is not None and code not in changed_later:
                                assert tx.get(code) == now.get(code)
                                assert tx.my_number(code) == now.my_number(code)
                        assert tx.count("operators") == now.count("operators") > 0
                finally:
                    restored.env.close()
        finally:
            original.env.close()
    finally:
        srv.stop()


# --- archives of a seeded store (no server needed) ---------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("store"))
    store = open_store(settings)
    load(store, generate(SEEDED, 1))
    store.env.close()
    return settings


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return BackupKey.load_or_create(tmp_path_factory.mktemp("keys") / "backup.key").secret


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, seeded: Settings, key: bytes) -> Path:
    """An archive in small chunks, so that there are many to damage."""
    path = tmp_path_factory.mktemp("archives") / "seeded.jkb"
    create_backup({"prefecture": seeded.data_path}, path, key, chunk_size=SMALL_CHUNK)
    return path


def chunk_offset(index: int, chunk_size: int = SMALL_CHUNK) -> int:
    """Where data chunk `index` (1-based, not the last of its environment) starts."""
    return HEADER_SIZE + MANIFEST_AREA + (index - 1) * (chunk_size + 16)


def test_archive_reveals_no_resident_and_not_the_key(archive: Path, seeded: Settings, key: bytes) -> None:
    raw = archive.read_bytes()
    plain = (seeded.data_path / "data.mdb").read_bytes()
    people = list(generate(SEEDED, 1))[::5]
    assert len(people) >= 300
    for entry in people:
        code = entry.record.resident_code.encode()
        name = entry.record.four_info.name_kanji.encode()
        address = entry.record.four_info.address.encode()
        assert code in plain and name in plain, "the test must look for what the store does hold in clear"
        for secret in (code, name, address, entry.record.my_number.encode()):
            assert secret not in raw
    for secret in (key, key.hex().encode(), b"prefecture", b"records", b"my_number"):
        assert secret not in raw
    assert raw[:8] == b"JUKI-BKP"


def test_the_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "backup.key"
    key = BackupKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert BackupKey.load_or_create(path) == key
    with pytest.raises(FileExistsError):
        BackupKey.generate().save(path)
    assert key.secret.hex() not in repr(key)


def test_verify_and_restore_a_sound_archive(
    archive: Path, seeded: Settings, key: bytes, tmp_path: Path
) -> None:
    manifest = verify_backup(archive, key)
    assert manifest == read_manifest(archive, key)
    (env,) = manifest.environments
    assert env.name == "prefecture" and env.chunks > 4
    assert manifest.created_at.tzinfo is not None and manifest.source_host

    target = tmp_path / "empty"
    target.mkdir()  # an existing but empty directory is fine
    restore_backup(archive, key, target)
    restored = open_restored(target / "prefecture", seeded.keys_path)
    try:
        with restored.reader() as tx:
            assert tx.count("records") == SEEDED
            for entry in list(generate(SEEDED, 1))[::7]:
                assert tx.my_number(entry.record.resident_code) == entry.record.my_number
    finally:
        restored.env.close()
    assert stat.S_IMODE((target / "prefecture" / "data.mdb").stat().st_mode) == 0o600

    with pytest.raises(BackupError, match="not empty"):
        restore_backup(archive, key, target)


def _flip(raw: bytearray, offset: int) -> None:
    raw[offset] ^= 0x01


def _swap(raw: bytearray, a: int, b: int) -> None:
    size = SMALL_CHUNK + 16
    oa, ob = chunk_offset(a), chunk_offset(b)
    raw[oa : oa + size], raw[ob : ob + size] = raw[ob : ob + size], raw[oa : oa + size]


def _drop(raw: bytearray, index: int) -> None:
    del raw[chunk_offset(index) : chunk_offset(index + 1)]


def _cut(raw: bytearray, offset: int) -> None:
    del raw[offset:]


DAMAGE: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "corrupted byte in chunk 3": (
        lambda raw: _flip(raw, chunk_offset(3) + 100),
        r"chunk 3 of \d+ .* corrupted",
    ),
    "corrupted manifest": (lambda raw: _flip(raw, HEADER_SIZE + 10), "manifest corrupted"),
    "corrupted header": (lambda raw: _flip(raw, 20), "manifest corrupted"),
    "truncated": (lambda raw: _cut(raw, len(raw) - 1000), "truncated"),
    "truncated at a chunk boundary": (lambda raw: _cut(raw, chunk_offset(4)), "truncated"),
    "truncated to the header": (lambda raw: _cut(raw, 30), "truncated"),
    "two chunks swapped": (lambda raw: _swap(raw, 2, 5), "out of order.*position 2 .* holds chunk 5"),
    "a chunk dropped": (lambda raw: _drop(raw, 3), "out of order.*position 3 .* holds chunk 4"),
    "data appended": (lambda raw: raw.extend(b"\0" * 64), "after its last chunk"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_archive_is_named_and_nothing_is_restored(
    damage: str, archive: Path, key: bytes, tmp_path: Path
) -> None:
    raw = bytearray(archive.read_bytes())
    spoil, message = DAMAGE[damage]
    spoil(raw)
    damaged = tmp_path / "damaged.jkb"
    damaged.write_bytes(bytes(raw))

    with pytest.raises(BackupError, match=message):
        verify_backup(damaged, key)
    target = tmp_path / "restore" / "here"
    with pytest.raises(BackupError, match=message):
        restore_backup(damaged, key, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.jkb"], "restore left something behind"


def test_a_wrong_key_is_named_as_such(archive: Path, tmp_path: Path) -> None:
    wrong = BackupKey.generate().secret
    with pytest.raises(BackupError, match="wrong key"):
        verify_backup(archive, wrong)
    with pytest.raises(BackupError, match="wrong key"):
        restore_backup(archive, wrong, tmp_path / "restored")
    assert list(tmp_path.iterdir()) == []


def test_a_snapshot_not_matching_its_checksum_is_named(archive: Path, key: bytes, tmp_path: Path) -> None:
    """As a faulty copy would give: every chunk authentic, the manifest's digest not that of the data."""
    raw = bytearray(archive.read_bytes())
    header = _Header.parse(bytes(raw[:HEADER_SIZE]))
    sealer = _Sealer(key, header)
    manifest_end = HEADER_SIZE + MANIFEST_AREA
    body = sealer.open(0, 0xFFFFFFFF, True, bytes(raw[HEADER_SIZE:manifest_end]))
    sha = read_manifest(archive, key).environments[0].sha256
    raw[HEADER_SIZE:manifest_end] = sealer.seal(0, 0xFFFFFFFF, True, body.replace(sha.encode(), b"0" * 64))
    forged = tmp_path / "forged.jkb"
    forged.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="checksum mismatch for environment 'prefecture'"):
        verify_backup(forged, key)
    with pytest.raises(BackupError, match="checksum mismatch"):
        restore_backup(forged, key, tmp_path / "restored")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forged.jkb"]


def test_the_temporary_area_is_never_backed_up(seeded: Settings, key: bytes, tmp_path: Path) -> None:
    named = tmp_path / "tempstore"
    env = LmdbEnv(named, ("entries",))
    env.close()
    with pytest.raises(BackupError, match="temporary area"):
        create_backup({"prefecture": seeded.data_path, "fuhyo-temp": named}, tmp_path / "a.jkb", key)

    marked = tmp_path / "fuhyo-temporary"
    env = LmdbEnv(marked, ("entries",))
    env.close()
    mark_tempstore(marked)
    with pytest.raises(BackupError, match="temporary area"):
        create_backup({"temporary": marked}, tmp_path / "b.jkb", key)
    assert not (tmp_path / "a.jkb").exists() and not (tmp_path / "b.jkb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_nothing_is_left_when_a_backup_cannot_be_made(key: bytes, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no LMDB environment"):
        create_backup({"prefecture": tmp_path / "absent"}, tmp_path / "out" / "a.jkb", key)
    with pytest.raises(BackupError, match="32 bytes"):
        create_backup({"prefecture": tmp_path}, tmp_path / "a.jkb", b"short")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def run_schedule(sources: dict[str, Path], out: Path, key: bytes, runs: int) -> list[datetime]:
    """Run the schedule on a clock that advances a day per reading, for `runs` runs; the readings."""
    start = datetime(2025, 4, 1, 2, 0, tzinfo=UTC)
    calls: list[datetime] = []

    async def run() -> None:
        stop = asyncio.Event()

        def now() -> datetime:
            moment = start + timedelta(days=len(calls))
            calls.append(moment)
            if len(calls) == runs + 1:  # the first reading only places the schedule
                stop.set()
            return moment

        schedule = backup_schedule(sources, out, key, every=0.01, keep=3, stop=stop, now=now)
        await asyncio.wait_for(schedule, timeout=20)

    asyncio.run(run())
    return calls


def test_the_schedule_writes_an_archive_each_interval_and_keeps_the_newest(
    seeded: Settings, key: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "backups"
    out.mkdir()
    (out / "notes.txt").write_text("not an archive of the schedule")
    (out / ".backup-20000101T000000Z.jkb.0123456789ab.partial").write_bytes(b"left by a killed server")
    # As inside the server: this process holds the environment open, which py-lmdb allows only once …
    server_env = LmdbEnv(seeded.data_path, DB_NAMES + registry.DB_NAMES)
    try:
        with pytest.raises(BackupError, match="already open"):
            create_backup({"prefecture": seeded.data_path}, tmp_path / "in-process.jkb", key)
        # … so each scheduled archive is made by a child process.
        calls = run_schedule({"prefecture": seeded.data_path}, out, key, runs=6)
    finally:
        server_env.close()
    written = [archive_name(moment) for moment in calls[1:]]
    assert len(written) == 6
    assert sorted(p.name for p in out.iterdir()) == sorted([*written[-3:], "notes.txt"])
    for name in written[-3:]:
        assert verify_backup(out / name, key).environments[0].name == "prefecture"


def test_a_failed_scheduled_backup_does_not_stop_the_schedule(key: bytes, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    calls = run_schedule({"prefecture": tmp_path / "absent"}, out, key, runs=3)
    assert len(calls) == 4 and list(out.iterdir()) == []


# --- the CLI -----------------------------------------------------------------------------------------------


def test_cli_create_verify_restore(seeded: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    settings = seeded.replace()
    archive = tmp_path / "cli.jkb"
    key_file = tmp_path / "k" / "backup.key"

    result = runner.invoke(backup, ["create", "--out", str(archive), "--key", str(key_file)], obj=settings)
    assert result.exit_code == 0, result.output
    assert "backup" in result.output and archive.exists() and key_file.exists()

    result = runner.invoke(backup, ["verify", str(archive), "--key", str(key_file)], obj=settings)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK ")

    target = tmp_path / "restored"
    result = runner.invoke(
        backup, ["restore", str(archive), "--to", str(target), "--key", str(key_file)], obj=settings
    )
    assert result.exit_code == 0, result.output
    assert (target / "prefecture" / "data.mdb").is_file()

    raw = bytearray(archive.read_bytes())
    raw[-100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    result = runner.invoke(backup, ["verify", str(archive), "--key", str(key_file)], obj=settings)
    assert result.exit_code == 1
    assert "corrupted" in result.output and len(result.output.strip().splitlines()) == 1

    result = runner.invoke(
        backup,
        ["restore", str(archive), "--to", str(tmp_path / "again"), "--key", str(key_file)],
        obj=settings,
    )
    assert result.exit_code == 1 and "nothing restored" in result.output
    assert not (tmp_path / "again").exists()


def test_cli_refuses_a_key_inside_the_data_directory(seeded: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        backup,
        ["create", "--out", str(tmp_path / "a.jkb"), "--key", str(seeded.data_path / "backup.key")],
        obj=seeded,
    )
    assert result.exit_code == 1 and "outside the data directory" in result.output
    assert not (seeded.data_path / "backup.key").exists()


def test_cli_default_key_lives_under_var_keys(seeded: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = seeded.replace(home=home, data_dir=seeded.data_path)
    result = CliRunner().invoke(backup, ["create", "--out", str(tmp_path / "a.jkb")], obj=settings)
    assert result.exit_code == 0, result.output
    assert (home / "var" / "keys" / "prefecture.backup.key").is_file()
    assert os.stat(home / "var" / "keys" / "prefecture.backup.key").st_mode & 0o077 == 0
    assert not (home / "var" / "keys" / "backup.key").exists()  # the shared key of older archives


def test_each_server_has_its_own_backup_key(seeded: Settings, tmp_path: Path) -> None:
    """A contractor holding one server's archives and key learns nothing of another's."""
    home = tmp_path / "home"
    settings = seeded.replace(home=home, data_dir=seeded.data_path, national_data_dir=seeded.data_path)
    runner = CliRunner()
    archives = {server: tmp_path / f"{server}.jkb" for server in ("prefecture", "national")}
    for server, archive in archives.items():
        result = runner.invoke(backup, ["create", "--server", server, "--out", str(archive)], obj=settings)
        assert result.exit_code == 0, result.output
    keys = {s: BackupKey.load(home / "var" / "keys" / f"{s}.backup.key") for s in archives}
    assert keys["prefecture"].secret != keys["national"].secret
    with pytest.raises(BackupError, match="wrong key"):
        verify_backup(archives["national"], keys["prefecture"].secret)
    with pytest.raises(BackupError, match="wrong key"):
        restore_backup(archives["prefecture"], keys["national"].secret, tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()
    result = runner.invoke(
        backup, ["verify", "--server", "prefecture", str(archives["national"])], obj=settings
    )
    assert result.exit_code == 1 and "wrong key" in result.output
    result = runner.invoke(
        backup, ["verify", "--server", "national", str(archives["national"])], obj=settings
    )
    assert result.exit_code == 0, result.output


def test_an_archive_sealed_with_the_older_shared_key_still_opens(seeded: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = seeded.replace(home=home, data_dir=seeded.data_path)
    shared = home / "var" / "keys" / "backup.key"
    old = tmp_path / "old.jkb"
    create_backup({"prefecture": seeded.data_path}, old, BackupKey.load_or_create(shared).secret)
    runner = CliRunner()
    result = runner.invoke(backup, ["create", "--out", str(tmp_path / "new.jkb")], obj=settings)
    assert result.exit_code == 0, result.output
    for archive in (old, tmp_path / "new.jkb"):
        result = runner.invoke(backup, ["verify", str(archive)], obj=settings)
        assert result.exit_code == 0, result.output
    result = runner.invoke(backup, ["restore", str(old), "--to", str(tmp_path / "r")], obj=settings)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "prefecture" / "data.mdb").is_file()
