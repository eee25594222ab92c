"""Issue 13, data at rest (SPEC §4.3, §5.3, §6.4), on real server processes: a copy of the data directories or
of a backup, without var/keys, yields no My Number, nor any function of one computable without a key; files
are 0600 and directories 0700 under umask 022; no server can dump core; request ids cannot carry a
住民票コード or a My Number; every erasure of the temporary area is logged without identities."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest
from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from juki.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fuhyo_pb2,
    national_pb2,
    national_pb2_grpc,
    prefecture_pb2,
    records_pb2,
)

from clients.channel import error_details, secure_channel
from clients.fuhyo_cmds import fuhyo_stub
from clients.launch import worker_pids
from clients.reconcile_cmd import reconcile
from server.backup import BackupKey, restore_backup, server_key_file
from server.domain.reconcile import record_digest, record_items
from server.hardening import private_directories
from server.identity.pki import Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo
from server.seed.population import generate
from server.settings import Settings
from server.storage.sealing import DataKeys, MyNumberSealer
from tests.conftest import Server, free_port, make_server
from tests.notices import Municipality, fresh_resident

SEEDED = 300
ELSEWHERE = 60
TSU = "242012"
CS = f"municipal-cs/{TSU}"
POLICE = ("agency/police", "bt6-police-driving-licence")
SERVERS = ("prefecture", "fuhyo", "national")
P = prefecture_pb2
F = fuhyo_pb2
R = records_pb2


@dataclass
class Workload:
    """What the workload sent: My Numbers and notices, to look for afterwards."""

    numbers: set[str] = field(default_factory=set)
    notices: list[P.ChangeNotice] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


@pytest.fixture(scope="module")
def umask_022() -> Iterator[None]:
    """The test process (and so the servers it starts) runs under umask 022, as a login shell would."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path, umask_022: None) -> Iterator[Server]:
    server = make_server(
        tmp_path_factory.mktemp("rest"), pki_dir, seeded=SEEDED, elsewhere=ELSEWHERE, with_fuhyo=True,
        tempstore_ttl=2.0, backup_enabled=True, backup_interval=2.0, backup_keep=2, batch_threshold=2,
    )  # fmt: skip
    server.start()
    yield server
    server.stop_all()


def _last_sequence(server: Server, municipality: str) -> int:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.last_sequence(municipality)
    finally:
        store.env.close()


def _outbox_depth(server: Server) -> int:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.outbox_depth()
    finally:
        store.env.close()


def _admin(server: Server) -> Any:
    channel = secure_channel(
        Pki(server.settings.pki_path), "admin/admin-01", server.settings.prefecture_target
    )
    server._channels.append(channel)
    return admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]


def _provide_with_number(server: Server, code: str, request_id: str) -> Any:
    request = F.FuhyoProvideRequest(
        resident_code=code, purpose=POLICE[1], include_my_number=True, request_id=request_id
    )
    return fuhyo_stub(server.settings, POLICE[0]).Provide(request, timeout=10)


def _abroad_fuhyo_codes() -> list[str]:
    """Persons on the 附票 living abroad (国外転出者): the only ones the restricted link serves."""
    return [r.resident_code for r in generate_fuhyo(SEEDED, 1) if r.state_kind == 2]


