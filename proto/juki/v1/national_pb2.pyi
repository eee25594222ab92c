from juki.v1 import fuhyo_pb2 as _fuhyo_pb2
from juki.v1 import prefecture_pb2 as _prefecture_pb2
from juki.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeFile(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_FILE_UNSPECIFIED: _ClassVar[ChangeFile]
    CHANGE_FILE_RESIDENT: _ClassVar[ChangeFile]
    CHANGE_FILE_FUHYO: _ClassVar[ChangeFile]
CHANGE_FILE_UNSPECIFIED: ChangeFile
CHANGE_FILE_RESIDENT: ChangeFile
CHANGE_FILE_FUHYO: ChangeFile

class PropagatedChange(_message.Message):
    __slots__ = ("file", "notice", "applied_at", "fuhyo_notice")
    FILE_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    FUHYO_NOTICE_FIELD_NUMBER: _ClassVar[int]
    file: ChangeFile
    notice: _prefecture_pb2.ChangeNotice
    applied_at: str
    fuhyo_notice: _fuhyo_pb2.FuhyoNotice
    def __init__(self, file: _Optional[_Union[ChangeFile, str]] = ..., notice: _Optional[_Union[_prefecture_pb2.ChangeNotice, _Mapping]] = ..., applied_at: _Optional[str] = ..., fuhyo_notice: _Optional[_Union[_fuhyo_pb2.FuhyoNotice, _Mapping]] = ...) -> None: ...

class NotifyUpdatesRequest(_message.Message):
    __slots__ = ("prefecture_code", "changes")
    PREFECTURE_CODE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    prefecture_code: str
    changes: _containers.RepeatedCompositeFieldContainer[PropagatedChange]
    def __init__(self, prefecture_code: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[PropagatedChange, _Mapping]]] = ...) -> None: ...

class NotifyUpdatesResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class NationalQueryRequest(_message.Message):
    __slots__ = ("resident_code", "my_number", "four_info", "purpose", "requester", "request_id")
    RESIDENT_CODE_FIELD_NUMBER: _ClassVar[int]
    MY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FOUR_INFO_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    resident_code: str
    my_number: str
    four_info: _prefecture_pb2.FourInfoQuery
    purpose: str
    requester: str
    request_id: str
    def __init__(self, resident_code: _Optional[str] = ..., my_number: _Optional[str] = ..., four_info: _Optional[_Union[_prefecture_pb2.FourInfoQuery, _Mapping]] = ..., purpose: _Optional[str] = ..., requester: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class NationalQueryResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.ResidentView]
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.ResidentView, _Mapping]]] = ...) -> None: ...

class NationalFuhyoQueryResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_fuhyo_pb2.FuhyoView]
    def __init__(self, records: _Optional[_Iterable[_Union[_fuhyo_pb2.FuhyoView, _Mapping]]] = ...) -> None: ...
