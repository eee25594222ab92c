"""Applying change notices from a 市町村CS (SPEC §6.1).

`validate_notice` checks every field before anything is read; `apply_notice` runs inside one write
transaction: it checks the sequence and every logical rule first and writes only when all pass, so a
refused notice leaves no trace and an applied one is whole (record, history, indexes, sequence, outbox).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from juki.v1 import national_pb2, prefecture_pb2, records_pb2

from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.limits import check_message
from server.storage.record_file import RecordTxn
from server.storage.residents import ResidentTxn

R = records_pb2
CREATIONS = frozenset({R.CHANGE_REASON_TENNYU, R.CHANGE_REASON_SHUSSEI, R.CHANGE_REASON_SHOKKEN_KISAI})
REMOVALS = frozenset({R.CHANGE_REASON_TENSHUTSU, R.CHANGE_REASON_SHIBOU, R.CHANGE_REASON_SHOKKEN_SHOJO})
MODIFICATIONS = frozenset(
    {
        R.CHANGE_REASON_TENKYO,
        R.CHANGE_REASON_SHIMEI_HENKO,
        R.CHANGE_REASON_KOJIN_BANGO_HENKO,
        R.CHANGE_REASON_SHOKKEN_SHUSEI,
    }
)

# The items of a record, grouped by what a change reason may touch.
ADDRESS_ITEMS = ("address", "address_gaiji_count", "address_gaiji_change_seq", "oaza_code")
NAME_ITEMS = ("name_kanji", "name_kana", "name_gaiji_count", "name_gaiji_change_seq", "former_surname")
IDENTITY_ITEMS = ("birth_date", "sex", "my_number")
ALL_ITEMS = ADDRESS_ITEMS + NAME_ITEMS + IDENTITY_ITEMS
MAY_CHANGE: dict[int, frozenset[str]] = {
    R.CHANGE_REASON_TENKYO: frozenset(ADDRESS_ITEMS),
    R.CHANGE_REASON_SHIMEI_HENKO: frozenset(NAME_ITEMS),
    R.CHANGE_REASON_KOJIN_BANGO_HENKO: frozenset({"my_number"}),
    R.CHANGE_REASON_SHOKKEN_SHUSEI: frozenset(ALL_ITEMS),
}


@dataclass(frozen=True)
class Applied:
    result: prefecture_pb2.ApplyResult
    replayed: bool


def notice_digest(tx: RecordTxn, notice: Message) -> bytes:
    """The keyed digest of a notice that `applied` keeps for idempotent replay: HMAC (the store's key) of
    its SHA-256. A notice carries a My Number, and everything else in it is in clear in the store: a plain
    hash would give the number away to brute force."""
    return tx.keyed_digest(hashlib.sha256(notice.SerializeToString(deterministic=True)).digest())


def validate_notice(
    notice: prefecture_pb2.ChangeNotice,
    *,
    today: dt.date,
    path: str = "notice",
    local_municipalities: bool = True,
) -> None:
    """Raise INVALID_ARGUMENT naming every malformed field (a municipality of Mie unless told otherwise)."""
    v = Violations()
    check_message(v, notice, path)
    if local_municipalities:
        val.check_municipality(v, f"{path}.municipality_code", notice.municipality_code)
    if notice.sequence < 1:
        v.add(f"{path}.sequence", "must be 1 or more")
    val.check_resident_code(v, f"{path}.resident_code", notice.resident_code)
    reason = notice.change_reason
    if reason not in CREATIONS | REMOVALS | MODIFICATIONS:
        v.add(f"{path}.change_reason", "required: a known change reason")
    val.check_date(v, f"{path}.change_date", notice.change_date, today=today)
    carries_items = notice.HasField("four_info") or bool(notice.my_number)
    if reason not in REMOVALS or carries_items:
        if not notice.HasField("four_info"):
            v.add(f"{path}.four_info", "required for this change reason")
        else:
            val.check_four_info(v, f"{path}.four_info", notice.four_info, today=today)
        val.check_my_number(v, f"{path}.my_number", notice.my_number)
    birth = val.parse_date(notice.four_info.birth_date)
    change = val.parse_date(notice.change_date)
    if birth and change and change < birth:
        v.add(f"{path}.change_date", "must not be before the date of birth")
    val.check_oaza(v, f"{path}.oaza_code", notice.oaza_code)
    val.check_ascii_id(v, f"{path}.operator_id", notice.operator_id)
    val.check_ascii_id(v, f"{path}.terminal_id", notice.terminal_id)
    val.check_timestamp(v, f"{path}.timestamp", notice.timestamp)
    for counter in (
        "name_gaiji_count",
        "address_gaiji_count",
        "name_gaiji_change_seq",
        "address_gaiji_change_seq",
    ):
        val.check_counter(v, f"{path}.{counter}", getattr(notice, counter))
    if notice.HasField("former_surname"):
        val.check_former_surname(v, f"{path}.former_surname", notice.former_surname)
    v.raise_if_any()


def _items(record: records_pb2.ResidentRecord, my_number: str) -> dict[str, object]:
    info = record.four_info
    return {
        "address": info.address,
        "address_gaiji_count": record.address_gaiji_count,
        "address_gaiji_change_seq": record.address_gaiji_change_seq,
        "oaza_code": record.oaza_code,
        "name_kanji": info.name_kanji,
        "name_kana": info.name_kana,
        "name_gaiji_count": record.name_gaiji_count,
        "name_gaiji_change_seq": record.name_gaiji_change_seq,
        "former_surname": record.former_surname.SerializeToString(deterministic=True)
        if record.HasField("former_surname")
        else b"",
        "birth_date": info.birth_date,
        "sex": info.sex,
        "my_number": my_number,
    }


def record_from_notice(notice: prefecture_pb2.ChangeNotice, applied_on: str) -> records_pb2.ResidentRecord:
    record = records_pb2.ResidentRecord(
        resident_code=notice.resident_code,
        name_gaiji_count=notice.name_gaiji_count,
        address_gaiji_count=notice.address_gaiji_count,
        change_reason=notice.change_reason,
        change_date=notice.change_date,
        retention_flag=notice.retention_flag,
        municipality_code=notice.municipality_code,
        oaza_code=notice.oaza_code,
        operator_id=notice.operator_id,
        terminal_id=notice.terminal_id,
        timestamp=notice.timestamp,
        notified_date=applied_on,
        gaiji_flag=notice.gaiji_flag,
        deleted_flag=False,
        sequence=notice.sequence,
        name_gaiji_change_seq=notice.name_gaiji_change_seq,
        address_gaiji_change_seq=notice.address_gaiji_change_seq,
        state=records_pb2.RECORD_STATE_ACTIVE,
    )
    record.four_info.CopyFrom(notice.four_info)
    if notice.HasField("former_surname"):
        record.former_surname.CopyFrom(notice.former_surname)
    return record


def _refuse(kind: ErrorKind, message: str, reason: str, **metadata: str) -> DomainError:
    return DomainError(kind, message, reason=reason, metadata=dict(metadata))


def check_sequence(
    tx: RecordTxn, municipality_code: str, sequence: int, digest: bytes
) -> prefecture_pb2.ApplyResult | None:
    """The first result of a replayed notice, None for the next notice; refuses gaps and conflicts."""
    last = tx.last_sequence(municipality_code)
    expected = str(last + 1)
    if sequence == last + 1:
        return None
    if sequence > last + 1:
        raise _refuse(
            ErrorKind.FAILED_PRECONDITION,
            f"sequence gap: expected sequence {expected}",
            "SEQUENCE_GAP",
            expected_sequence=expected,
        )
    applied = tx.applied(municipality_code, sequence)
    if applied is None or applied[0] != digest:
        raise _refuse(
            ErrorKind.FAILED_PRECONDITION,
            f"conflicting replay: sequence already applied with other content; expected sequence {expected}",
            "CONFLICTING_REPLAY",
            expected_sequence=expected,
        )
    result = prefecture_pb2.ApplyResult()
    result.ParseFromString(applied[1])
    return result


def conclude(tx: RecordTxn, result: prefecture_pb2.ApplyResult, digest: bytes) -> None:
    """The notice is applied: move the municipality's sequence and keep its first result for replays."""
    tx.set_last_sequence(result.municipality_code, result.sequence)
    tx.record_applied(result.municipality_code, result.sequence, digest, result.SerializeToString())


def no_resident_here() -> DomainError:
    """A change of a resident the municipality does not hold: the same answer whether the code is unknown
    or another municipality's resident, so that a municipal CS cannot test codes (SPEC §4.2)."""
    return _refuse(ErrorKind.NOT_FOUND, "no resident of this municipality with this code", "NO_RECORD")


def _check_my_number_free(tx: ResidentTxn, my_number: str, resident_code: str) -> None:
    holder = tx.code_by_my_number(my_number)
    if holder is not None and holder != resident_code:
        raise _refuse(
            ErrorKind.ALREADY_EXISTS, "this My Number is held by another resident", "MY_NUMBER_HELD"
        )


def apply_notice(
    tx: ResidentTxn,
    notice: prefecture_pb2.ChangeNotice,
    *,
    caller_municipality: str,
    now: Callable[[], dt.datetime],
) -> Applied:
    """Apply one validated notice inside a write transaction, or raise and write nothing."""
    if notice.municipality_code != caller_municipality:
        raise _refuse(
            ErrorKind.PERMISSION_DENIED,
            "a municipal CS may only send notices of its own municipality",
            "OTHER_MUNICIPALITY",
        )
    digest = notice_digest(tx, notice)
    first = check_sequence(tx, notice.municipality_code, notice.sequence, digest)
    if first is not None:
        return Applied(first, replayed=True)

    current = tx.get(notice.resident_code)
    reason = notice.change_reason
    ours = current is not None and current.municipality_code == notice.municipality_code
    if reason not in CREATIONS and not ours:
        raise no_resident_here()  # unknown, or another municipality's: the caller may not tell which
    if current is not None and not ours and not current.deleted_flag:
        raise _refuse(
            ErrorKind.PERMISSION_DENIED, "the resident belongs to another municipality", "OTHER_MUNICIPALITY"
        )
    current_number = tx.my_number(notice.resident_code) if current is not None else ""
    applied_at = now()
    if reason in CREATIONS:
        if current is not None and not current.deleted_flag:
            raise _refuse(
                ErrorKind.ALREADY_EXISTS, "the resident code is held by an active record", "ACTIVE_CODE"
            )
        _check_my_number_free(tx, notice.my_number, notice.resident_code)
        new = record_from_notice(notice, applied_at.date().isoformat())
        new_number = notice.my_number
    else:
        assert current is not None
        if current.deleted_flag:
            raise _refuse(ErrorKind.FAILED_PRECONDITION, "the record is already removed", "ALREADY_REMOVED")
        before = _items(current, current_number)
        if reason in REMOVALS:
            if notice.HasField("four_info") or notice.my_number:
                changed = _changed(before, notice)
                if changed:
                    raise _refuse(
                        ErrorKind.FAILED_PRECONDITION,
                        "a removal may not change items: " + ", ".join(changed),
                        "ITEMS_CHANGED",
                    )
            new = records_pb2.ResidentRecord()
            new.CopyFrom(current)
            new.change_reason = reason
            new.change_date = notice.change_date
            new.deleted_flag = True
            new.state = records_pb2.RECORD_STATE_REMOVED
            new.removed_date = notice.change_date
            new.sequence = notice.sequence
            new.notified_date = applied_at.date().isoformat()
            new.operator_id = notice.operator_id
            new.terminal_id = notice.terminal_id
            new.timestamp = notice.timestamp
            new_number = current_number
        else:
            not_allowed = [item for item in _changed(before, notice) if item not in MAY_CHANGE[reason]]
            if not_allowed:
                raise _refuse(
                    ErrorKind.FAILED_PRECONDITION,
                    f"{records_pb2.ChangeReason.Name(reason)} may not change: " + ", ".join(not_allowed),
                    "ITEMS_CHANGED",
                )
            _check_my_number_free(tx, notice.my_number, notice.resident_code)
            new = record_from_notice(notice, applied_at.date().isoformat())
            new_number = notice.my_number

    if current is not None:
        tx.add_history(current, current_number)
    tx.put_record(new, new_number)
    result = prefecture_pb2.ApplyResult(
        municipality_code=notice.municipality_code,
        sequence=notice.sequence,
        resident_code=notice.resident_code,
        change_reason=reason,
        applied_at=applied_at.isoformat(timespec="milliseconds"),
    )
    conclude(tx, result, digest)
    change = national_pb2.PropagatedChange(
        file=national_pb2.CHANGE_FILE_RESIDENT, notice=notice, applied_at=result.applied_at
    )
    tx.enqueue_outbox(change, int(applied_at.timestamp() * 1000))
    return Applied(result, replayed=False)


def _changed(before: dict[str, object], notice: prefecture_pb2.ChangeNotice) -> list[str]:
    probe = record_from_notice(notice, "")
    after = _items(probe, notice.my_number)
    return [item for item in ALL_ITEMS if before[item] != after[item]]
