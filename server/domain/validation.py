"""Field checks at the boundary: every request is validated whole before anything is read or written."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from juki.v1 import admin_pb2, records_pb2

from server.domain.codes import (
    MIE_MUNICIPALITIES,
    is_valid_municipality_code,
    is_valid_my_number,
    is_valid_resident_code,
)
from server.domain.errors import Violations
from server.domain.kana import is_kana_text
from server.domain.limits import check_message

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 3339 date-time (ASCII digits only; Python's fromisoformat alone accepts far more of ISO 8601).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_ASCII_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_LONG_DIGIT_RUN = re.compile(r"[0-9]{11}")
_OAZA = re.compile(r"[0-9]{1,12}")
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MONTH = re.compile(r"(2[0-9]{3})-(0[1-9]|1[0-2])")  # the trail's months: years 2000–2999
_EARLIEST = dt.date(1850, 1, 1)


def parse_date(value: str) -> dt.date | None:
    """An ISO date YYYY-MM-DD, or None when it is not one."""
    if not _ISO_DATE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def check_date(v: Violations, path: str, value: str, *, today: dt.date, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "required: a date YYYY-MM-DD")
        return
    parsed = parse_date(value)
    if parsed is None:
        v.add(path, "must be a date YYYY-MM-DD")
    elif parsed < _EARLIEST or parsed > today:
        v.add(path, "must not be in the future nor before 1850")


def check_text(v: Violations, path: str, value: str, *, max_len: int, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "required")
        return
    if len(value) > max_len:
        v.add(path, f"at most {max_len} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in value):
        v.add(path, "must not contain control or private-use characters")


def check_kana(v: Violations, path: str, value: str, *, max_len: int = 100, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "required: kana")
        return
    if len(value) > max_len:
        v.add(path, f"at most {max_len} characters")
    elif not is_kana_text(value):
        v.add(path, "must be kana (hiragana or katakana, any width)")


def check_resident_code(v: Violations, path: str, value: str) -> None:
    if not is_valid_resident_code(value):
        v.add(path, "must be 11 ASCII digits")


def check_my_number(v: Violations, path: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "required: 12 digits")
        return
    if not is_valid_my_number(value):
        v.add(path, "must be 12 ASCII digits with a valid check digit")


def check_municipality(v: Violations, path: str, value: str) -> None:
    if not is_valid_municipality_code(value):
        v.add(path, "must be 6 ASCII digits with a valid check digit")
    elif value not in MIE_MUNICIPALITIES:
        v.add(path, "not a municipality of this prefecture")


def check_sex(v: Violations, path: str, value: int, *, required: bool = True) -> None:
    if value == records_pb2.SEX_UNSPECIFIED:
        if required:
            v.add(path, "required: SEX_MALE or SEX_FEMALE")
    elif value not in (records_pb2.SEX_MALE, records_pb2.SEX_FEMALE):
        v.add(path, "unknown sex code")


def check_purpose(v: Violations, path: str, value: str) -> None:
    if not _PURPOSE.fullmatch(value):
        v.add(path, "required: a purpose id (lower-case letters, digits, '.', '_', '-')")


def check_request_id(v: Violations, path: str, value: str, *, required: bool = False) -> None:
    """A caller's request id: it is stored in clear (audit trails, the temporary area's key), so it may not
    hold a 住民票コード or a My Number, nor anything that could pass for one (11 or more digits in a row)."""
    if not value:
        if required:
            v.add(path, "required")
        return
    if not _ASCII_ID.fullmatch(value):
        v.add(path, "at most 64 of A-Z a-z 0-9 . _ : -")
    elif _LONG_DIGIT_RUN.search(value):
        v.add(path, "must not hold 11 or more digits in a row (a 住民票コード or a My Number)")


def check_ascii_id(v: Violations, path: str, value: str, *, required: bool = False) -> None:
    if not value:
        if required:
            v.add(path, "required")
        return
    if not _ASCII_ID.fullmatch(value):
        v.add(path, "at most 64 of A-Z a-z 0-9 . _ : -")


def check_oaza(v: Violations, path: str, value: str) -> None:
    if value and not _OAZA.fullmatch(value):
        v.add(path, "at most 12 ASCII digits")


def check_timestamp(v: Violations, path: str, value: str) -> None:
    if not value:
        return
    if not _RFC3339.fullmatch(value):
        v.add(path, "must be an RFC 3339 time with a UTC offset")
        return
    try:
        dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        v.add(path, "must be an RFC 3339 time with a UTC offset")


def check_counter(v: Violations, path: str, value: int, *, maximum: int = 999) -> None:
    if value > maximum:
        v.add(path, f"at most {maximum}")


def check_four_info(v: Violations, path: str, info: records_pb2.FourInfo, *, today: dt.date) -> None:
    check_text(v, f"{path}.name_kanji", info.name_kanji, max_len=100)
    check_kana(v, f"{path}.name_kana", info.name_kana)
    check_date(v, f"{path}.birth_date", info.birth_date, today=today)
    check_sex(v, f"{path}.sex", info.sex)
    check_text(v, f"{path}.address", info.address, max_len=200)


def check_former_surname(v: Violations, path: str, former: records_pb2.FormerSurname) -> None:
    check_text(v, f"{path}.kanji", former.kanji, max_len=50)
    check_kana(v, f"{path}.kana", former.kana, max_len=50)
    check_counter(v, f"{path}.gaiji_count", former.gaiji_count)
    check_counter(v, f"{path}.gaiji_change_seq", former.gaiji_change_seq)


def checked_month(request: admin_pb2.StatisticsRequest) -> str:
    """A month YYYY-MM (ASCII digits, 01–12, years 2000–2999) or INVALID_ARGUMENT naming `month`."""
    v = Violations()
    check_message(v, request)
    if not _MONTH.fullmatch(request.month):
        v.add("month", "YYYY-MM in ASCII digits: a month 01–12 of a year 2000–2999")
    v.raise_if_any()
    return request.month
