"""What the national server (J-LIS) does with propagated changes (SPEC §5.4, §6.2).

A server is trusted only for what it is for (SPEC §4.2): resident changes come from
`prefectural-server/<code>`, 附票 changes from `fuhyo-server/<code>`, each for municipalities of its own
prefecture; anything else refuses the whole request before anything is stored.

Idempotent by municipality + sequence (a municipality code names its prefecture too): a change already
held is acknowledged and changes nothing, a gap is refused naming the expected sequence, and a held
sequence with other content is refused as a conflict. The national file takes each change as the
prefecture applied it (the prefecture has already run every logical check): the record after the change
replaces the one held, the previous one is kept as history; a removal marks the record removed. Resident
changes go to the national resident file, 附票 changes to the national 附票 file (附票全国サーバ), a store
of its own written by the same 附票 code as the prefectural one (`store_fuhyo_change`).
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import Message
from juki.v1 import national_pb2, prefecture_pb2, records_pb2

from server.domain.codes import is_digits, is_valid_municipality_code
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.fuhyo import store_fuhyo_change, validate_fuhyo_notice
from server.domain.limits import check_message
from server.domain.updates import REMOVALS, notice_digest, record_from_notice, validate_notice
from server.identity.pki import SpiffeId
from server.storage.fuhyo_file import FuhyoTxn
from server.storage.record_file import RecordTxn
from server.storage.residents import ResidentTxn

MAX_CHANGES = 1000
FILES = frozenset({national_pb2.CHANGE_FILE_RESIDENT, national_pb2.CHANGE_FILE_FUHYO})
# The one national file each record server feeds.
FILE_OF_ROLE = {
    "prefectural-server": national_pb2.CHANGE_FILE_RESIDENT,
    "fuhyo-server": national_pb2.CHANGE_FILE_FUHYO,
}


def validate_changes(request: national_pb2.NotifyUpdatesRequest, *, caller: SpiffeId, today: dt.date) -> None:
    """Refuse the whole request (PERMISSION_DENIED) unless every change is of the caller's own file and
    prefecture; INVALID_ARGUMENT naming every malformed field."""
    v = Violations()
    check_message(v, request, skip=frozenset({"changes"}))  # each change's notice: validate_notice below
    for i, change in enumerate(request.changes):
        check_message(v, change, f"changes[{i}]", skip=frozenset({"notice"}))
    if not is_digits(request.prefecture_code, 2):
        v.add("prefecture_code", "must be 2 ASCII digits")
    elif request.prefecture_code != caller.id:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "a server may only notify changes of its own prefecture",
            "OTHER_PREFECTURE",
        )
    own_file = FILE_OF_ROLE.get(caller.role)
    for change in request.changes:
        if own_file is None or (change.file in FILES and change.file != own_file):
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "a prefectural server notifies resident changes only, a 附票 server 附票 changes only",
                "OTHER_FILE",
            )
        code = notice_of(change)[0]
        if is_valid_municipality_code(code) and code[:2] != caller.id:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "a server may only notify changes of its own prefecture",
                "OTHER_PREFECTURE",
            )
    if not request.changes:
        v.add("changes", "at least one change")
    if len(request.changes) > MAX_CHANGES:
        v.add("changes", f"at most {MAX_CHANGES} changes per request")
    v.raise_if_any()
    for i, change in enumerate(request.changes):
        path = f"changes[{i}]"
        w = Violations()
        if change.file not in FILES:
            w.add(f"{path}.file", "required: CHANGE_FILE_RESIDENT or CHANGE_FILE_FUHYO")
        fuhyo = change.file == national_pb2.CHANGE_FILE_FUHYO
        code = notice_of(change)[0]
        if not is_valid_municipality_code(code) or code[:2] != request.prefecture_code:
            field = "fuhyo_notice.managing_municipality_code" if fuhyo else "notice.municipality_code"
            w.add(f"{path}.{field}", "must be a municipality of the notifying prefecture")
        w.raise_if_any()
        if fuhyo:
            validate_fuhyo_notice(
                change.fuhyo_notice, today=today, path=f"{path}.fuhyo_notice", local_municipalities=False
            )
        else:
            validate_notice(change.notice, today=today, path=f"{path}.notice", local_municipalities=False)


def notice_of(change: national_pb2.PropagatedChange) -> tuple[str, int, Message]:
    """(municipality code, sequence, notice) of a change: a resident change's notice, or a 附票 change's
    (its managing municipality)."""
    if change.file == national_pb2.CHANGE_FILE_FUHYO:
        fuhyo = change.fuhyo_notice
        return fuhyo.managing_municipality_code, fuhyo.sequence, fuhyo
    return change.notice.municipality_code, change.notice.sequence, change.notice


def absorb_change(tx: RecordTxn, change: national_pb2.PropagatedChange, *, received_on: str) -> bool:
    """Take one change into its national file (`tx`: the resident file's or the 附票 file's, as the change's
    file says); True when newly applied, False for a change already held."""
    stream, sequence, notice = notice_of(change)
    last = tx.last_sequence(stream)
    digest = notice_digest(tx, notice)
    expected = str(last + 1)
    if sequence <= last:
        held = tx.applied(stream, sequence)
        if held is None or held[0] != digest:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION,
                f"conflicting change: sequence already held with other content; expected sequence {expected}",
                "CONFLICTING_REPLAY",
                metadata={"expected_sequence": expected, "municipality_code": stream},
            )
        return False
    if sequence > last + 1:
        raise DomainError(
            ErrorKind.FAILED_PRECONDITION,
            f"sequence gap: expected sequence {expected}",
            "SEQUENCE_GAP",
            metadata={"expected_sequence": expected, "municipality_code": stream},
        )
    if isinstance(tx, FuhyoTxn):  # the national 附票 file takes 附票 changes only (validate_changes)
        store_fuhyo_change(tx, change.fuhyo_notice)
    else:
        assert isinstance(tx, ResidentTxn)
        _apply_resident(tx, change.notice, received_on)
    tx.set_last_sequence(stream, sequence)
    tx.record_applied(stream, sequence, digest, change.applied_at.encode())
    return True


def _apply_resident(tx: ResidentTxn, notice: prefecture_pb2.ChangeNotice, received_on: str) -> None:
    current = tx.get(notice.resident_code)
    current_number = tx.my_number(notice.resident_code) if current is not None else ""
    if notice.change_reason in REMOVALS:
        if current is None:
            return  # nothing held to mark removed
        new = records_pb2.ResidentRecord()
        new.CopyFrom(current)
        new.change_reason = notice.change_reason
        new.change_date = notice.change_date
        new.deleted_flag = True
        new.state = records_pb2.RECORD_STATE_REMOVED
        new.removed_date = notice.change_date
        new.sequence = notice.sequence
        new_number = current_number
    else:
        new = record_from_notice(notice, received_on)
        new_number = notice.my_number
    if current is not None:
        tx.add_history(current, current_number)
    tx.put_record(new, new_number)
