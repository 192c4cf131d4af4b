"""Which istio.mixer.v1 decoder runs: the compiled fast path, or the pure-Python decoder alone.

The compiled module is built by the package's install when a C compiler is there (Cython is in
the build requirements); without it the install still succeeds and the server runs the
pure-Python decoder, slower but with the same results. ``MIXER_PURE_PYTHON=1`` turns the compiled
path off, for comparisons and for running the tests against both.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Container
from datetime import timedelta, tzinfo
from typing import Final, Protocol, cast

from mixer.values import AttributeBag, AttributeValue, IPAddress

#: Set to a non-empty value other than ``0`` to decode with the pure-Python decoder alone.
PURE_PYTHON_ENV: Final = "MIXER_PURE_PYTHON"

_log = logging.getLogger("mixer.wire")


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


def _import() -> tuple[CompiledDecoder | None, str]:
    try:
        # By name: the compiled module is no Python source, and the import graph of the layer
        # contracts would read `from mixer.wire import _cdecode` as an import of the package.
        module = importlib.import_module("mixer.wire._cdecode")
    except ImportError as exc:
        return None, str(exc)
    # Its stub (_cdecode.pyi) declares these very signatures.
    return cast("CompiledDecoder", module), ""


#: The compiled module when it is built, whether or not it is in use.
compiled, _import_error = _import()


def _select() -> tuple[CompiledDecoder | None, str, int]:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None, f"pure Python ({PURE_PYTHON_ENV} is set)", logging.INFO
    if compiled is None:
        return None, f"pure Python (the compiled decoder is not built: {_import_error})", logging.WARNING
    return compiled, "compiled (mixer.wire._cdecode)", logging.DEBUG


#: The compiled decoder in use, or None for the pure-Python decoder alone.
cdecode, DECODER, _LEVEL = _select()
#: The note still to log: emptied by the first request decoded without the compiled decoder.
_unlogged = [] if cdecode is not None else [DECODER]


def note_pure_python() -> None:
    """Log, once per process and at the first request, that the compiled decoder is not in use.

    Not at import: the server configures logging after importing the codec.
    """
    while _unlogged:
        _log.log(_LEVEL, "decoding istio.mixer.v1 requests with the %s decoder", _unlogged.pop())


def describe_decoder() -> str:
    """The decoder in use, for ``mixer version``."""
    return DECODER
