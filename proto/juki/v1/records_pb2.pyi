from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sex(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEX_UNSPECIFIED: _ClassVar[Sex]
    SEX_MALE: _ClassVar[Sex]
    SEX_FEMALE: _ClassVar[Sex]

class ChangeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_REASON_UNSPECIFIED: _ClassVar[ChangeReason]
    CHANGE_REASON_TENNYU: _ClassVar[ChangeReason]
    CHANGE_REASON_SHUSSEI: _ClassVar[ChangeReason]
    CHANGE_REASON_SHOKKEN_KISAI: _ClassVar[ChangeReason]
    CHANGE_REASON_TENSHUTSU: _ClassVar[ChangeReason]
    CHANGE_REASON_SHIBOU: _ClassVar[ChangeReason]
    CHANGE_REASON_SHOKKEN_SHOJO: _ClassVar[ChangeReason]
    CHANGE_REASON_TENKYO: _ClassVar[ChangeReason]
    CHANGE_REASON_SHIMEI_HENKO: _ClassVar[ChangeReason]
    CHANGE_REASON_KOJIN_BANGO_HENKO: _ClassVar[ChangeReason]
    CHANGE_REASON_SHOKKEN_SHUSEI: _ClassVar[ChangeReason]

class RecordState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_STATE_UNSPECIFIED: _ClassVar[RecordState]
    RECORD_STATE_ACTIVE: _ClassVar[RecordState]
    RECORD_STATE_REMOVED: _ClassVar[RecordState]

class FuhyoState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUHYO_STATE_UNSPECIFIED: _ClassVar[FuhyoState]
    FUHYO_STATE_DOMESTIC: _ClassVar[FuhyoState]
    FUHYO_STATE_ABROAD: _ClassVar[FuhyoState]

class FuhyoNoticeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUHYO_NOTICE_KIND_UNSPECIFIED: _ClassVar[FuhyoNoticeKind]
    FUHYO_NOTICE_KIND_CREATE: _ClassVar[FuhyoNoticeKind]
    FUHYO_NOTICE_KIND_MODIFY: _ClassVar[FuhyoNoticeKind]
    FUHYO_NOTICE_KIND_REMOVE: _ClassVar[FuhyoNoticeKind]
SEX_UNSPECIFIED: Sex
SEX_MALE: Sex
SEX_FEMALE: Sex
CHANGE_REASON_UNSPECIFIED: ChangeReason
CHANGE_REASON_TENNYU: ChangeReason
CHANGE_REASON_SHUSSEI: ChangeReason
CHANGE_REASON_SHOKKEN_KISAI: ChangeReason
CHANGE_REASON_TENSHUTSU: ChangeReason
CHANGE_REASON_SHIBOU: ChangeReason
CHANGE_REASON_SHOKKEN_SHOJO: ChangeReason
CHANGE_REASON_TENKYO: ChangeReason
CHANGE_REASON_SHIMEI_HENKO: ChangeReason
CHANGE_REASON_KOJIN_BANGO_HENKO: ChangeReason
CHANGE_REASON_SHOKKEN_SHUSEI: ChangeReason
RECORD_STATE_UNSPECIFIED: RecordState
RECORD_STATE_ACTIVE: RecordState
RECORD_STATE_REMOVED: RecordState
FUHYO_STATE_UNSPECIFIED: FuhyoState
FUHYO_STATE_DOMESTIC: FuhyoState
FUHYO_STATE_ABROAD: FuhyoState
FUHYO_NOTICE_KIND_UNSPECIFIED: FuhyoNoticeKind
FUHYO_NOTICE_KIND_CREATE: FuhyoNoticeKind
FUHYO_NOTICE_KIND_MODIFY: FuhyoNoticeKind
FUHYO_NOTICE_KIND_REMOVE: FuhyoNoticeKind

class FourInfo(_message.Message):
    __slots__ = ("name_kanji", "name_kana", "birth_date", "sex", "address")
    NAME_KANJI_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name_kanji: str
    name_kana: str
    birth_date: str
    sex: Sex
    address: str
    def __init__(self, name_kanji: _Optional[str] = ..., name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., address: _Optional[str] = ...) -> None: ...

class FormerSurname(_message.Message):
    __slots__ = ("kanji", "gaiji_count", "kana", "gaiji_change_seq")
    KANJI_FIELD_NUMBER: _ClassVar[int]
    GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    KANA_FIELD_NUMBER: _ClassVar[int]
    GAIJI_CHANGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    kanji: str
    gaiji_count: int
    kana: str
    gaiji_change_seq: int
    def __init__(self, kanji: _Optional[str] = ..., gaiji_count: _Optional[int] = ..., kana: _Optional[str] = ..., gaiji_change_seq: _Optional[int] = ...) -> None: ...

class ResidentRecord(_message.Message):
    __slots__ = ("resident_code", "four_info", "name_gaiji_count", "address_gaiji_count", "my_number", "change_reason", "change_date", "retention_flag", "search_kana", "municipality_code", "oaza_code", "operator_id", "terminal_id", "timestamp", "notified_date", "gaiji_flag", "deleted_flag", "sequence", "name_gaiji_change_seq", "address_gaiji_change_seq", "former_surname", "state", "removed_date")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    NAME_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DATE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FLAG_FIELD_NUMBER: _ClassVar[int]
    SEARCH_KANA_FIELD_NUMBER: _ClassVar[int]
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    OAZA_CODE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NOTIFIED_DATE_FIELD_NUMBER: _ClassVar[int]
    GAIJI_FLAG_FIELD_NUMBER: _ClassVar[int]
    DELETED_FLAG_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NAME_GAIJI_CHANGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_GAIJI_CHANGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    FORMER_SURNAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DATE_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    four_info: FourInfo
    name_gaiji_count: int
    address_gaiji_count: int
    my_number: str
    change_reason: ChangeReason
    change_date: str
    retention_flag: bool
    search_kana: str
    municipality_code: str
    oaza_code: str
    operator_id: str
    terminal_id: str
    timestamp: str
    notified_date: str
    gaiji_flag: bool
    deleted_flag: bool
    sequence: int
    name_gaiji_change_seq: int
    address_gaiji_change_seq: int
    former_surname: FormerSurname
    state: RecordState
    removed_date: str
    def __init__(self, resident_code: _Optional[str] = ..., four_info: _Optional[_Union[FourInfo, _Mapping]] = ..., name_gaiji_count: _Optional[int] = ..., address_gaiji_count: _Optional[int] = ..., my_number: _Optional[str] = ..., change_reason: _Optional[_Union[ChangeReason, str]] = ..., change_date: _Optional[str] = ..., retention_flag: _Optional[bool] = ..., search_kana: _Optional[str] = ..., municipality_code: _Optional[str] = ..., oaza_code: _Optional[str] = ..., operator_id: _Optional[str] = ..., terminal_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., notified_date: _Optional[str] = ..., gaiji_flag: _Optional[bool] = ..., deleted_flag: _Optional[bool] = ..., sequence: _Optional[int] = ..., name_gaiji_change_seq: _Optional[int] = ..., address_gaiji_change_seq: _Optional[int] = ..., former_surname: _Optional[_Union[FormerSurname, _Mapping]] = ..., state: _Optional[_Union[RecordState, str]] = ..., removed_date: _Optional[str] = ...) -> None: ...

class FuhyoRecord(_message.Message):
    __slots__ = ("resident_code", "name_kanji", "name_gaiji_count", "name_kana", "birth_date", "sex", "address_municipality_code", "address", "address_gaiji_count", "last_address", "last_address_gaiji_count", "change_date", "former_resident_code", "managing_municipality_code", "state_kind", "gaiji_flag", "gaiji_pattern", "notice_kind")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_KANJI_FIELD_NUMBER: _ClassVar[int]
    NAME_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_ADDRESS_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DATE_FIELD_NUMBER: _ClassVar[int]
    FORMER_RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MANAGING_MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    STATE_KIND_FIELD_NUMBER: _ClassVar[int]
    GAIJI_FLAG_FIELD_NUMBER: _ClassVar[int]
    GAIJI_PATTERN_FIELD_NUMBER: _ClassVar[int]
    NOTICE_KIND_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    name_kanji: str
    name_gaiji_count: int
    name_kana: str
    birth_date: str
    sex: Sex
    address_municipality_code: str
    address: str
    address_gaiji_count: int
    last_address: str
    last_address_gaiji_count: int
    change_date: str
    former_resident_code: str
    managing_municipality_code: str
    state_kind: FuhyoState
    gaiji_flag: bool
    gaiji_pattern: str
    notice_kind: FuhyoNoticeKind
    def __init__(self, resident_code: _Optional[str] = ..., name_kanji: _Optional[str] = ..., name_gaiji_count: _Optional[int] = ..., name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., address_municipality_code: _Optional[str] = ..., address: _Optional[str] = ..., address_gaiji_count: _Optional[int] = ..., last_address: _Optional[str] = ..., last_address_gaiji_count: _Optional[int] = ..., change_date: _Optional[str] = ..., former_resident_code: _Optional[str] = ..., managing_municipality_code: _Optional[str] = ..., state_kind: _Optional[_Union[FuhyoState, str]] = ..., gaiji_flag: _Optional[bool] = ..., gaiji_pattern: _Optional[str] = ..., notice_kind: _Optional[_Union[FuhyoNoticeKind, str]] = ...) -> None: ...

class ResidentView(_message.Message):
    __slots__ = ("resident_code", "name_kanji", "name_kana", "birth_date", "sex", "address", "my_number", "change_reason", "change_date", "state")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_KANJI_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    name_kanji: str
    name_kana: str
    birth_date: str
    sex: Sex
    address: str
    my_number: str
    change_reason: ChangeReason
    change_date: str
    state: RecordState
    def __init__(self, resident_code: _Optional[str] = ..., name_kanji: _Optional[str] = ..., name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[Sex, str]] = ..., address: _Optional[str] = ..., my_number: _Optional[str] = ..., change_reason: _Optional[_Union[ChangeReason, str]] = ..., change_date: _Optional[str] = ..., state: _Optional[_Union[RecordState, str]] = ...) -> None: ...
