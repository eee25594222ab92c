"""清音化かな: kana folded for 4情報 search (SPEC §2, §6.3).

A name written in hiragana, katakana or half-width katakana, with or without voiced marks, small kana or
spaces, folds to one key: full-width katakana, ガ→カ, パ→ハ, ャ→ヤ, ッ→ツ, no spaces.
"""

from __future__ import annotations

import unicodedata

_HIRAGANA_START, _HIRAGANA_END = 0x3041, 0x3096
_TO_KATAKANA = 0x60
_VOICING_MARKS = {"\u3099", "\u309a", "\u309b", "\u309c"}
_SMALL_TO_LARGE = str.maketrans(
    "ァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ",
    "アイウエオツヤユヨワカケクシストヌハヒフヘホムラリルレロ",
)
_SPACES = str.maketrans("", "", " \u3000\t")


def is_kana_text(text: str) -> bool:
    """True when text holds only kana (any script or width), the long-vowel mark, middle dot and spaces."""
    normalized = unicodedata.normalize("NFKC", text)
    for ch in normalized:
        code = ord(ch)
        if _HIRAGANA_START <= code <= 0x309F or 0x30A0 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
            continue
        if ch in " \u3000":
            continue
        return False
    return bool(normalized.strip())


def _fold_slowly(text: str) -> str:
    """The folding spelled out; used once per character to build the table below."""
    # NFKC turns half-width katakana (and ｶﾞ pairs) into full-width composed katakana.
    composed = unicodedata.normalize("NFKC", text).translate(_SPACES)
    katakana = "".join(
        chr(ord(ch) + _TO_KATAKANA) if _HIRAGANA_START <= ord(ch) <= _HIRAGANA_END else ch for ch in composed
    )
    # NFD splits ガ into カ + U+3099, so dropping the marks leaves the 清音.
    plain = "".join(ch for ch in unicodedata.normalize("NFD", katakana) if ch not in _VOICING_MARKS)
    return unicodedata.normalize("NFC", plain).translate(_SMALL_TO_LARGE)


# Every kana (and space) folded once: after NFKC, folding is one str.translate (a C loop), which matters
# when 2 million names are indexed.
_FOLD = str.maketrans(
    {
        chr(cp): _fold_slowly(chr(cp))
        for cp in (*range(0x3040, 0x3100), *range(0x30A0, 0x3100), *range(0x31F0, 0x3200), 0x20, 0x3000, 0x09)
    }
)


def search_kana(text: str) -> str:
    """Fold a kana name to its 清音化かな search key."""
    return unicodedata.normalize("NFKC", text).translate(_FOLD)
