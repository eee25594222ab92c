"""Data minimisation (SPEC §3.3): the only shape in which a record leaves the server."""

from __future__ import annotations

from juki.v1 import records_pb2


def resident_view(record: records_pb2.ResidentRecord, my_number: str = "") -> records_pb2.ResidentView:
    """The 8 items: 住民票コード, 氏名, 生年月日, 性別, 住所, 個人番号 (when given), 異動事由, 異動年月日."""
    info = record.four_info
    return records_pb2.ResidentView(
        resident_code=record.resident_code,
        name_kanji=info.name_kanji,
        name_kana=info.name_kana,
        birth_date=info.birth_date,
        sex=info.sex,
        address=info.address,
        my_number=my_number,
        change_reason=record.change_reason,
        change_date=record.change_date,
        state=records_pb2.RECORD_STATE_REMOVED if record.deleted_flag else records_pb2.RECORD_STATE_ACTIVE,
    )
