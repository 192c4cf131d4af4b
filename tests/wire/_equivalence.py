"""Running one decode with each istio.mixer.v1 decoder and comparing what they give.

Shared by the equivalence properties (tests/wire/test_compiled_decoder.py) and the fuzz targets
(tests/fuzz/targets.py). Outcomes are compared in a form where NaN equals itself, -0.0 differs from
0.0, a NanoDuration from a timedelta and a FrozenStringMap from a dict; the order of a bag's names
and of a map's keys is not compared (the compiled decoder keeps the wire order, the pure-Python one
upb's hash order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from mixer.attributes import AttributeBag, AttributeValue
from mixer.wire import DecodedCheck, GlobalDictionaryMismatch, WireDecodeError, _fast

Outcome = tuple[str, Any]
_T = TypeVar("_T")


class DecodersDisagree(AssertionError):
    """The compiled and the pure-Python decoder gave different bags or errors for one input."""


@contextmanager
def decoder(module: _fast.CompiledDecoder | None) -> Iterator[None]:
    """Decode with ``module`` (None: the pure-Python decoder alone) inside the block."""
    saved = _fast.cdecode
    _fast.cdecode = module
    try:
        yield
    finally:
        _fast.cdecode = saved


def _value_form(value: AttributeValue) -> tuple[str, Any]:
    if isinstance(value, Mapping):
        return type(value).__name__, sorted(value.items())
    return type(value).__name__, repr(value)


def _bag_form(bag: AttributeBag) -> dict[str, tuple[str, Any]]:
    forms: dict[str, tuple[str, Any]] = {}
    for name in bag:
        value = bag.get(name)
        assert value is not None
        forms[name] = _value_form(value)
    return forms


def _result_form(result: object) -> Any:
    if isinstance(result, DecodedCheck):
        return _bag_form(result.bag), result.deduplication_id, result.quotas, result.global_word_count
    assert isinstance(result, list)
    return [_bag_form(bag) for bag in result]


def outcome(run: Callable[[], object]) -> Outcome:
    """``("ok", the result's form)`` or ``("error", (type name, message))``."""
    try:
        result = run()
    except (WireDecodeError, GlobalDictionaryMismatch) as exc:
        return "error", (type(exc).__name__, str(exc))
    return "ok", _result_form(result)


def both(run: Callable[[], object]) -> tuple[Outcome, Outcome]:
    """The outcomes of ``run`` with the compiled decoder and with the pure-Python one."""
    with decoder(_fast.compiled):
        fast = outcome(run)
    with decoder(None):
        pure = outcome(run)
    return fast, pure


def decode_with_both(run: Callable[[], _T]) -> _T:
    """``run()`` with the decoder in use, after checking that both decoders agree on it.

    :raises DecodersDisagree: they do not.
    """
    if _fast.compiled is not None:
        fast, pure = both(run)
        if fast != pure:
            raise DecodersDisagree(f"compiled: {fast!r}\npure Python: {pure!r}")
    return run()