@pytest.fixture(scope="module")
def workload(srv: Server, tmp_path_factory: pytest.TempPathFactory) -> Workload:
    """Every write path: updates with My Numbers (one by one, a stream, a replay, a My Number change, a
    removal) and their propagation to the national server; the My Number link and the temporary area (an
    acknowledged entry, an expired one); a bulk approval and a batch provision; a 整合; backups."""
    done = Workload(started=time.time())
    cs = srv.stub(CS)
    tsu = Municipality(TSU, _last_sequence(srv, TSU) + 1)
    (born, n1), (dying, n3) = fresh_resident(), fresh_resident()
    _, n2 = fresh_resident()
    done.numbers |= {n1, n2, n3}
    first = tsu.notice(born, R.CHANGE_REASON_SHUSSEI, my_number=n1, birth_date="2024-04-01")
    stream = [
        tsu.notice(dying, R.CHANGE_REASON_TENNYU, my_number=n3, name_kana="シヌ　タロウ"),
        tsu.notice(born, R.CHANGE_REASON_KOJIN_BANGO_HENKO, my_number=n2, birth_date="2024-04-01"),
        tsu.notice(dying, R.CHANGE_REASON_SHIBOU),
    ]
    done.notices += [first, *stream]
    assert not cs.ApplyUpdate(P.ApplyUpdateRequest(notice=first), timeout=10).replayed
    cs.ApplyUpdates(iter([P.ApplyUpdateRequest(notice=n) for n in stream]), timeout=10)
    assert cs.ApplyUpdate(P.ApplyUpdateRequest(notice=first), timeout=10).replayed
    deadline = time.monotonic() + 30
    while _outbox_depth(srv) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _outbox_depth(srv) == 0, "the changes did not reach the national server"

    codes = _abroad_fuhyo_codes()
    acked = _provide_with_number(srv, codes[0], "w-ack")
    done.numbers.add(acked.my_number)
    fuhyo_stub(srv.settings, POLICE[0]).AckDelivery(
        F.AckDeliveryRequest(request_id="w-ack", purpose=POLICE[1]), timeout=5
    )
    done.numbers.add(_provide_with_number(srv, codes[1], "w-ttl").my_number)  # left to expire

    token = (
        _admin(srv)
        .IssueApproval(
            admin_pb2.IssueApprovalRequest(
                caller="spiffe://juki.mie/agency/police", purpose=POLICE[1], max_count=3
            ),
            timeout=5,
        )
        .token
    )
    people = [e.record for e in generate(SEEDED, 1) if not e.record.deleted_flag][:3]

    def conditions() -> Iterator[Any]:
        for i, person in enumerate(people):
            first = {"purpose": POLICE[1], "declared_count": 3, "approval_token": token} if i == 0 else {}
            yield P.BatchProvideRequest(condition_id=f"c{i}", resident_code=person.resident_code, **first)

    results = list(srv.stub(POLICE[0]).BatchProvide(conditions(), timeout=30))
    assert len(results) == 3

    view = [e.record for e in generate(SEEDED, 1) if e.record.municipality_code == TSU]
    view[0].four_info.address += "１番"
    path = tmp_path_factory.mktemp("view") / "tsu.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for record in view:
            f.write(json_format.MessageToJson(record, ensure_ascii=False, indent=None) + "\n")
    differences, _ = reconcile(cs, path, TSU, 3)
    assert differences  # the changed address, and the residents the workload added
    done.ended = time.time()
    time.sleep(srv.settings.tempstore_ttl + 1.5)  # the server's expiry sweeps every second
    backups = srv.settings.path(srv.settings.backup_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        any(a.stat().st_mtime > done.ended for a in (backups / s).glob("*.jkb")) for s in SERVERS
    ):
        time.sleep(0.2)
    return done


# --- what a copy without the keys holds -------------------------------------------------------------------


def _digests(data: bytes) -> list[bytes]:
    return [hashlib.new(name, data).digest() for name in ("sha256", "sha1", "md5", "sha512", "sha3_256")]


@dataclass
class Forbidden:
    """Values computable from a My Number (or from data holding one) without any key: the numbers, and
    digests (SHA-256, SHA-1, MD5, SHA-512, SHA3-256) of each number and of each piece of data holding one."""

    numbers: set[bytes]
    binary: set[bytes]
    hexadecimal: set[bytes]

    @classmethod
    def build(cls, numbers: set[str], data: list[bytes]) -> Forbidden:
        binary = {d for item in [n.encode() for n in numbers] + data for d in _digests(item)}
        return cls(
            {n.encode() for n in numbers},
            binary,
            {d.hex().encode() for d in binary} | {d.hex().upper().encode() for d in binary},
        )

    def found_in(self, blob: bytes) -> list[str]:
        found = [f"My Number {m.decode()}" for m in re.findall(rb"[0-9]{12}", blob) if m in self.numbers]
        for run in re.findall(rb"[0-9a-fA-F]{32,}", blob):
            for size in (32, 40, 64, 128):
                found += [
                    f"hex digest {run[i : i + size]!r}"
                    for i in range(len(run) - size + 1)
                    if run[i : i + size] in self.hexadecimal
                ]
        return found

    def found_in_entry(self, blob: bytes) -> list[str]:
        found = self.found_in(blob)
        for size in (16, 20, 32, 64):
            found += [
                f"digest at {i}" for i in range(len(blob) - size + 1) if blob[i : i + size] in self.binary
            ]
        return found


