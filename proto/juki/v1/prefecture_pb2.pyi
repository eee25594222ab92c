from juki.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_SOURCE_UNSPECIFIED: _ClassVar[RecordSource]
    RECORD_SOURCE_LOCAL: _ClassVar[RecordSource]
    RECORD_SOURCE_NATIONAL: _ClassVar[RecordSource]

class BatchOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_OUTCOME_UNSPECIFIED: _ClassVar[BatchOutcome]
    BATCH_OUTCOME_FOUND: _ClassVar[BatchOutcome]
    BATCH_OUTCOME_NOT_FOUND: _ClassVar[BatchOutcome]
    BATCH_OUTCOME_AMBIGUOUS: _ClassVar[BatchOutcome]
    BATCH_OUTCOME_REFUSED: _ClassVar[BatchOutcome]

class DifferenceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIFFERENCE_KIND_UNSPECIFIED: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_MISSING_HERE: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_MISSING_THERE: _ClassVar[DifferenceKind]
    DIFFERENCE_KIND_ITEMS_DIFFER: _ClassVar[DifferenceKind]
RECORD_SOURCE_UNSPECIFIED: RecordSource
RECORD_SOURCE_LOCAL: RecordSource
RECORD_SOURCE_NATIONAL: RecordSource
BATCH_OUTCOME_UNSPECIFIED: BatchOutcome
BATCH_OUTCOME_FOUND: BatchOutcome
BATCH_OUTCOME_NOT_FOUND: BatchOutcome
BATCH_OUTCOME_AMBIGUOUS: BatchOutcome
BATCH_OUTCOME_REFUSED: BatchOutcome
DIFFERENCE_KIND_UNSPECIFIED: DifferenceKind
DIFFERENCE_KIND_MISSING_HERE: DifferenceKind
DIFFERENCE_KIND_MISSING_THERE: DifferenceKind
DIFFERENCE_KIND_ITEMS_DIFFER: DifferenceKind

class ChangeNotice(_message.Message):
    __slots__ = ("municipality_code", "sequence", "resident_code", "change_reason", "change_date", "four_info", "my_number", "name_gaiji_count", "address_gaiji_count", "oaza_code", "operator_id", "terminal_id", "timestamp", "gaiji_flag", "name_gaiji_change_seq", "address_gaiji_change_seq", "former_surname", "retention_flag")
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_DATE_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_GAIJI_COUNT_FIELD_NUMBER: _ClassVar[int]
    OAZA_CODE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    GAIJI_FLAG_FIELD_NUMBER: _ClassVar[int]
    NAME_GAIJI_CHANGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_GAIJI_CHANGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    FORMER_SURNAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FLAG_FIELD_NUMBER: _ClassVar[int]
    municipality_code: str
    sequence: int
    resident_code: str
    change_reason: _records_pb2.ChangeReason
    change_date: str
    four_info: _records_pb2.FourInfo
    my_number: str
    name_gaiji_count: int
    address_gaiji_count: int
    oaza_code: str
    operator_id: str
    terminal_id: str
    timestamp: str
    gaiji_flag: bool
    name_gaiji_change_seq: int
    address_gaiji_change_seq: int
    former_surname: _records_pb2.FormerSurname
    retention_flag: bool
    def __init__(self, municipality_code: _Optional[str] = ..., sequence: _Optional[int] = ..., resident_code: _Optional[str] = ..., change_reason: _Optional[_Union[_records_pb2.ChangeReason, str]] = ..., change_date: _Optional[str] = ..., four_info: _Optional[_Union[_records_pb2.FourInfo, _Mapping]] = ..., my_number: _Optional[str] = ..., name_gaiji_count: _Optional[int] = ..., address_gaiji_count: _Optional[int] = ..., oaza_code: _Optional[str] = ..., operator_id: _Optional[str] = ..., terminal_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., gaiji_flag: _Optional[bool] = ..., name_gaiji_change_seq: _Optional[int] = ..., address_gaiji_change_seq: _Optional[int] = ..., former_surname: _Optional[_Union[_records_pb2.FormerSurname, _Mapping]] = ..., retention_flag: _Optional[bool] = ...) -> None: ...

class ApplyUpdateRequest(_message.Message):
    __slots__ = ("notice",)
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    notice: ChangeNotice
    def __init__(self, notice: _Optional[_Union[ChangeNotice, _Mapping]] = ...) -> None: ...

class ApplyResult(_message.Message):
    __slots__ = ("municipality_code", "sequence", "resident_code", "change_reason", "applied_at")
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_REASON_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    municipality_code: str
    sequence: int
    resident_code: str
    change_reason: _records_pb2.ChangeReason
    applied_at: str
    def __init__(self, municipality_code: _Optional[str] = ..., sequence: _Optional[int] = ..., resident_code: _Optional[str] = ..., change_reason: _Optional[_Union[_records_pb2.ChangeReason, str]] = ..., applied_at: _Optional[str] = ...) -> None: ...

