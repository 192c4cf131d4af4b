from google.protobuf import any_pb2 as _any_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import extensions_pb2 as _extensions_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import check_pb2 as _check_pb2
from mixer.proto.istio.policy.v1beta1 import type_pb2 as _type_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleApiKeyRequest(_message.Message):
    __slots__ = ("instance", "adapter_config", "dedup_id")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceMsg
    adapter_config: _any_pb2.Any
    dedup_id: str
    def __init__(self, instance: _Optional[_Union[InstanceMsg, _Mapping]] = ..., adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., dedup_id: _Optional[str] = ...) -> None: ...

class InstanceMsg(_message.Message):
    __slots__ = ("name", "api", "api_version", "api_operation", "api_key", "timestamp")
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_OPERATION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    name: str
    api: str
    api_version: str
    api_operation: str
    api_key: str
    timestamp: _type_pb2.TimeStamp
    def __init__(self, name: _Optional[str] = ..., api: _Optional[str] = ..., api_version: _Optional[str] = ..., api_operation: _Optional[str] = ..., api_key: _Optional[str] = ..., timestamp: _Optional[_Union[_type_pb2.TimeStamp, _Mapping]] = ...) -> None: ...