def _known(srv: Server, workload: Workload) -> Forbidden:
    """Every My Number the stores hold (and held), and every digest-able thing over them: each record's
    compared items (整合), each record serialized with its number, each notice sent."""
    numbers = set(workload.numbers)
    numbers |= {e.record.my_number for e in generate(SEEDED, 1)}
    numbers |= {e.record.my_number for e in generate_elsewhere(ELSEWHERE)}
    data = [n.SerializeToString(deterministic=True) for n in workload.notices]
    s = srv.settings
    for reader in (srv.open_reader(), srv.open_national_reader()):
        try:
            with reader.reader() as tx:
                codes = [
                    bytes(k).decode() for k in tx._txn.cursor(db=tx._dbs["records"]).iternext(values=False)
                ]
                for code in codes:
                    record, number = tx.get(code), tx.my_number(code)
                    assert record is not None
                    versions = [(record, number)] + [(v.record, v.my_number) for v in tx.history(code)]
                    for version, held in versions:
                        numbers.add(held)
                        data.append("\x1f".join(record_items(version, held)).encode())  # 整合's preimage
                        full = type(version)()
                        full.CopyFrom(version)
                        full.my_number = held
                        data.append(full.SerializeToString(deterministic=True))
        finally:
            reader.env.close()
    numbers.discard("")
    assert s.path(s.keys_file).exists()
    forbidden = Forbidden.build(numbers, data)
    assert record_digest(version, held) in forbidden.binary  # what schema 1 kept in idx_municipality
    return forbidden


def _environments(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("data.mdb"))


def _entries(directory: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """(database, key, value) of every entry of every named database of an environment."""
    env = lmdb.open(str(directory), readonly=True, lock=False, max_dbs=64, subdir=True)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k in txn.cursor().iternext(values=False)]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    yield name.decode(), bytes(key), bytes(value)
    finally:
        env.close()


def test_a_copy_without_the_keys_holds_no_my_number_nor_any_unkeyed_function_of_one(
    srv: Server, workload: Workload, tmp_path: Path
) -> None:
    forbidden = _known(srv, workload)
    assert len(forbidden.numbers) > SEEDED
    s = srv.settings
    srv.stop_all()
    try:
        copy = tmp_path / "copy"
        shutil.copytree(s.home / "var", copy, ignore=shutil.ignore_patterns("keys"))
        environments = _environments(copy)
        names = {p.relative_to(copy).as_posix() for p in environments}
        assert {"data/prefecture", "data/national", "data/fuhyo", "tempstore/fuhyo"} <= names
        databases: set[str] = set()
        for environment in environments:
            for db, key, value in _entries(environment):
                databases.add(db)
                found = forbidden.found_in_entry(key) + forbidden.found_in_entry(value)
                assert not found, (environment, db, key, found[:3])
        assert {
            "records",
            "my_numbers",
            "idx_municipality",
            "applied",
            "approvals",
        } <= databases
        assert "fuhyo_records" not in databases  # schema 3: the 附票 file keeps FuhyoRecords in `records`
        for path in [p for p in copy.rglob("*") if p.is_file()] + list(s.home.glob("*.log")):
            found = forbidden.found_in(path.read_bytes())  # free pages, audit trails, logs, archives
            assert not found, (path, found[:3])
    finally:
        srv.start()


def test_the_stored_digests_are_keyed(srv: Server, workload: Workload) -> None:
    """The applied notices' digests are the keyed ones (so the check above is no accident of layout)."""
    store = srv.open_reader()
    try:
        with store.reader() as tx:
            for notice in workload.notices:
                held = tx.applied(TSU, notice.sequence)
                assert held is not None
                plain = hashlib.sha256(notice.SerializeToString(deterministic=True)).digest()
                assert held[0] == store.sealer.keyed_digest(plain) != plain
            assert all(value == b"" for _, value in _municipality_entries(tx))
    finally:
        store.env.close()


def _municipality_entries(tx: Any) -> Iterator[tuple[bytes, bytes]]:
    with tx._txn.cursor(db=tx._dbs["idx_municipality"]) as cur:
        for key, value in cur:
            yield bytes(key), bytes(value)


