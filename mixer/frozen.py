"""Frozen dataclasses made as fast as plain ones: :func:`quick_init`.

A frozen dataclass cannot assign its own fields, so the ``__init__`` that :mod:`dataclasses`
writes for it stores each one through ``object.__setattr__``: a global lookup, an attribute
lookup and a call per field, 3 us for a ten-field value here against 0.7 for a class that is not
frozen. A Check makes a dozen such values (counter requests, decisions, rate limits, header
operations, results), a tenth of its CPU. :func:`quick_init` gives a frozen, slotted dataclass an
``__init__`` that stores through each slot's own descriptor instead: same signature, defaults and
default factories, same values; assignment after construction still raises
``FrozenInstanceError``. The code is written from the class's field names, which are identifiers
of our own source (checked to be), never from anything a caller sent.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["quick_init", "quickened"]

_T = TypeVar("_T")

#: Every class :func:`quick_init` was applied to, with the ``__init__`` dataclasses wrote for it
#: (the reference the tests compare with).
_QUICKENED: list[tuple[type[Any], Callable[..., None]]] = []


def quick_init(cls: type[_T]) -> type[_T]:
    """Replace the ``__init__`` of ``cls``, a ``@dataclass(frozen=True, slots=True)``.

    :raises TypeError: ``cls`` is not such a class, or uses what this ``__init__`` does not
        write: ``__post_init__``, init-only or keyword-only fields, fields left out of
        ``__init__``.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__qualname__} has __post_init__")
    fields = dataclasses.fields(cast(Any, cls))
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    signature: list[str] = []
    body: list[str] = []
    for field in fields:
        name = field.name
        if not field.init or field.kw_only or not name.isidentifier() or keyword.iskeyword(name):
            raise TypeError(f"{cls.__qualname__}.{name}: not a plain positional field")
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            signature.append(f"{name}=_default_{name}")
            body.append(f"    _set_{name}(self, {name})")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            signature.append(f"{name}=_MISSING")
            body.append(f"    _set_{name}(self, _factory_{name}() if {name} is _MISSING else {name})")
        else:
            signature.append(name)
            body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(signature)}):\n" + ("\n".join(body) or "    pass") + "\n"
    # Our own field names only (checked above); dataclasses builds its __init__ the same way.
    exec(compile(source, f"<quick __init__ of {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    reference = cls.__init__
    init.__doc__ = reference.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    _QUICKENED.append((cls, reference))
    return cls


def quickened() -> list[tuple[type[Any], Callable[..., None]]]:
    """The classes :func:`quick_init` has been applied to so far, each with the ``__init__``
    :mod:`dataclasses` wrote for it."""
    return list(_QUICKENED)
