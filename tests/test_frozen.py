"""quick_init: every quickened class is made as dataclasses would make it, and stays frozen."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

# The modules whose values a Check makes: importing them applies quick_init.
import mixer.adapter
import mixer.decision
import mixer.plans
import mixer.quota
import mixer.runtime
from mixer.frozen import quick_init, quickened

_CLASSES = quickened()


def test_the_values_of_a_check_are_quickened() -> None:
    names = {cls.__name__ for cls, _ in _CLASSES}
    assert {"CounterRequest", "CheckOutcome", "CheckResult", "Status", "RateLimitInfo"} <= names
    assert mixer.decision.CheckOutcome.__init__.__qualname__ == "CheckOutcome.__init__"
    assert mixer.adapter.CheckResult in {cls for cls, _ in _CLASSES}


class _Token:
    """A distinct object per field, so a value stored in the wrong slot shows."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _made(cls: type[Any], init: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    obj = object.__new__(cls)
    init(obj, *args, **kwargs)
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@pytest.mark.parametrize(("cls", "reference"), _CLASSES, ids=[cls.__qualname__ for cls, _ in _CLASSES])
def test_quick_init_stores_what_the_dataclass_init_stores(cls: type[Any], reference: Any) -> None:
    fields = dataclasses.fields(cls)
    tokens = [_Token(f.name) for f in fields]
    every = _fields_of(cls(*tokens))
    assert every == _made(cls, reference, *tokens)
    assert all(every[f.name] is token for f, token in zip(fields, tokens, strict=True))
    by_name = {f.name: token for f, token in zip(fields, tokens, strict=True)}
    assert _fields_of(cls(**by_name)) == every

    # Only what has no default: defaults and default factories as dataclasses applies them.
    required = {f.name: _Token(f.name) for f in fields if _required(f)}
    quick = cls(**required)
    assert _fields_of(quick) == _made(cls, reference, **required)
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            # A fresh object per instance, never one shared between them.
            assert getattr(quick, f.name) is not getattr(cls(**required), f.name)

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(quick, fields[0].name, None)
    assert list(inspect.signature(cls).parameters) == [f.name for f in fields]


@pytest.mark.parametrize(("cls", "reference"), _CLASSES, ids=[cls.__qualname__ for cls, _ in _CLASSES])
def test_quick_init_refuses_what_the_dataclass_init_refuses(cls: type[Any], reference: Any) -> None:
    fields = dataclasses.fields(cls)
    too_many = [None] * (len(fields) + 1)
    for init in (cls.__init__, reference):
        with pytest.raises(TypeError):
            init(object.__new__(cls), *too_many)
        with pytest.raises(TypeError):
            init(object.__new__(cls), nope=1)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def test_quick_init_takes_only_frozen_slotted_plain_dataclasses() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True, slots=True)
    class Hidden:
        a: int = field(init=False, default=0)

    for cls in (NoSlots, NotFrozen, PostInit, KeywordOnly, Hidden):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_a_quickened_class_keeps_equality_hash_and_repr() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Point:
        x: int
        y: int = 2
        tags: list[str] = field(default_factory=list)

    a, b = Point(1), Point(1, 2, [])
    assert a == b
    assert repr(a).endswith(".Point(x=1, y=2, tags=[])")
    assert Point(1, 3, ["t"]).tags == ["t"]
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))  # type: ignore[arg-type]
