"""Istio's global word list, shared by every proxy and Mixer of the 1.x line."""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Final

from mixer.wire._errors import GlobalDictionaryMismatch


def _load() -> tuple[str, ...]:
    # Raw line text on purpose: the reference generators copy entries such as '200' and "-"
    # verbatim, quotes included, so any YAML-style unquoting would shift meanings on the wire.
    text = resources.files("mixer.wire").joinpath("global_dictionary.txt").read_text(encoding="utf-8")
    return tuple(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))


#: Index -> word. Append-only across Istio releases, so a lower index means the same word to all.
GLOBAL_WORDS: Final[tuple[str, ...]] = _load()
#: Word -> index, for encoding. The list has no duplicate words, so the mapping is one to one.
GLOBAL_WORD_INDEX: Final[MappingProxyType[str, int]] = MappingProxyType(
    {word: index for index, word in enumerate(GLOBAL_WORDS)}
)
GLOBAL_WORD_COUNT: Final[int] = len(GLOBAL_WORDS)


def check_global_word_count(count: int) -> None:
    """Refuse a client that used more global words than this server knows.

    A smaller count is accepted: the list only ever grew at the end, so every index below the
    client's count means the same word here. Indices between the client's count and ours are
    resolved against our list rather than rejected, as Istio's Mixer does; a conforming client
    never sends them, and a client that does gets the word it would have meant after upgrading.

    :raises GlobalDictionaryMismatch: ``count`` exceeds the server's list.
    """
    if count > GLOBAL_WORD_COUNT:
        raise GlobalDictionaryMismatch(
            f"inconsistent global dictionary versions used: mixer knows {GLOBAL_WORD_COUNT} words, "
            f"caller knows {count}"
        )
