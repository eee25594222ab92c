"""Property-based tests over every request message of every service (issue 12, "also deliver").

Hypothesis mutates each method's base request (tests/requests_catalogue.py): any field at any depth set to
strings of every kind (control characters, kana that NFKC expands, full-width digits, up to 70,000
characters), any integer of the field's type, undefined enum values, plus unknown fields; and it sends raw
bytes. Whatever comes back:
  * only documented codes (never UNKNOWN, INTERNAL, UNIMPLEMENTED, nor a call that hangs),
  * no internals in the message or the trailers (class names, paths, tracebacks, library messages),
  * every INVALID_ARGUMENT carries a google.rpc.BadRequest,
  * a refused call changes no store (prefectural, national, 附票, registry),
  * the three servers stay up.

Bounded for `make test`: FUZZ_EXAMPLES examples per method (default 20), no deadline per example. A longer
run: FUZZ_EXAMPLES=400 .venv/bin/pytest -q tests/test_fuzz_requests.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.domain.limits import max_bytes
from server.identity.pki import Pki
from server.storage import registry
from server.storage.fuhyo_file import DB_NAMES as FUHYO_DB_NAMES
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES
from tests.conftest import Server, make_server
from tests.requests_catalogue import CODE, METHODS, NUMBER, POLICE_PURPOSE, Callers, Method, put, target

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAVAILABLE,  # J-LIS or the prefectural server could not be asked
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # the message cap, per-caller limits
}
LEAKS = ("Traceback", "<class", "ValueError", "OverflowError", "DecodeError", "KeyError", "Exception",
         ".py", "lmdb", "google.protobuf", "Unexpected", "/work/", "/tmp/")  # fmt: skip
NO_MUTATION = {"sequence"}  # notices keep a sequence no municipality reaches: nothing is ever applied
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("fuzz"), pki_dir, seeded=200, elsewhere=20, with_fuhyo=True)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def callers(deployment: Server) -> Callers:
    return Callers(deployment)


# --- what the stores hold ------------------------------------------------------------------------------

_TABLES = (
    "records",
    "history",
    "applied",
    "sequences",
    "my_number_index",
    "outbox",
    "idx_name",
    "idx_address",
)


def store_counts(server: Server) -> dict[str, int]:
    s = server.settings
    stores = {
        "prefecture": (s.data_path, (*DB_NAMES, *registry.DB_NAMES)),
        "national": (s.path(s.national_data_dir), DB_NAMES),
        "fuhyo": (s.path(s.fuhyo_data_dir), (*FUHYO_DB_NAMES, *registry.DB_NAMES)),
    }
    counts: dict[str, int] = {}
    for name, (path, dbs) in stores.items():
        env = LmdbEnv(path, dbs, readonly=True)
        try:
            with env.read() as txn:
                tables = (*_TABLES, *(d for d in dbs if d not in DB_NAMES and d not in _TABLES))
                for db in (d for d in tables if d in env.dbs):  # the 附票 file has no My Number index
                    counts[f"{name}.{db}"] = int(txn.stat(env.dbs[db])["entries"])
        finally:
            env.close()
    return counts


# --- what is sent ----------------------------------------------------------------------------------------

_STRINGS = st.one_of(
    st.text(max_size=24),
    st.text(alphabet="0123456789０１２", max_size=14),
    st.text(alphabet="アイウエオガパッャ㌀㌖ｱｶﾞ　 ーあ・", max_size=120),
    st.text(alphabet="三重県津市広明町𠮷\x00\x1b\n\t\u202e\u200b\ue000", max_size=220),
    st.sampled_from(["", "2020-01-02", "2026-13", "0000-01", "２０２６-０１", "2020-02-30", "24", "242012",
                     "spiffe://juki.mie/agency/police", "spiffe://juki.osaka/agency/police", "identity-check",
                     POLICE_PURPOSE, CODE, NUMBER, "Prefecture.Lookup", "2020-01-03T09:30:00+09:00"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "三", "1", "\x00", "㌀"]), st.integers(0, 70_000)),
)  # fmt: skip
_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def value_of(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.builds(lambda n: b"\x00" * n, st.integers(0, 70_000)))
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)
    low, high = _RANGES[fd.cpp_type]
    return st.one_of(st.integers(low, high), st.integers(max(low, -2), min(high, 1002)))


def scalar_fields(descriptor: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, FieldDescriptor]]:
    for fd in descriptor.fields:
        name = prefix + fd.name + ("[0]" if fd.is_repeated else "")
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 4 and fd.message_type is not None:
                yield from scalar_fields(fd.message_type, name + ".", depth + 1)
        elif fd.name not in NO_MUTATION:
            yield name, fd


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_UNKNOWN = st.builds(
    lambda number, data: _varint(number << 3 | 2) + _varint(len(data)) + data,
    st.integers(100, 10_000),
    st.one_of(st.binary(max_size=32), st.just(NUMBER.encode())),
)


def mutations(method: Method) -> st.SearchStrategy[Message]:
    fields = list(scalar_fields(method.request_type))

    @st.composite
    def build(draw: Any) -> Message:
        request = method.base()
        if fields:
            for path, fd in draw(st.lists(st.sampled_from(fields), max_size=4, unique_by=lambda f: f[0])):
                try:
                    put(request, path, draw(value_of(fd)))
                except (ValueError, TypeError):  # e.g. a string no protobuf string can hold (lone surrogate)
                    continue
        for extra in draw(st.lists(_UNKNOWN, max_size=2)):
            request.MergeFromString(extra)
        return request

    return build()


# --- what comes back -------------------------------------------------------------------------------------


def assert_documented(error: grpc.RpcError) -> None:
    code = error.code()
    assert code in DOCUMENTED, f"{code}: {error.details()}"
    trailing: Any = error.trailing_metadata() or ()
    text = (error.details() or "") + repr(trailing)
    for leak in LEAKS:
        assert leak not in text, leak
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        statuses = [status_pb2.Status.FromString(v) for k, v in trailing if k == "grpc-status-details-bin"]
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) and bad.field_violations for s in statuses for d in s.details), (
            "no BadRequest"
        )


def send(callers: Callers, method: Method, request: Message) -> grpc.RpcError | None:
    try:
        callers.call(method, request)
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the call hung"
        return error
    return None


def ping_all(callers: Callers) -> None:
    for service, identity in (("Prefecture", "monitor/monitor-01"), ("Fuhyo", "monitor/monitor-01"),
                              ("National", "monitor/monitor-01")):  # fmt: skip
        callers.stub(service, identity).Ping(prefecture_pb2.PingRequest(), timeout=5)


def method_id(method: Method) -> str:
    record = method.kind == "reconcile" and method.base().WhichOneof("part") == "record"
    return method.full + ("-record" if record else "")


IDS = [method_id(m) for m in METHODS]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_generated_requests_get_documented_answers_and_refusals_store_nothing(
    deployment: Server, callers: Callers, method: Method
) -> None:
    @FUZZ
    @given(request=mutations(method))
    def check(request: Message) -> None:
        before = store_counts(deployment)
        error = send(callers, method, request)
        if error is not None:
            assert_documented(error)
            assert store_counts(deployment) == before, "a refused call changed a store"

    check()
    ping_all(callers)


def raw_call(server: Server, method: Method) -> Any:
    channel = secure_channel(Pki(server.settings.pki_path), method.identity, target(server, method.service))
    server._channels.append(channel)
    path = f"/juki.v1.{method.service}/{method.name}"
    if method.kind == "unary":
        return channel.unary_unary(path)
    if method.kind == "notices":
        unary_stream: Any = channel.stream_unary(path)
        return lambda payload, timeout: unary_stream(iter([payload]), timeout=timeout)
    bidi: Any = channel.stream_stream(path)
    return lambda payload, timeout: list(bidi(iter([payload, payload]), timeout=timeout))


@pytest.mark.parametrize("method", [m for m in METHODS if m.kind != "reconcile" or m is METHODS[7]],
                         ids=lambda m: m.full)  # fmt: skip
def test_raw_bytes_get_documented_answers(deployment: Server, callers: Callers, method: Method) -> None:
    call = raw_call(deployment, method)
    base = method.base().SerializeToString()

    @FUZZ
    @given(payload=st.one_of(st.binary(max_size=256), st.builds(lambda cut, tail: base[:cut] + tail,
                             st.integers(0, len(base)), st.binary(max_size=16))))  # fmt: skip
    def check(payload: bytes) -> None:
        before = store_counts(deployment)
        try:
            call(payload, timeout=10)
        except grpc.RpcError as error:
            assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the call hung"
            assert_documented(error)
            assert store_counts(deployment) == before, "a refused call changed a store"

    check()
    ping_all(callers)


def test_the_audit_trails_verify_after_the_fuzz(deployment: Server) -> None:
    """Every call above left its entry; the chains and checkpoints of the three trails still verify."""
    trails = [("--server", "prefecture"), ("--server", "national"), ("--server", "fuhyo")]
    for where in trails:  # --live: the servers are running, the last interval's entries not yet witnessed
        done = subprocess.run(
            [sys.executable, "-m", "clients", "--config", str(deployment.config), "audit", "verify", "--live",
             *where],
            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_stored_record_is_within_the_documented_bound(deployment: Server) -> None:
    """What was accepted is bounded by the schema: no record in any store is larger than docs/limits.md
    says a record can be."""
    s = deployment.settings
    record_bound = max_bytes(records_pb2.ResidentRecord.DESCRIPTOR)
    stores = [
        (s.data_path, DB_NAMES, {"records": record_bound}),
        (s.path(s.national_data_dir), DB_NAMES, {"records": record_bound}),
        (s.path(s.fuhyo_data_dir), FUHYO_DB_NAMES,
         {"records": max_bytes(records_pb2.FuhyoRecord.DESCRIPTOR)}),
    ]  # fmt: skip
    for path, dbs, bounds in stores:
        env = LmdbEnv(path, dbs, readonly=True)
        try:
            with env.read() as txn:
                for db, bound in bounds.items():
                    with txn.cursor(db=env.dbs[db]) as cursor:
                        assert max((len(v) for _, v in cursor), default=0) <= bound, (path, db)
        finally:
            env.close()
