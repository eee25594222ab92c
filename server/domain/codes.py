"""Identifiers of the register and their check digits (SPEC §2)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")

# 三重県's 29 municipalities (市町村コード with check digit → name), SPEC §2.
MIE_MUNICIPALITIES: dict[str, str] = {
    "242012": "津市",
    "242021": "四日市市",
    "242039": "伊勢市",
    "242047": "松阪市",
    "242055": "桑名市",
    "242071": "鈴鹿市",
    "242080": "名張市",
    "242098": "尾鷲市",
    "242101": "亀山市",
    "242110": "鳥羽市",
    "242128": "熊野市",
    "242144": "いなべ市",
    "242152": "志摩市",
    "242161": "伊賀市",
    "243035": "木曽岬町",
    "243248": "東員町",
    "243418": "菰野町",
    "243434": "朝日町",
    "243442": "川越町",
    "244414": "多気町",
    "244422": "明和町",
    "244431": "大台町",
    "244619": "玉城町",
    "244708": "度会町",
    "244716": "大紀町",
    "244724": "南伊勢町",
    "245437": "紀北町",
    "245615": "御浜町",
    "245623": "紀宝町",
}


def is_digits(value: str, length: int) -> bool:
    """True when value is exactly `length` ASCII digits (str.isdigit would accept full-width digits)."""
    return len(value) == length and _DIGITS.fullmatch(value) is not None


def my_number_check_digit(first11: str) -> int:
    """個人番号 check digit: 11 − (Σ P_n·Q_n mod 11), 0 when the remainder ≤ 1 (SPEC §2)."""
    if not is_digits(first11, 11):
        raise ValueError("the first 11 digits of a My Number are required")
    total = 0
    for n in range(1, 12):
        p = int(first11[11 - n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def is_valid_my_number(value: str) -> bool:
    """True for 12 ASCII digits whose last digit is the check digit."""
    return is_digits(value, 12) and my_number_check_digit(value[:11]) == int(value[11])


def municipality_check_digit(first5: str) -> int:
    """市町村コード check digit: weights 6,5,4,3,2; the last digit of 11 − (sum mod 11)."""
    if not is_digits(first5, 5):
        raise ValueError("the first 5 digits of a municipality code are required")
    total = sum(int(d) * w for d, w in zip(first5, (6, 5, 4, 3, 2), strict=True))
    return (11 - total % 11) % 10


def is_valid_municipality_code(value: str) -> bool:
    """True for 6 ASCII digits whose last digit is the check digit."""
    return is_digits(value, 6) and municipality_check_digit(value[:5]) == int(value[5])


def is_valid_resident_code(value: str) -> bool:
    """住民票コード: 11 ASCII digits (the check-digit formula is not public, SPEC §2)."""
    return is_digits(value, 11)
