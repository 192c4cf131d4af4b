"""The read-only mapping a decoded STRING_MAP attribute is handed out as."""

from __future__ import annotations

from typing import Any, NoReturn


class FrozenStringMap(dict[str, str]):
    """A STRING_MAP value: a ``dict`` that refuses to change.

    A dict subclass rather than a view or a lazily resolved mapping: the decoder builds the
    dict anyway (resolving the indices up front measured faster than validating them up front
    and resolving later), reads stay at C speed, it compares equal to any dict with the same
    items, and it pickles and copies, which ``types.MappingProxyType`` does not. Read-only
    because under DELTA_ENCODING consecutive bags share one instance.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("decoded string maps are read-only")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[type[FrozenStringMap], tuple[dict[str, str]]]:
        # The default for dict subclasses restores items through __setitem__, which refuses.
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenStringMap:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenStringMap:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
