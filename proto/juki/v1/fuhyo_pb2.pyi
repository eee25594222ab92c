from juki.v1 import prefecture_pb2 as _prefecture_pb2
from juki.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FuhyoChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUHYO_CHANGE_KIND_UNSPECIFIED: _ClassVar[FuhyoChangeKind]
    FUHYO_CHANGE_KIND_CREATE: _ClassVar[FuhyoChangeKind]
    FUHYO_CHANGE_KIND_MODIFY: _ClassVar[FuhyoChangeKind]
    FUHYO_CHANGE_KIND_REMOVE: _ClassVar[FuhyoChangeKind]
FUHYO_CHANGE_KIND_UNSPECIFIED: FuhyoChangeKind
FUHYO_CHANGE_KIND_CREATE: FuhyoChangeKind
FUHYO_CHANGE_KIND_MODIFY: FuhyoChangeKind
FUHYO_CHANGE_KIND_REMOVE: FuhyoChangeKind

class FuhyoNotice(_message.Message):
    __slots__ = ("managing_municipality_code", "sequence", "kind", "change_date", "record")
    MANAGING_MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DATE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    managing_municipality_code: str
    sequence: int
    kind: FuhyoChangeKind
    change_date: str
    record: _records_pb2.FuhyoRecord
    def __init__(self, managing_municipality_code: _Optional[str] = ..., sequence: _Optional[int] = ..., kind: _Optional[_Union[FuhyoChangeKind, str]] = ..., change_date: _Optional[str] = ..., record: _Optional[_Union[_records_pb2.FuhyoRecord, _Mapping]] = ...) -> None: ...

class FuhyoApplyRequest(_message.Message):
    __slots__ = ("notice",)
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    notice: FuhyoNotice
    def __init__(self, notice: _Optional[_Union[FuhyoNotice, _Mapping]] = ...) -> None: ...

class FuhyoView(_message.Message):
    __slots__ = ("resident_code", "name_kanji", "name_kana", "birth_date", "sex", "address", "abroad", "state")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_KANJI_FIELD_NUMBER: _ClassVar[int]
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ABROAD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    name_kanji: str
    name_kana: str
    birth_date: str
    sex: _records_pb2.Sex
    address: str
    abroad: bool
    state: _records_pb2.RecordState
    def __init__(self, resident_code: _Optional[str] = ..., name_kanji: _Optional[str] = ..., name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[_records_pb2.Sex, str]] = ..., address: _Optional[str] = ..., abroad: _Optional[bool] = ..., state: _Optional[_Union[_records_pb2.RecordState, str]] = ...) -> None: ...

class FuhyoLookupRequest(_message.Message):
    __slots__ = ("resident_code", "purpose", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    purpose: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class FuhyoLookupResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: FuhyoView
    def __init__(self, record: _Optional[_Union[FuhyoView, _Mapping]] = ...) -> None: ...

class FuhyoSearchResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "capped")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FuhyoView]
    next_page_token: str
    capped: bool
    def __init__(self, results: _Optional[_Iterable[_Union[FuhyoView, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., capped: _Optional[bool] = ...) -> None: ...

class FuhyoProvideRequest(_message.Message):
    __slots__ = ("resident_code", "four_info", "purpose", "request_id", "include_my_number")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    four_info: _prefecture_pb2.FourInfoQuery
    purpose: str
    request_id: str
    include_my_number: bool
    def __init__(self, resident_code: _Optional[str] = ..., four_info: _Optional[_Union[_prefecture_pb2.FourInfoQuery, _Mapping]] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ..., include_my_number: _Optional[bool] = ...) -> None: ...

class FuhyoProvideResponse(_message.Message):
    __slots__ = ("records", "my_number", "request_id")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[FuhyoView]
    my_number: str
    request_id: str
    def __init__(self, records: _Optional[_Iterable[_Union[FuhyoView, _Mapping]]] = ..., my_number: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RedeliverRequest(_message.Message):
    __slots__ = ("request_id", "purpose")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    purpose: str
    def __init__(self, request_id: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class AckDeliveryRequest(_message.Message):
    __slots__ = ("request_id", "purpose")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    purpose: str
    def __init__(self, request_id: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class AckDeliveryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FuhyoBatchProvideResult(_message.Message):
    __slots__ = ("condition_id", "outcome", "record", "results")
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    condition_id: str
    outcome: _prefecture_pb2.BatchOutcome
    record: FuhyoView
    results: _containers.RepeatedCompositeFieldContainer[FuhyoBatchResultItem]
    def __init__(self, condition_id: _Optional[str] = ..., outcome: _Optional[_Union[_prefecture_pb2.BatchOutcome, str]] = ..., record: _Optional[_Union[FuhyoView, _Mapping]] = ..., results: _Optional[_Iterable[_Union[FuhyoBatchResultItem, _Mapping]]] = ...) -> None: ...

class FuhyoBatchResultItem(_message.Message):
    __slots__ = ("condition_id", "outcome", "record")
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    condition_id: str
    outcome: _prefecture_pb2.BatchOutcome
    record: FuhyoView
    def __init__(self, condition_id: _Optional[str] = ..., outcome: _Optional[_Union[_prefecture_pb2.BatchOutcome, str]] = ..., record: _Optional[_Union[FuhyoView, _Mapping]] = ...) -> None: ...

class FuhyoDiscloseResponse(_message.Message):
    __slots__ = ("record", "provisions", "checkpoints")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    record: FuhyoView
    provisions: _containers.RepeatedCompositeFieldContainer[_prefecture_pb2.ProvisionEntry]
    checkpoints: _containers.RepeatedCompositeFieldContainer[_prefecture_pb2.TrailCheckpoint]
    def __init__(self, record: _Optional[_Union[FuhyoView, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[_prefecture_pb2.ProvisionEntry, _Mapping]]] = ..., checkpoints: _Optional[_Iterable[_Union[_prefecture_pb2.TrailCheckpoint, _Mapping]]] = ...) -> None: ...

class FuhyoReconcileRequest(_message.Message):
    __slots__ = ("ranges", "record")
    RANGES_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ranges: _prefecture_pb2.ReconcileRanges
    record: _records_pb2.FuhyoRecord
    def __init__(self, ranges: _Optional[_Union[_prefecture_pb2.ReconcileRanges, _Mapping]] = ..., record: _Optional[_Union[_records_pb2.FuhyoRecord, _Mapping]] = ...) -> None: ...

class FuhyoQueryNationalResponse(_message.Message):
    __slots__ = ("records", "source")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[FuhyoView]
    source: _prefecture_pb2.RecordSource
    def __init__(self, records: _Optional[_Iterable[_Union[FuhyoView, _Mapping]]] = ..., source: _Optional[_Union[_prefecture_pb2.RecordSource, str]] = ...) -> None: ...
