"""The lookup benchmark's peers: the same records served from PostgreSQL (primary-key read) and from Redis
(GET), each behind the same gRPC front end (`bench.peer_server`), to show what LMDB buys.

Both databases are Debian's packages (`apt-get install postgresql redis-server`), started here on
127.0.0.1 only, in a directory of the run, and stopped with it. Each peer holds exactly the bytes the
prefectural LMDB store holds for a resident — the serialized ResidentRecord (My Number cleared) and the
sealed My Number — so the front end parses and unseals as the prefectural server does; only the read
differs.

  PostgreSQL  table residents(code text primary key, record bytea, my_number bytea)
  Redis       two keys per resident: `r:<住民票コード>` the record, `n:<住民票コード>` the sealed My Number

Both are loaded for read speed, not safety: they are disposable copies of a dataset the benchmark keeps in
LMDB, so durability is switched off (see `start_postgres`, `start_redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg  # type: ignore[import-untyped]
import redis
import redis.asyncio
from tqdm import tqdm

from bench.harness import Servers, free_port
from clients.launch import wait_ready
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer

KINDS = ("redis", "postgres")
INSTALL_HINT = "apt-get install postgresql redis-server"
REDIS_SERVER = Path("/usr/bin/redis-server")
POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_USER = "postgres"  # the Debian package's system user; PostgreSQL refuses to run as root

# The peers' layout, shared by the loader (here) and the front end (bench.peer_server).
TABLE = "residents"
COLUMNS = ("code", "record", "my_number")
CHUNK = 10_000  # records per COPY / MSET: bounded memory whatever the store's size


def redis_keys(resident_code: str) -> tuple[bytes, bytes]:
    """The Redis keys of a resident's record and sealed My Number."""
    code = resident_code.encode()
    return b"r:" + code, b"n:" + code


class PeerUnavailable(RuntimeError):
    """A peer's Debian package is not installed (or cannot run here)."""


@dataclass
class PeerProcess:
    """A running peer database: its server process, where to reach it, how to stop it."""

    kind: str
    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path
    log: Path
    stop_signal: signal.Signals = signal.SIGTERM
    _log_file: IO[bytes] | None = None
    _remove: list[Path] = field(default_factory=list)  # directories of this peer outside `workdir`

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def dsn(self) -> str:
        return self.url

    def stop(self, timeout: float = 30.0) -> int:
        """A clean shutdown (the server's own signal), then SIGKILL if it has not ended within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for directory in self._remove:
            shutil.rmtree(directory, ignore_errors=True)
        self._remove.clear()
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# where the Debian binaries are ------------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    """The newest PostgreSQL under /usr/lib/postgresql/<version>/bin that has a server and initdb."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for bindir in POSTGRES_ROOT.glob("*/bin"):
        try:
            version = tuple(int(part) for part in bindir.parent.name.split("."))
        except ValueError:
            continue
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            found.append((version, bindir))
    return max(found)[1] if found else None


