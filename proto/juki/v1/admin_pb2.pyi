from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperatorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_STATE_UNSPECIFIED: _ClassVar[OperatorState]
    OPERATOR_STATE_ACTIVE: _ClassVar[OperatorState]
    OPERATOR_STATE_REVOKED: _ClassVar[OperatorState]
OPERATOR_STATE_UNSPECIFIED: OperatorState
OPERATOR_STATE_ACTIVE: OperatorState
OPERATOR_STATE_REVOKED: OperatorState

class RegisterOperatorRequest(_message.Message):
    __slots__ = ("operator_id", "methods", "purposes", "note")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    purposes: _containers.RepeatedScalarFieldContainer[str]
    note: str
    def __init__(self, operator_id: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., purposes: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ...) -> None: ...

class RevokeOperatorRequest(_message.Message):
    __slots__ = ("operator_id", "reason")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    reason: str
    def __init__(self, operator_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OperatorEntry(_message.Message):
    __slots__ = ("operator_id", "methods", "purposes", "state", "registered_at", "registered_by", "revoked_at", "revoked_by", "revoke_reason", "note")
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKE_REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    operator_id: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    purposes: _containers.RepeatedScalarFieldContainer[str]
    state: OperatorState
    registered_at: str
    registered_by: str
    revoked_at: str
    revoked_by: str
    revoke_reason: str
    note: str
    def __init__(self, operator_id: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., purposes: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[OperatorState, str]] = ..., registered_at: _Optional[str] = ..., registered_by: _Optional[str] = ..., revoked_at: _Optional[str] = ..., revoked_by: _Optional[str] = ..., revoke_reason: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ListOperatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOperatorsResponse(_message.Message):
    __slots__ = ("operators", "exported_at")
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    operators: _containers.RepeatedCompositeFieldContainer[OperatorEntry]
    exported_at: str
    def __init__(self, operators: _Optional[_Iterable[_Union[OperatorEntry, _Mapping]]] = ..., exported_at: _Optional[str] = ...) -> None: ...

class IssueApprovalRequest(_message.Message):
    __slots__ = ("caller", "purpose", "max_count", "valid_minutes")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    VALID_MINUTES_FIELD_NUMBER: _ClassVar[int]
    caller: str
    purpose: str
    max_count: int
    valid_minutes: int
    def __init__(self, caller: _Optional[str] = ..., purpose: _Optional[str] = ..., max_count: _Optional[int] = ..., valid_minutes: _Optional[int] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("token", "caller", "purpose", "max_count", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    caller: str
    purpose: str
    max_count: int
    expires_at: str
    def __init__(self, token: _Optional[str] = ..., caller: _Optional[str] = ..., purpose: _Optional[str] = ..., max_count: _Optional[int] = ..., expires_at: _Optional[str] = ...) -> None: ...

class StatisticsRequest(_message.Message):
    __slots__ = ("month",)
    MONTH_FIELD_NUMBER: _ClassVar[int]
    month: str
    def __init__(self, month: _Optional[str] = ...) -> None: ...

class StatisticsCount(_message.Message):
    __slots__ = ("key", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class StatisticsResponse(_message.Message):
    __slots__ = ("month", "updates_by_municipality", "provisions")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    UPDATES_BY_MUNICIPALITY_FIELD_NUMBER: _ClassVar[int]
    PROVISIONS_FIELD_NUMBER: _ClassVar[int]
    month: str
    updates_by_municipality: _containers.RepeatedCompositeFieldContainer[StatisticsCount]
    provisions: _containers.RepeatedCompositeFieldContainer[StatisticsCount]
    def __init__(self, month: _Optional[str] = ..., updates_by_municipality: _Optional[_Iterable[_Union[StatisticsCount, _Mapping]]] = ..., provisions: _Optional[_Iterable[_Union[StatisticsCount, _Mapping]]] = ...) -> None: ...

class InclusionProofRequest(_message.Message):
    __slots__ = ("seq", "tree_size", "trail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    tree_size: int
    trail: str
    def __init__(self, seq: _Optional[int] = ..., tree_size: _Optional[int] = ..., trail: _Optional[str] = ...) -> None: ...

class InclusionProofResponse(_message.Message):
    __slots__ = ("leaf_index", "tree_size", "hashes", "entry", "checkpoint")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    entry: str
    checkpoint: str
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., entry: _Optional[str] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class ConsistencyProofRequest(_message.Message):
    __slots__ = ("first", "second", "trail")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    TRAIL_FIELD_NUMBER: _ClassVar[int]
    first: int
    second: int
    trail: str
    def __init__(self, first: _Optional[int] = ..., second: _Optional[int] = ..., trail: _Optional[str] = ...) -> None: ...

class ConsistencyProofResponse(_message.Message):
    __slots__ = ("first", "second", "hashes", "first_checkpoint", "second_checkpoint")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SECOND_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    first: int
    second: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    first_checkpoint: str
    second_checkpoint: str
    def __init__(self, first: _Optional[int] = ..., second: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ..., first_checkpoint: _Optional[str] = ..., second_checkpoint: _Optional[str] = ...) -> None: ...