def test_a_restored_backup_without_the_data_keys_yields_no_my_number(
    srv: Server, workload: Workload, tmp_path: Path
) -> None:
    forbidden = _known(srv, workload)
    s = srv.settings
    for server in SERVERS:
        archives = sorted((s.path(s.backup_dir) / server).glob("*.jkb"))
        assert archives and archives[-1].stat().st_mtime > workload.ended, server
        key = BackupKey.load(server_key_file(s.path(s.backup_key_file), server)).secret
        target = tmp_path / server
        restore_backup(archives[-1], key, target)
        for environment in _environments(target):
            for db, k, value in _entries(environment):
                assert not forbidden.found_in_entry(k) + forbidden.found_in_entry(value), (server, db)
                if db == "my_numbers":  # sealed: without the server's data keys, nothing opens
                    with pytest.raises(InvalidTag):
                        MyNumberSealer(DataKeys.generate()).open(k.decode(), value)
            for path in environment.iterdir():
                assert not forbidden.found_in(path.read_bytes()), path


# --- modes, core dumps --------------------------------------------------------------------------------------


def _not_private(root: Path) -> list[str]:
    wrong = []
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # e.g. a backup's partial archive, renamed meanwhile
            continue
        mode = stat.S_IMODE(st.st_mode)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if mode != want:
            wrong.append(f"{path.relative_to(root)} {mode:o}")
    return wrong


def test_every_file_is_0600_and_every_directory_0700_under_umask_022(srv: Server, workload: Workload) -> None:
    var = srv.settings.home / "var"
    assert {p.name for p in var.iterdir()} >= {"data", "keys", "audit", "backups", "tempstore"}
    assert not _not_private(var)
    assert stat.S_IMODE(srv.log.stat().st_mode) == 0o600  # what start_server_process writes for a test


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # e.g. a backup child that has finished
        return b""


def _core_limit(pid: int) -> str:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max core"))
    return " ".join(line.split()[4:6])


def test_no_server_can_dump_core(srv: Server) -> None:
    for proc in (srv.proc, srv.national_proc, srv.fuhyo_proc):
        assert proc is not None and proc.poll() is None
        assert _core_limit(proc.pid) == "0 0"


