"""Issue 12 item 3: whatever passes validation is storable (LMDB keys are at most 511 bytes), and whatever
the store could not hold is INVALID_ARGUMENT with field violations — never UNKNOWN or INTERNAL.

An address of 168 or 200 kanji (the 200-character rule allows them), a kana name that NFKC expands past a
key's size (43 and 100 × "㌀", each folding to 4 katakana), an empty resident code reached through
Reconcile, an empty operator id in RevokeOperator. After each, the store is consistent: one record and one
entry per 4情報 index for every resident, and the person is found again by Lookup and by Search.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.identity.pki import Pki
from server.storage.residents import ADDRESS_KEY_BYTES, MAX_KEY_BYTES, prepare_resident
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident

P, R = prefecture_pb2, records_pb2
TSU = "242012"
OPERATOR = "operator/op-0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("storable"), pki_dir, seeded=200, with_national=False)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def town(server: Server) -> Municipality:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return Municipality(TSU, start=tx.last_sequence(TSU) + 1)
    finally:
        store.env.close()


def counts(server: Server) -> dict[str, int]:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return {db: tx.count(db) for db in ("records", "idx_name", "idx_birth", "idx_address")}
    finally:
        store.env.close()


def assert_consistent(server: Server) -> None:
    """One entry per record in each 4情報 index (a record whose keys could not be written has none)."""
    held = counts(server)
    assert held["idx_name"] == held["idx_birth"] == held["idx_address"] == held["records"], held


LONG = [
    ("address-168-kanji", {"address": "三重県津市" + "広" * 163}),
    ("address-200-kanji", {"address": "三" * 200}),
    ("kana-43-squared", {"name_kana": "㌀" * 43}),
    ("kana-100-squared", {"name_kana": "㌀" * 100}),
    ("both", {"name_kana": "ア" * 100, "address": "鳥" * 200, "name_kanji": "漢" * 100}),
]


@pytest.mark.parametrize("items", [c[1] for c in LONG], ids=[c[0] for c in LONG])
def test_the_longest_valid_names_and_addresses_are_stored_and_found(
    server: Server, town: Municipality, items: dict[str, str]
) -> None:
    code, number = fresh_resident()
    before = counts(server)
    notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2020-01-02", **items)
    stub = server.stub(f"municipal-cs/{TSU}")
    assert not stub.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10).replayed
    assert counts(server)["records"] == before["records"] + 1
    assert_consistent(server)

    operator = server.stub(OPERATOR)
    view = operator.Lookup(P.LookupRequest(resident_code=code, purpose="identity-check"), timeout=10).record
    assert (view.address, view.name_kana) == (notice.four_info.address, notice.four_info.name_kana)
    by_address = P.SearchRequest(
        address_prefix=notice.four_info.address, sex=R.SEX_FEMALE, purpose="identity-check"
    )
    assert code in [r.resident_code for r in operator.Search(by_address, timeout=10).results]
    by_name = P.SearchRequest(
        name_kana=notice.four_info.name_kana, birth_date="2020-01-02", purpose="identity-check"
    )
    assert code in [r.resident_code for r in operator.Search(by_name, timeout=10).results]


def test_an_empty_resident_code_through_reconcile_is_invalid_argument(server: Server) -> None:
    every = [P.RangeDigest(prefix=str(d), digest=b"x") for d in range(10)]
    first = P.ReconcileRequest(ranges=P.ReconcileRanges(municipality_code=TSU, prefix_length=1, ranges=every))
    before = counts(server)
    for code in ("", "１２３４５６７８９０１", "1" * 600):
        record = P.ReconcileRequest(record=R.ResidentRecord(resident_code=code, municipality_code=TSU))
        with pytest.raises(grpc.RpcError) as info:
            list(server.stub(f"municipal-cs/{TSU}").Reconcile(iter([first, record]), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "record.resident_code" in {field for field, _ in error_details(info.value)[0]}
    assert counts(server) == before
    # the server goes on: a well-formed Reconcile ends with its summary
    answers = list(server.stub(f"municipal-cs/{TSU}").Reconcile(iter([first]), timeout=30))
    assert answers[-1].WhichOneof("part") == "summary"


@pytest.mark.parametrize("operator_id", ["", "x" * 600, "op\x00"])
def test_revoking_an_operator_id_that_cannot_be_one_is_invalid_argument(
    server: Server, operator_id: str
) -> None:
    channel = secure_channel(
        Pki(server.settings.pki_path), "admin/admin-01", server.settings.prefecture_target
    )
    server._channels.append(channel)
    admin: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as info:
        admin.RevokeOperator(
            admin_pb2.RevokeOperatorRequest(operator_id=operator_id, reason="left"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error_details(info.value)[0]} == {"operator_id"}


@pytest.mark.parametrize(
    ("kana", "address"),
    [("㌖" * 100, "𠮷" * 200), ("ア" * 100, "三" * 200), ("ミエ", "三" * 163 + "ab")],
    ids=["beyond-any-rule", "longest-valid", "fits-exactly"],
)
def test_index_keys_fit_lmdb_by_construction(kana: str, address: str) -> None:
    record = R.ResidentRecord(resident_code="90000000001", municipality_code=TSU)
    record.four_info.CopyFrom(
        R.FourInfo(name_kana=kana, birth_date="2000-01-01", sex=R.SEX_MALE, address=address)
    )
    _, (name, birth, by_address, name_address, _, municipality) = prepare_resident(record, "")
    assert all(len(key) <= MAX_KEY_BYTES for key in (name, birth, by_address, name_address, municipality))
    assert name_address.startswith(name.split(b"\x00")[0] + b"\x00" + bytes((R.SEX_MALE,)))
    assert name_address.split(b"\x00")[1][1:].decode()  # its address cut at a character boundary too
    if len(address.encode()) <= ADDRESS_KEY_BYTES:  # a key that fitted before is the same key
        assert by_address == address.encode() + b"\x00" + b"90000000001"
    assert by_address.split(b"\x00")[0].decode()  # cut at a character boundary: still UTF-8
    assert name.split(b"\x00")[0].decode()
