"""Which istio.mixer.v1 decoder runs: the compiled fast path, or the pure-Python decoder alone.

The compiled module is optional (mixer.compiled says when it is built and in use);
``MIXER_PURE_PYTHON=1`` turns it off, for comparisons and for running the tests against both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from datetime import timedelta, tzinfo
from typing import Protocol, cast

from mixer.compiled import PURE_PYTHON_ENV, CompiledModule
from mixer.values import AttributeBag, AttributeValue, IPAddress

__all__ = [
    "PURE_PYTHON_ENV",
    "CompiledDecoder",
    "cdecode",
    "compiled",
    "describe_decoder",
    "note_pure_python",
]


class CompiledDecoder(Protocol):
    """What mixer/wire/_cdecode.pyx provides (its stub, _cdecode.pyi, has the same signatures)."""

    def configure(
        self,
        global_words: tuple[str, ...],
        utc: tzinfo,
        ip_cache: dict[bytes, IPAddress],
        ip_address: Callable[[str, bytes], IPAddress],
        odd_duration: Callable[[str, int, int], timedelta],
        nano_duration: Callable[[int, int], timedelta],
        bag: type[AttributeBag],
        frozen_map: type[dict[str, str]],
        decode_error: type[Exception],
    ) -> None: ...

    def report_elements(
        self,
        data: bytes,
        start: int,
        end: int,
        first: int,
        default_words: list[str],
        default_words_fit: bool,
        ip_names: Container[str],
        max_attributes: int,
        max_string_length: int,
        max_map_entries: int,
        delta: bool,
        current: dict[str, AttributeValue],
    ) -> tuple[list[AttributeBag], dict[str, AttributeValue]] | None: ...

    def scan_fields(
        self, data: bytes, pos: int, fields: int, spans: list[tuple[int, int]], limit: int, header: bytearray
    ) -> tuple[int, int]: ...

    def check_request(
        self,
        data: bytes,
        ip_names: Container[str],
        max_attributes: int,
        max_string_length: int,
        max_map_entries: int,
    ) -> tuple[dict[str, AttributeValue], str, list[tuple[str, int, bool]], int] | None: ...


_MODULE = CompiledModule("mixer.wire._cdecode", "istio.mixer.v1 decoder", logging.getLogger("mixer.wire"))
# Its stub (_cdecode.pyi) declares the CompiledDecoder signatures.
#: The compiled module when it is built, whether or not it is in use.
compiled = cast("CompiledDecoder | None", _MODULE.built)
#: The compiled decoder in use, or None for the pure-Python decoder alone.
cdecode = cast("CompiledDecoder | None", _MODULE.active)
DECODER = _MODULE.description
#: Logs, once per process and at the first request decoded in pure Python, that it is so.
note_pure_python = _MODULE.note_pure_python


def describe_decoder() -> str:
    """The decoder in use, for ``mixer version``."""
    return DECODER