def test_disable_core_dumps_sets_the_limit_and_the_dumpable_flag() -> None:
    code = (
        "import resource; from server.hardening import disable_core_dumps, dumpable; "
        "before = dumpable(); disable_core_dumps(); "
        "print(before, dumpable(), resource.getrlimit(resource.RLIMIT_CORE))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "True False (0, 0)"


# --- request ids ------------------------------------------------------------------------------------------


def _refused(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def _assert_refused_request_id(error: grpc.RpcError, request_id: str, *values: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    violations, _, _ = error_details(error)
    assert {f for f, _ in violations} == {"request_id"}
    text = (error.details() or "") + repr(error.trailing_metadata())
    for value in (request_id, *values):
        assert value not in text


PERSONAL_IDS = (
    "983205673214",  # a valid My Number
    "00000281034",  # a 住民票コード
    "req-00000281034",  # one inside
    "a" * 65,  # too long
    "req id",  # outside the alphabet
)


@pytest.mark.parametrize("request_id", PERSONAL_IDS)
def test_a_request_id_that_could_be_a_code_or_a_my_number_is_refused(srv: Server, request_id: str) -> None:
    person = next(e.record for e in generate(SEEDED, 1) if not e.record.deleted_flag)
    code = person.resident_code
    s = srv.settings
    error = _refused(
        srv.stub(POLICE[0]).Provide,
        P.ProvideRequest(resident_code=code, purpose=POLICE[1], request_id=request_id),
    )
    _assert_refused_request_id(error, request_id, person.my_number, person.four_info.name_kanji)
    error = _refused(
        srv.stub("fuhyo-server/24").FetchMyNumber,
        P.FetchMyNumberRequest(
            resident_code=code, purpose=POLICE[1], requester="spiffe://juki.mie/agency/police",
            request_id=request_id,
        ),
    )  # fmt: skip
    _assert_refused_request_id(error, request_id, person.my_number)
    fuhyo = fuhyo_stub(s, POLICE[0])
    fuhyo_code = _abroad_fuhyo_codes()[3]
    error = _refused(
        fuhyo.Provide,
        F.FuhyoProvideRequest(
            resident_code=fuhyo_code, purpose=POLICE[1], include_my_number=True, request_id=request_id
        ),
    )
    _assert_refused_request_id(error, request_id)
    for call, request in (
        (fuhyo.Redeliver, F.RedeliverRequest(request_id=request_id, purpose=POLICE[1])),
        (fuhyo.AckDelivery, F.AckDeliveryRequest(request_id=request_id, purpose=POLICE[1])),
    ):
        _assert_refused_request_id(_refused(call, request), request_id)
    channel = secure_channel(Pki(s.pki_path), "prefectural-server/24", s.national_target)
    try:
        national: Any = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
        elsewhere = next(iter(generate_elsewhere(1))).record.resident_code
        error = _refused(
            national.Query,
            national_pb2.NationalQueryRequest(
                resident_code=elsewhere, purpose=POLICE[1], requester="spiffe://juki.mie/agency/police",
                request_id=request_id,
            ),
        )  # fmt: skip
        _assert_refused_request_id(error, request_id)
    finally:
        channel.close()


def test_a_request_id_of_the_safe_alphabet_is_taken(srv: Server) -> None:
    person = next(e.record for e in generate(SEEDED, 1) if not e.record.deleted_flag)
    answer = srv.stub(POLICE[0]).Provide(
        P.ProvideRequest(
            resident_code=person.resident_code, purpose=POLICE[1], request_id="case-2026.12:0001"
        ),
        timeout=10,
    )
    assert answer.records[0].resident_code == person.resident_code


# --- erasures of the temporary area -------------------------------------------------------------------------


def _erasures(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "temporary area: entries erased"]


def test_every_erasure_is_logged_with_its_cause_and_no_identity(srv: Server, workload: Workload) -> None:
    log = srv.log.with_name("fuhyo.log")
    code = _abroad_fuhyo_codes()[2]
    number = _provide_with_number(srv, code, "w-restart").my_number
    assert srv.fuhyo_proc is not None
    srv.fuhyo_proc.send_signal(signal.SIGKILL)  # the entry's key dies with the process
    srv.fuhyo_proc.wait(timeout=30)
    srv.start_fuhyo()
    erasures = _erasures(log)
    causes = {e["cause"] for e in erasures}
    assert {"ack", "ttl", "restart"} <= causes, erasures
    assert any(e["cause"] == "ack" and e["entries"] == 1 and e["records_deleted"] == 1 for e in erasures)
    text = log.read_text()
    for secret in ("w-ack", "w-ttl", "w-restart", code, number, *workload.numbers):
        assert all(secret not in json.dumps(e, ensure_ascii=False) for e in erasures)
    for secret in (number, *workload.numbers):
        assert secret not in text


# --- juki run -----------------------------------------------------------------------------------------------


def test_juki_run_shows_no_resident_and_logs_every_server_to_var_log(tmp_path: Path, umask_022: None) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "JUKI_NATIONAL_SEED_COUNT": "200",
        **{
            f"JUKI_{name}": str(free_port())
            for name in (
                "PREFECTURE_PORT", "NATIONAL_PORT", "FUHYO_PORT", "PREFECTURE_METRICS_PORT",
                "NATIONAL_METRICS_PORT", "FUHYO_METRICS_PORT",
            )
        },
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients", "--home", str(tmp_path), "run", "--count", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "ready":
                break
        banner = "".join(lines)
        assert lines and lines[-1].strip() == "ready", banner
        assert " lookup --as " in banner and "--show-sample" in banner
        codes = {e.record.resident_code for e in generate(300, 1)}
        assert not codes & set(re.findall(r"[0-9]{11}", banner))
        pids = [proc.pid, *(p for p in worker_pids(proc.pid) if b"\0serve\0" in _cmdline(p))]
        assert len(pids) == 3  # the prefecture (this process), national and 附票 servers
        assert all(_core_limit(pid) == "0 0" for pid in pids)
        logs = tmp_path / "var" / "log"
        assert sorted(p.name for p in logs.iterdir()) == [f"{s}.log" for s in sorted(SERVERS)]
        deadline = time.monotonic() + 10
        while not all((logs / f"{s}.log").stat().st_size for s in SERVERS) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all((logs / f"{s}.log").stat().st_size for s in SERVERS)
        assert not _not_private(tmp_path / "var")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_settings_name_every_private_directory() -> None:
    s = Settings(home=Path("/nonexistent-home"))
    names = {p.relative_to(s.home).as_posix() for p in private_directories(s)}
    assert names >= {"var/data/prefecture", "var/keys", "var/audit/fuhyo", "var/backups", "var/log"}
    assert names >= {"var/tempstore/fuhyo", "var/data/national", "var/data/fuhyo"}
