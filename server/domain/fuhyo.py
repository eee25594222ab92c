"""附票 rules (SPEC §3.2, §5.2): applying change notices and what a 附票 record shows.

The 附票 file stores each FuhyoRecord itself (server/storage/fuhyo_file.py) and indexes its 4情報 view the way
the resident file indexes residents, so 4情報 search folds and limits exactly as on the prefectural server.
Nothing here can hold a My Number: the record has no field for one.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from juki.v1 import fuhyo_pb2, national_pb2, prefecture_pb2, records_pb2

from server.domain import validation as val
from server.domain.codes import is_valid_municipality_code
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.finding import Condition, parse_condition
from server.domain.limits import check_message
from server.domain.updates import Applied, check_sequence, conclude, notice_digest
from server.storage.fuhyo_file import FuhyoTxn

STATE_DOMESTIC = records_pb2.FUHYO_STATE_DOMESTIC  # 附票本人確認情報状態区分: 国内
STATE_ABROAD = records_pb2.FUHYO_STATE_ABROAD  # 国外転出者: address holds the last domestic address
K = fuhyo_pb2
_PURPOSE_LENGTH = struct.Struct(">H")
_NOTICE_KIND = {
    K.FUHYO_CHANGE_KIND_CREATE: records_pb2.FUHYO_NOTICE_KIND_CREATE,
    K.FUHYO_CHANGE_KIND_MODIFY: records_pb2.FUHYO_NOTICE_KIND_MODIFY,
    K.FUHYO_CHANGE_KIND_REMOVE: records_pb2.FUHYO_NOTICE_KIND_REMOVE,
}


def validate_fuhyo_notice(
    notice: fuhyo_pb2.FuhyoNotice, *, today: dt.date, path: str = "notice", local_municipalities: bool = True
) -> None:
    """Raise INVALID_ARGUMENT naming every malformed field (a municipality of Mie unless told otherwise: the
    national server takes every prefecture's)."""
    v = Violations()
    check_message(v, notice, path)
    if local_municipalities:
        val.check_municipality(v, f"{path}.managing_municipality_code", notice.managing_municipality_code)
    elif not is_valid_municipality_code(notice.managing_municipality_code):
        v.add(f"{path}.managing_municipality_code", "must be 6 ASCII digits with a valid check digit")
    if notice.sequence < 1:
        v.add(f"{path}.sequence", "must be 1 or more")
    if notice.kind not in (
        K.FUHYO_CHANGE_KIND_CREATE,
        K.FUHYO_CHANGE_KIND_MODIFY,
        K.FUHYO_CHANGE_KIND_REMOVE,
    ):
        v.add(f"{path}.kind", "required: CREATE, MODIFY or REMOVE")
    val.check_date(v, f"{path}.change_date", notice.change_date, today=today)
    r = notice.record
    p = f"{path}.record"
    val.check_resident_code(v, f"{p}.resident_code", r.resident_code)
    if r.managing_municipality_code != notice.managing_municipality_code:
        v.add(f"{p}.managing_municipality_code", "must be the notice's managing municipality")
    if notice.kind != K.FUHYO_CHANGE_KIND_REMOVE:
        val.check_text(v, f"{p}.name_kanji", r.name_kanji, max_len=100)
        val.check_kana(v, f"{p}.name_kana", r.name_kana)
        val.check_date(v, f"{p}.birth_date", r.birth_date, today=today)
        val.check_sex(v, f"{p}.sex", r.sex)
        if r.state_kind not in (STATE_DOMESTIC, STATE_ABROAD):
            v.add(f"{p}.state_kind", "1 (domestic) or 2 (abroad)")
        abroad = r.state_kind == STATE_ABROAD
        val.check_text(v, f"{p}.address", r.address, max_len=200, required=not abroad)
        val.check_text(v, f"{p}.last_address", r.last_address, max_len=200, required=abroad)
    if r.former_resident_code:
        val.check_resident_code(v, f"{p}.former_resident_code", r.former_resident_code)
    if r.address_municipality_code and not is_valid_municipality_code(r.address_municipality_code):
        v.add(f"{p}.address_municipality_code", "must be 6 ASCII digits with a valid check digit")
    for counter in ("name_gaiji_count", "address_gaiji_count", "last_address_gaiji_count"):
        val.check_counter(v, f"{p}.{counter}", getattr(r, counter))
    v.raise_if_any()


def lives_abroad(record: records_pb2.ResidentRecord) -> bool:
    """The 4情報 view of a current 附票 record of a 国外転出者 (the only persons the link serves)."""
    return record.retention_flag and not record.deleted_flag


def fuhyo_view(record: records_pb2.ResidentRecord) -> fuhyo_pb2.FuhyoView:
    info = record.four_info
    return fuhyo_pb2.FuhyoView(
        resident_code=record.resident_code,
        name_kanji=info.name_kanji,
        name_kana=info.name_kana,
        birth_date=info.birth_date,
        sex=info.sex,
        address=info.address,
        abroad=record.retention_flag,
        state=records_pb2.RECORD_STATE_REMOVED if record.deleted_flag else records_pb2.RECORD_STATE_ACTIVE,
    )


def _refuse(kind: ErrorKind, message: str, reason: str) -> DomainError:
    return DomainError(kind, message, reason=reason)


def apply_fuhyo_notice(
    tx: FuhyoTxn,
    notice: fuhyo_pb2.FuhyoNotice,
    *,
    caller_municipality: str,
    now: Callable[[], dt.datetime],
) -> Applied:
    """Apply one validated 附票 notice inside a write transaction, or raise and write nothing."""
    if notice.managing_municipality_code != caller_municipality:
        raise _refuse(
            ErrorKind.PERMISSION_DENIED,
            "a municipal CS may only send notices it manages",
            "OTHER_MUNICIPALITY",
        )
    digest = notice_digest(tx, notice)
    first = check_sequence(tx, notice.managing_municipality_code, notice.sequence, digest)
    if first is not None:
        return Applied(first, replayed=True)
    code = notice.record.resident_code
    current = tx.get(code)
    kind = notice.kind
    ours = current is not None and current.municipality_code == caller_municipality
    if kind != K.FUHYO_CHANGE_KIND_CREATE and not ours:
        # unknown, or managed by another municipality: one answer, so that codes cannot be tested
        raise _refuse(
            ErrorKind.NOT_FOUND, "no 附票 record this municipality manages with this code", "NO_RECORD"
        )
    if current is not None and not ours and not current.deleted_flag:
        raise _refuse(
            ErrorKind.PERMISSION_DENIED, "the record is managed by another municipality", "OTHER_MUNICIPALITY"
        )
    if kind == K.FUHYO_CHANGE_KIND_CREATE and current is not None and not current.deleted_flag:
        raise _refuse(
            ErrorKind.ALREADY_EXISTS, "the resident code is held by an active 附票 record", "ACTIVE_CODE"
        )
    if kind != K.FUHYO_CHANGE_KIND_CREATE:
        assert current is not None
        if current.deleted_flag:
            raise _refuse(
                ErrorKind.FAILED_PRECONDITION, "the 附票 record is already removed", "ALREADY_REMOVED"
            )
    applied_at = now()
    store_fuhyo_change(tx, notice)
    result = prefecture_pb2.ApplyResult(
        municipality_code=notice.managing_municipality_code,
        sequence=notice.sequence,
        resident_code=code,
        applied_at=applied_at.isoformat(timespec="milliseconds"),
    )
    conclude(tx, result, digest)
    change = national_pb2.PropagatedChange(
        file=national_pb2.CHANGE_FILE_FUHYO, fuhyo_notice=notice, applied_at=result.applied_at
    )
    tx.enqueue_outbox(change.SerializeToString(), int(applied_at.timestamp() * 1000))
    return Applied(result, replayed=False)


def store_fuhyo_change(tx: FuhyoTxn, notice: fuhyo_pb2.FuhyoNotice) -> None:
    """Write one checked 附票 change into a 附票 file (the prefectural one, or the national one taking the
    change as the prefecture applied it): the record itself with its 通知区分 and change date, the previous
    version as history; a removal marks the record removed (nothing held: nothing to mark)."""
    code = notice.record.resident_code
    held = tx.get_fuhyo(code)
    record = records_pb2.FuhyoRecord()
    if notice.kind == K.FUHYO_CHANGE_KIND_REMOVE:
        if held is None:
            return
        record.CopyFrom(held)
    else:
        record.CopyFrom(notice.record)
    record.change_date = notice.change_date
    record.notice_kind = _NOTICE_KIND[notice.kind]  # 通知区分
    if held is not None:
        tx.add_history(held)
    tx.put(record)


def parse_fuhyo_condition(request: Any, *, today: dt.date) -> Condition:
    """The condition of a query of a 附票 file (its `key` oneof, with its request id checked): by
    住民票コード or 4情報 only, since a 附票 file holds no My Number to look by."""
    kind = request.WhichOneof("key")
    v = Violations()
    check_message(v, request)
    if kind == "my_number":
        v.add("my_number", "the 附票 file holds no My Number: ask by resident_code or four_info")
    val.check_request_id(v, "request_id", request.request_id)
    v.raise_if_any()
    return parse_condition(kind, request.resident_code, "", request.four_info, today=today)


def held_answer(purpose: str, answer: fuhyo_pb2.FuhyoProvideResponse) -> bytes:
    """What the temporary area holds for a provision with My Number: its purpose (a redelivery must state
    the same one) and the answer, purpose length-prefixed."""
    raw = purpose.encode("utf-8")
    return _PURPOSE_LENGTH.pack(len(raw)) + raw + answer.SerializeToString()


def parse_held(payload: bytes) -> tuple[str, fuhyo_pb2.FuhyoProvideResponse]:
    """(purpose, answer) of a payload made by `held_answer`."""
    (length,) = _PURPOSE_LENGTH.unpack_from(payload)
    start = _PURPOSE_LENGTH.size + length
    answer = fuhyo_pb2.FuhyoProvideResponse()
    answer.ParseFromString(payload[start:])
    return payload[_PURPOSE_LENGTH.size : start].decode("utf-8"), answer