def _as_postgres() -> pwd.struct_passwd | None:
    """The OS user to run PostgreSQL as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise PeerUnavailable(
            f"running as root, and there is no `{POSTGRES_USER}` user to run PostgreSQL as ({INSTALL_HINT})"
        ) from None


def peers_available() -> dict[str, bool]:
    """Which peers can be started here."""
    has_postgres = postgres_bindir() is not None
    if has_postgres and os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            has_postgres = False
    return {"redis": REDIS_SERVER.is_file(), "postgres": has_postgres}


# starting them -----------------------------------------------------------------------------------------
def start_redis(workdir: Path, port: int, *, timeout: float = 30.0) -> PeerProcess:
    """redis-server on 127.0.0.1:`port`, working in `workdir`.

    Persistence is off (no RDB snapshots, no AOF): the peer is a disposable copy, and a read benchmark
    measures GET, which persistence does not touch. This is Redis at its most favourable.
    """
    if not REDIS_SERVER.is_file():
        raise PeerUnavailable(f"{REDIS_SERVER} not found: {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    out = log.open("ab")
    arguments = [
        str(REDIS_SERVER),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--logfile", "",  # stdout, i.e. `log`
    ]  # fmt: skip
    proc = subprocess.Popen(
        arguments,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
    peer = PeerProcess("redis", proc, f"redis://127.0.0.1:{port}/0", workdir, log, signal.SIGTERM, out)
    _wait_started(peer, timeout, lambda: _redis_answers(peer.url))
    return peer


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_postgres(
    workdir: Path, port: int, *, shared_buffers: str = "1GB", timeout: float = 60.0
) -> PeerProcess:
    """A new PostgreSQL cluster (initdb) on 127.0.0.1:`port`, run as the `postgres` user when we are root.

    The cluster lives in `workdir`/cluster when the `postgres` user can reach it; otherwise (a run's home
    under a private temporary directory, as pytest's and the harness's are) in a directory of its own
    under the system temporary directory, removed by `stop()`. Authentication is `trust`: the server
    listens on 127.0.0.1 and on a socket inside the cluster directory only.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise PeerUnavailable(f"no PostgreSQL server under {POSTGRES_ROOT}/*/bin: {INSTALL_HINT}")
    owner = _as_postgres()
    workdir.mkdir(parents=True, exist_ok=True)
    remove: list[Path] = []
    cluster = workdir / "cluster"
    if owner is not None and not _reachable(workdir, owner):
        cluster = Path(tempfile.mkdtemp(prefix="juki-pg-"))
        remove.append(cluster)
    cluster.mkdir(exist_ok=True)
    data, sockets = cluster / "data", cluster / "run"
    sockets.mkdir(exist_ok=True)
    if owner is not None:
        for path in (cluster, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    as_user: dict[str, Any] = (
        {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if owner is not None else {}
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(cluster)}
    log = workdir / "postgres.log"
    if not (data / "PG_VERSION").exists():
        command = [
            str(bindir / "initdb"),
            "-D", str(data),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",  # byte-order text comparison: the same order as LMDB's keys
            "--no-sync",  # a disposable cluster
            "--no-instructions",
        ]  # fmt: skip
        initdb = subprocess.run(
            command,
            capture_output=True,
            cwd=cluster,
            env=env,
            check=False,
            **as_user,
        )
        log.write_bytes(initdb.stdout + initdb.stderr)
        if initdb.returncode != 0:
            for directory in remove:
                shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{(initdb.stdout + initdb.stderr).decode()[-2000:]}")
    socket_dir = str(sockets) if len(str(sockets)) < 90 else ""  # a socket path has ~107 bytes at most
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": socket_dir,
        "shared_buffers": shared_buffers,  # room for the whole table and index, as LMDB has the page cache
        # Durability off, for load speed: a disposable copy, rebuilt from LMDB for every run. Reads (what
        # is measured) do not depend on these.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        # COPY into a table created in the same transaction then writes no WAL at all
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "jit": "off",
        "logging_collector": "off",
    }
    arguments = [str(bindir / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        arguments += ["-c", f"{name}={value}"]
    out = log.open("ab")
    proc = subprocess.Popen(
        arguments,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cluster,
        env=env,
        **as_user,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, the cluster is shut down cleanly
    # (SIGTERM would wait for every client to leave).
    peer = PeerProcess("postgres", proc, url, workdir, log, signal.SIGINT, out, remove)
    isready = [
        str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "1"
    ]  # fmt: skip
    _wait_started(peer, timeout, lambda: subprocess.run(isready, check=False).returncode == 0)
    return peer


def _reachable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may enter `path` (search permission on it and every directory above it)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in (path, *path.resolve().parents):
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _wait_started(peer: PeerProcess, timeout: float, answers: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not answers():
        if peer.proc.poll() is not None or time.monotonic() > deadline:
            peer.stop(timeout=5)
            tail = peer.log.read_text(errors="replace")[-2000:] if peer.log.exists() else ""
            raise RuntimeError(f"{peer.kind} did not start (log {peer.log}):\n{tail}")
        time.sleep(0.1)


def start_peer(kind: str, workdir: Path, port: int) -> PeerProcess:
    if kind == "redis":
        return start_redis(workdir, port)
    if kind == "postgres":
        return start_postgres(workdir, port)
    raise ValueError(f"unknown peer {kind!r}")


# loading them -------------------------------------------------------------------------------------------
Row = tuple[str, bytes, bytes | None]


def store_chunks(store: ResidentStore, size: int = CHUNK) -> Iterator[list[Row]]:
    """(code, record bytes, sealed My Number or None) of every record, in code order, `size` at a time.

    Each chunk is read in a short read transaction of its own (an LMDB reader is never held while the
    peer is written to)."""
    dbs = store.env.dbs
    after: bytes | None = None
    while True:
        chunk: list[Row] = []
        with store.env.read() as txn, txn.cursor(db=dbs["records"]) as cur:
            positioned = cur.first() if after is None else cur.set_range(after)
            if positioned and after is not None and bytes(cur.key()) == after:
                positioned = cur.next()
            while positioned and len(chunk) < size:
                key, record = bytes(cur.key()), bytes(cur.value())
                sealed = txn.get(key, db=dbs["my_numbers"])
                chunk.append((key.decode(), record, None if sealed is None else bytes(sealed)))
                positioned = cur.next()
        if not chunk:
            return
        after = chunk[-1][0].encode()
        yield chunk


def load_peer(kind: str, url: str, store: ResidentStore, progress: Callable[[int], object]) -> int:
    """Copy every record of a prefectural store into the peer at `url` (replacing what it held); how many.

    `progress` is called with the number of records of each chunk written."""
    if kind == "postgres":
        return asyncio.run(_load_postgres(url, store, progress))
    if kind == "redis":
        return asyncio.run(_load_redis(url, store, progress))
    raise ValueError(f"unknown peer {kind!r}")


async def _load_postgres(url: str, store: ResidentStore, progress: Callable[[int], object]) -> int:
    total = 0
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            # the primary key is added after the rows: one index build instead of 2 million inserts
            await conn.execute(
                f"CREATE TABLE {TABLE} (code text NOT NULL, record bytea NOT NULL, my_number bytea)"
            )
            for chunk in store_chunks(store):
                await conn.copy_records_to_table(TABLE, records=chunk, columns=list(COLUMNS))
                total += len(chunk)
                progress(len(chunk))
            await conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (code)")
        # settle hint bits and the visibility map now, and give the planner statistics, so that neither a
        # first read nor autovacuum writes during the measurement
        await conn.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
    finally:
        await conn.close()
    return total


async def _load_redis(url: str, store: ResidentStore, progress: Callable[[int], object]) -> int:
    total = 0
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
        for chunk in store_chunks(store):
            values: dict[bytes, bytes] = {}
            for code, record, sealed in chunk:
                record_key, number_key = redis_keys(code)
                values[record_key] = record
                if sealed is not None:
                    values[number_key] = sealed
            await client.mset(values)  # one command, one round trip per chunk
            total += len(chunk)
            progress(len(chunk))
    finally:
        await client.aclose()
    return total


# the front end -----------------------------------------------------------------------------------------
def start_front_end(
    config: Path,
    kind: str,
    url: str,
    port: int,
    state_dir: Path,
    *,
    log: Path | None = None,
    pool_size: int = 8,
) -> subprocess.Popen[bytes]:
    """`python -m bench.peer_server` as a child process (stdout/stderr to `log`), as the servers are
    started by clients.launch: the config file is complete, JUKI_* variables are not passed on."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKI_")}
    command = [
        sys.executable, "-m", "bench.peer_server",
        "--config", str(config),
        "--backend", kind,
        "--url", url,
        "--port", str(port),
        "--state-dir", str(state_dir),
        "--pool-size", str(pool_size),
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"}
    )


def open_prefecture_reader(data_dir: Path, keys_file: Path) -> ResidentStore:
    """The prefectural store read-only (the prefectural server may have it open meanwhile)."""
    env = LmdbEnv(data_dir, DB_NAMES, readonly=True)
    return ResidentStore(env, MyNumberSealer(DataKeys.load(keys_file)))


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def serving_peer(kind: str, servers: Servers, home: Path) -> Iterator[None]:
    """For the harness: start peer `kind` in `home`/`kind`, load it from the run's prefectural store, start
    its front end, and register both in `servers` (the front end as `kind`, the database's process in
    `extra_pids` so that its CPU counts); everything stops on exit."""
    s = servers.settings
    workdir = home / kind
    with start_peer(kind, workdir, free_port()) as peer:
        store = open_prefecture_reader(s.data_path, s.keys_path)
        try:
            with store.reader() as tx:
                count = tx.count("records")
            with tqdm(
                total=count, desc=f"loading {kind}", unit="rec", unit_scale=True, file=sys.stderr
            ) as bar:
                load_peer(kind, peer.url, store, bar.update)
        finally:
            store.env.close()
        port = free_port()
        proc = start_front_end(
            servers.config, kind, peer.url, port, workdir / "front", log=servers.logs / f"{kind}.log"
        )
        servers.procs[kind] = proc
        servers.targets[kind] = f"{s.host}:{port}"
        servers.extra_pids[kind] = [peer.pid]
        try:
            try:
                wait_ready(s.replace(prefecture_port=port), "prefecture", "monitor/monitor-01", timeout=120)
            except TimeoutError:
                raise RuntimeError(
                    f"the {kind} front end did not start; see {servers.logs / kind}.log"
                ) from None
            yield
        finally:
            _stop_process(proc)
            with contextlib.suppress(KeyError):
                del servers.extra_pids[kind]