class ApplyUpdateResponse(_message.Message):
    __slots__ = ("result", "replayed")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    result: ApplyResult
    replayed: bool
    def __init__(self, result: _Optional[_Union[ApplyResult, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ApplyUpdatesResponse(_message.Message):
    __slots__ = ("results", "replayed_count", "last_applied_sequence")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ApplyResult]
    replayed_count: int
    last_applied_sequence: int
    def __init__(self, results: _Optional[_Iterable[_Union[ApplyResult, _Mapping]]] = ..., replayed_count: _Optional[int] = ..., last_applied_sequence: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("resident_code", "my_number", "purpose", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    my_number: str
    purpose: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("record", "source")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.ResidentView
    source: RecordSource
    def __init__(self, record: _Optional[_Union[_records_pb2.ResidentView, _Mapping]] = ..., source: _Optional[_Union[RecordSource, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("name_kana", "birth_date", "birth_date_from", "birth_date_to", "sex", "address_prefix", "purpose", "page_size", "page_token", "include_removed", "request_id")
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_TO_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name_kana: str
    birth_date: str
    birth_date_from: str
    birth_date_to: str
    sex: _records_pb2.Sex
    address_prefix: str
    purpose: str
    page_size: int
    page_token: str
    include_removed: bool
    request_id: str
    def __init__(self, name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., birth_date_from: _Optional[str] = ..., birth_date_to: _Optional[str] = ..., sex: _Optional[_Union[_records_pb2.Sex, str]] = ..., address_prefix: _Optional[str] = ..., purpose: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_removed: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "capped")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_records_pb2.ResidentView]
    next_page_token: str
    capped: bool
    def __init__(self, results: _Optional[_Iterable[_Union[_records_pb2.ResidentView, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., capped: _Optional[bool] = ...) -> None: ...

class FourInfoQuery(_message.Message):
    __slots__ = ("name_kana", "birth_date", "sex", "address_prefix")
    NAME_KANA_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_PREFIX_FIELD_NUMBER: _ClassVar[int]
    name_kana: str
    birth_date: str
    sex: _records_pb2.Sex
    address_prefix: str
    def __init__(self, name_kana: _Optional[str] = ..., birth_date: _Optional[str] = ..., sex: _Optional[_Union[_records_pb2.Sex, str]] = ..., address_prefix: _Optional[str] = ...) -> None: ...

class ProvideRequest(_message.Message):
    __slots__ = ("resident_code", "my_number", "four_info", "purpose", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    my_number: str
    four_info: FourInfoQuery
    purpose: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., four_info: _Optional[_Union[FourInfoQuery, _Mapping]] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ProvideResponse(_message.Message):
    __slots__ = ("records", "source")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.ResidentView]
    source: RecordSource
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.ResidentView, _Mapping]]] = ..., source: _Optional[_Union[RecordSource, str]] = ...) -> None: ...

class BatchProvideRequest(_message.Message):
    __slots__ = ("purpose", "approval_token", "declared_count", "condition_id", "resident_code", "my_number", "four_info", "conditions")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECLARED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    approval_token: str
    declared_count: int
    condition_id: str
    resident_code: str
    my_number: str
    four_info: FourInfoQuery
    conditions: _containers.RepeatedCompositeFieldContainer[BatchCondition]
    def __init__(self, purpose: _Optional[str] = ..., approval_token: _Optional[str] = ..., declared_count: _Optional[int] = ..., condition_id: _Optional[str] = ..., resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., four_info: _Optional[_Union[FourInfoQuery, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[BatchCondition, _Mapping]]] = ...) -> None: ...

class BatchCondition(_message.Message):
    __slots__ = ("condition_id", "resident_code", "my_number", "four_info")
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    condition_id: str
    resident_code: str
    my_number: str
    four_info: FourInfoQuery
    def __init__(self, condition_id: _Optional[str] = ..., resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., four_info: _Optional[_Union[FourInfoQuery, _Mapping]] = ...) -> None: ...

class BatchProvideResult(_message.Message):
    __slots__ = ("condition_id", "outcome", "record", "results")
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    condition_id: str
    outcome: BatchOutcome
    record: _records_pb2.ResidentView
    results: _containers.RepeatedCompositeFieldContainer[BatchResultItem]
    def __init__(self, condition_id: _Optional[str] = ..., outcome: _Optional[_Union[BatchOutcome, str]] = ..., record: _Optional[_Union[_records_pb2.ResidentView, _Mapping]] = ..., results: _Optional[_Iterable[_Union[BatchResultItem, _Mapping]]] = ...) -> None: ...

class BatchResultItem(_message.Message):
    __slots__ = ("condition_id", "outcome", "record")
    CONDITION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    condition_id: str
    outcome: BatchOutcome
    record: _records_pb2.ResidentView
    def __init__(self, condition_id: _Optional[str] = ..., outcome: _Optional[_Union[BatchOutcome, str]] = ..., record: _Optional[_Union[_records_pb2.ResidentView, _Mapping]] = ...) -> None: ...

class DiscloseRequest(_message.Message):
    __slots__ = ("resident_code", "purpose", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    purpose: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ProvisionEntry(_message.Message):
    __slots__ = ("time", "recipient", "purpose", "outcome", "method", "seq", "trail", "tree_size", "inclusion_proof", "leaf_hash", "entry")
    TIME_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    time: str
    recipient: str
    purpose: str
    outcome: str
    method: str
    seq: int
    trail: str
    tree_size: int
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    leaf_hash: bytes
    entry: str
    def __init__(self, time: _Optional[str] = ..., recipient: _Optional[str] = ..., purpose: _Optional[str] = ..., outcome: _Optional[str] = ..., method: _Optional[str] = ..., seq: _Optional[int] = ..., trail: _Optional[str] = ..., tree_size: _Optional[int] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., leaf_hash: _Optional[bytes] = ..., entry: _Optional[str] = ...) -> None: ...

class TrailCheckpoint(_message.Message):
    __slots__ = ("trail", "checkpoint")
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    trail: str
    checkpoint: str
    def __init__(self, trail: _Optional[str] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class DiscloseResponse(_message.Message):
    __slots__ = ("record", "provisions", "checkpoints")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    record: _records_pb2.ResidentView
    provisions: _containers.RepeatedCompositeFieldContainer[ProvisionEntry]
    checkpoints: _containers.RepeatedCompositeFieldContainer[TrailCheckpoint]
    def __init__(self, record: _Optional[_Union[_records_pb2.ResidentView, _Mapping]] = ..., provisions: _Optional[_Iterable[_Union[ProvisionEntry, _Mapping]]] = ..., checkpoints: _Optional[_Iterable[_Union[TrailCheckpoint, _Mapping]]] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("ranges", "record")
    RANGES_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ranges: ReconcileRanges
    record: _records_pb2.ResidentRecord
    def __init__(self, ranges: _Optional[_Union[ReconcileRanges, _Mapping]] = ..., record: _Optional[_Union[_records_pb2.ResidentRecord, _Mapping]] = ...) -> None: ...

class RangeDigest(_message.Message):
    __slots__ = ("prefix", "digest", "count")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    digest: bytes
    count: int
    def __init__(self, prefix: _Optional[str] = ..., digest: _Optional[bytes] = ..., count: _Optional[int] = ...) -> None: ...

class ReconcileRanges(_message.Message):
    __slots__ = ("municipality_code", "prefix_length", "ranges")
    MUNICIPALITY_CODE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    municipality_code: str
    prefix_length: int
    ranges: _containers.RepeatedCompositeFieldContainer[RangeDigest]
    def __init__(self, municipality_code: _Optional[str] = ..., prefix_length: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[RangeDigest, _Mapping]]] = ...) -> None: ...

class ReconcileSummary(_message.Message):
    __slots__ = ("ranges", "ranges_differing", "records_received", "missing_here", "missing_there", "items_differ")
    RANGES_FIELD_NUMBER: _ClassVar[int]
    RANGES_DIFFERING_FIELD_NUMBER: _ClassVar[int]
    RECORDS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MISSING_HERE_FIELD_NUMBER: _ClassVar[int]
    MISSING_THERE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_DIFFER_FIELD_NUMBER: _ClassVar[int]
    ranges: int
    ranges_differing: int
    records_received: int
    missing_here: int
    missing_there: int
    items_differ: int
    def __init__(self, ranges: _Optional[int] = ..., ranges_differing: _Optional[int] = ..., records_received: _Optional[int] = ..., missing_here: _Optional[int] = ..., missing_there: _Optional[int] = ..., items_differ: _Optional[int] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("send_ranges", "difference", "summary")
    SEND_RANGES_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    send_ranges: RangeRequest
    difference: ReconcileDifference
    summary: ReconcileSummary
    def __init__(self, send_ranges: _Optional[_Union[RangeRequest, _Mapping]] = ..., difference: _Optional[_Union[ReconcileDifference, _Mapping]] = ..., summary: _Optional[_Union[ReconcileSummary, _Mapping]] = ...) -> None: ...

class RangeRequest(_message.Message):
    __slots__ = ("prefixes",)
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class ReconcileDifference(_message.Message):
    __slots__ = ("resident_code", "kind", "items")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    kind: DifferenceKind
    items: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resident_code: _Optional[str] = ..., kind: _Optional[_Union[DifferenceKind, str]] = ..., items: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryNationalRequest(_message.Message):
    __slots__ = ("resident_code", "my_number", "four_info", "purpose", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    my_number: str
    four_info: FourInfoQuery
    purpose: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., four_info: _Optional[_Union[FourInfoQuery, _Mapping]] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class QueryNationalResponse(_message.Message):
    __slots__ = ("records", "source")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.ResidentView]
    source: RecordSource
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.ResidentView, _Mapping]]] = ..., source: _Optional[_Union[RecordSource, str]] = ...) -> None: ...

class FetchMyNumberRequest(_message.Message):
    __slots__ = ("resident_code", "purpose", "requester", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    purpose: str
    requester: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., purpose: _Optional[str] = ..., requester: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class FetchMyNumberResponse(_message.Message):
    __slots__ = ("my_number",)
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    my_number: str
    def __init__(self, my_number: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
