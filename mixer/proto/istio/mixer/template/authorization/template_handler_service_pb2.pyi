from google.protobuf import any_pb2 as _any_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import extensions_pb2 as _extensions_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import check_pb2 as _check_pb2
from mixer.proto.istio.policy.v1beta1 import type_pb2 as _type_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleAuthorizationRequest(_message.Message):
    __slots__ = ("instance", "adapter_config", "dedup_id")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceMsg
    adapter_config: _any_pb2.Any
    dedup_id: str
    def __init__(self, instance: _Optional[_Union[InstanceMsg, _Mapping]] = ..., adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., dedup_id: _Optional[str] = ...) -> None: ...

class SubjectMsg(_message.Message):
    __slots__ = ("user", "groups", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _type_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    user: str
    groups: str
    properties: _containers.MessageMap[str, _type_pb2.Value]
    def __init__(self, user: _Optional[str] = ..., groups: _Optional[str] = ..., properties: _Optional[_Mapping[str, _type_pb2.Value]] = ...) -> None: ...

class ActionMsg(_message.Message):
    __slots__ = ("namespace", "service", "method", "path", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _type_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    service: str
    method: str
    path: str
    properties: _containers.MessageMap[str, _type_pb2.Value]
    def __init__(self, namespace: _Optional[str] = ..., service: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., properties: _Optional[_Mapping[str, _type_pb2.Value]] = ...) -> None: ...

class InstanceMsg(_message.Message):
    __slots__ = ("name", "subject", "action")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    subject: SubjectMsg
    action: ActionMsg
    def __init__(self, name: _Optional[str] = ..., subject: _Optional[_Union[SubjectMsg, _Mapping]] = ..., action: _Optional[_Union[ActionMsg, _Mapping]] = ...) -> None: ...
