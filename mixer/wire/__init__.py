"""The istio.mixer.v1 wire codec: compressed attributes to attribute bags and back.

Servers decode with :func:`decode_check_request` and :func:`decode_report_request` and answer
with :func:`build_check_response`; both decode errors carry the gRPC code to answer with
(``exc.code``): :class:`WireDecodeError` is INVALID_ARGUMENT, :class:`GlobalDictionaryMismatch`
INTERNAL. Durations keep their nanoseconds (a :class:`~mixer.attributes.NanoDuration` below the
microsecond); timestamps are held to the microsecond (nanoseconds truncated), which is also what
Mixer's stdio adapter printed.
"""

from __future__ import annotations

from mixer.wire._check import (
    build_check_response,
    decode_referenced_attributes,
    describe_check_encoder,
    encode_check_response,
    encode_check_response_python,
    encode_referenced_attributes,
)
from mixer.wire._decode import (
    DEFAULT_MAX_ATTRIBUTES,
    DEFAULT_MAX_MAP_ENTRIES,
    DEFAULT_MAX_REPORT_RECORDS,
    DEFAULT_MAX_STRING_LENGTH,
    DecodedCheck,
    ReportReader,
    count_entries,
    decode_attributes,
    decode_check_request,
    decode_report_request,
)
from mixer.wire._dictionary import (
    GLOBAL_WORD_COUNT,
    GLOBAL_WORD_INDEX,
    GLOBAL_WORDS,
    check_global_word_count,
)
from mixer.wire._encode import (
    ReportEncoding,
    duration_of,
    encode_attributes,
    encode_check_request,
    encode_report_request,
    timestamp_of,
)
from mixer.wire._errors import GlobalDictionaryMismatch, ReportTooLarge, WireDecodeError
from mixer.wire._fast import PURE_PYTHON_ENV, describe_decoder
from mixer.wire._maps import FrozenStringMap

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES",
    "DEFAULT_MAX_MAP_ENTRIES",
    "DEFAULT_MAX_REPORT_RECORDS",
    "DEFAULT_MAX_STRING_LENGTH",
    "GLOBAL_WORDS",
    "GLOBAL_WORD_COUNT",
    "GLOBAL_WORD_INDEX",
    "PURE_PYTHON_ENV",
    "DecodedCheck",
    "FrozenStringMap",
    "GlobalDictionaryMismatch",
    "ReportEncoding",
    "ReportReader",
    "ReportTooLarge",
    "WireDecodeError",
    "build_check_response",
    "check_global_word_count",
    "count_entries",
    "decode_attributes",
    "decode_check_request",
    "decode_referenced_attributes",
    "decode_report_request",
    "describe_check_encoder",
    "describe_decoder",
    "duration_of",
    "encode_attributes",
    "encode_check_request",
    "encode_check_response",
    "encode_check_response_python",
    "encode_referenced_attributes",
    "encode_report_request",
    "timestamp_of",
]
