from google.protobuf import any_pb2 as _any_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import extensions_pb2 as _extensions_pb2
from mixer.proto.istio.mixer.adapter.model.v1beta1 import quota_pb2 as _quota_pb2
from mixer.proto.istio.policy.v1beta1 import type_pb2 as _type_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleQuotaRequest(_message.Message):
    __slots__ = ("instance", "adapter_config", "dedup_id", "quota_request")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTA_REQUEST_FIELD_NUMBER: _ClassVar[int]
    instance: InstanceMsg
    adapter_config: _any_pb2.Any
    dedup_id: str
    quota_request: _quota_pb2.QuotaRequest
    def __init__(self, instance: _Optional[_Union[InstanceMsg, _Mapping]] = ..., adapter_config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., dedup_id: _Optional[str] = ..., quota_request: _Optional[_Union[_quota_pb2.QuotaRequest, _Mapping]] = ...) -> None: ...

class InstanceMsg(_message.Message):
    __slots__ = ("name", "dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _type_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_type_pb2.Value, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimensions: _containers.MessageMap[str, _type_pb2.Value]
    def __init__(self, name: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, _type_pb2.Value]] = ...) -> None: ...
