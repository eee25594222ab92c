"""Building change notices for tests (synthetic residents only)."""

from __future__ import annotations

import itertools
from typing import Any

from juki.v1 import fuhyo_pb2, prefecture_pb2, records_pb2

from server.domain.codes import my_number_check_digit

R = records_pb2
REMOVALS = {R.CHANGE_REASON_TENSHUTSU, R.CHANGE_REASON_SHIBOU, R.CHANGE_REASON_SHOKKEN_SHOJO}
_serial = itertools.count(1)


def my_number(n: int) -> str:
    first = f"{7 * 10**10 + n:011d}"
    return first + str(my_number_check_digit(first))


def new_code(n: int) -> str:
    return f"9{n:010d}"


class Municipality:
    """A municipal CS sending notices with consecutive sequence numbers."""

    def __init__(self, code: str, start: int = 1) -> None:
        self.code = code
        self.next_sequence = start

    def notice(self, resident_code: str, reason: int, **changes: Any) -> prefecture_pb2.ChangeNotice:
        """The next notice; `changes` override the defaults (four_info fields by name)."""
        info_fields = {"name_kanji", "name_kana", "birth_date", "sex", "address"}
        info = {
            "name_kanji": "三重　花子",
            "name_kana": "ミエ　ハナコ",
            "birth_date": "1990-04-01",
            "sex": R.SEX_FEMALE,
            "address": "三重県津市広明町13番地",
        }
        info.update({k: v for k, v in changes.items() if k in info_fields})
        other = {k: v for k, v in changes.items() if k not in info_fields}
        notice = prefecture_pb2.ChangeNotice(
            municipality_code=self.code,
            sequence=self.next_sequence,
            resident_code=resident_code,
            change_reason=reason,
            change_date=other.pop("change_date", "2024-05-01"),
            four_info=R.FourInfo(**info),
            my_number=other.pop("my_number", ""),
            operator_id="op-7",
            terminal_id="t-1",
            **other,
        )
        if reason in REMOVALS and not (changes.keys() & (info_fields | {"my_number"})):
            notice.ClearField("four_info")  # a removal may name only the resident
        self.next_sequence += 1
        return notice


def fresh_resident() -> tuple[str, str]:
    """A resident code and My Number no other test uses."""
    n = next(_serial)
    return new_code(n), my_number(n)


class FuhyoMunicipality:
    """A municipal CS sending 附票 notices (it manages the records) with consecutive sequence numbers."""

    def __init__(self, code: str, start: int = 1) -> None:
        self.code = code
        self.next_sequence = start

    def notice(self, resident_code: str, kind: int, **changes: Any) -> fuhyo_pb2.FuhyoNotice:
        """The next notice; `changes` override the record's items by name."""
        record = R.FuhyoRecord(
            resident_code=resident_code,
            name_kanji="附票　花子",
            name_kana="フヒョウ　ハナコ",
            birth_date="1980-01-01",
            sex=R.SEX_FEMALE,
            address_municipality_code=self.code,
            address="三重県尾鷲市中央町10番地",
            managing_municipality_code=self.code,
            state_kind=R.FUHYO_STATE_DOMESTIC,
        )
        for name, value in changes.items():
            setattr(record, name, value)
        notice = fuhyo_pb2.FuhyoNotice(
            managing_municipality_code=self.code,
            sequence=self.next_sequence,
            kind=kind,
            change_date="2024-05-01",
            record=record,
        )
        self.next_sequence += 1
        return notice
