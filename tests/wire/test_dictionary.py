"""The global dictionary, and the generated protobuf modules it is used with."""

from __future__ import annotations

import pytest

from mixer.proto import build
from mixer.status import Code
from mixer.wire import (
    GLOBAL_WORD_COUNT,
    GLOBAL_WORD_INDEX,
    GLOBAL_WORDS,
    GlobalDictionaryMismatch,
    WireDecodeError,
    check_global_word_count,
)


def test_has_222_raw_entries() -> None:
    assert len(GLOBAL_WORDS) == GLOBAL_WORD_COUNT == 222
    assert isinstance(GLOBAL_WORDS, tuple)
    assert GLOBAL_WORDS[0] == "source.ip"
    # The quotes are part of the words: the reference generators copy the raw line text.
    assert GLOBAL_WORDS[94] == "'200'"
    assert GLOBAL_WORDS[111] == "'0'"
    assert GLOBAL_WORDS[112] == "'1'"
    assert GLOBAL_WORDS[218] == '"-"'
    assert GLOBAL_WORDS[-1] == "context.proxy_version"
    assert all(word == word.strip() and word for word in GLOBAL_WORDS)


def test_index_is_the_inverse_of_the_list() -> None:
    assert len(GLOBAL_WORD_INDEX) == 222
    assert all(GLOBAL_WORDS[index] == word for word, index in GLOBAL_WORD_INDEX.items())
    assert GLOBAL_WORD_INDEX["request.headers"] == 15
    with pytest.raises(TypeError):
        GLOBAL_WORD_INDEX["new"] = 1  # type: ignore[index]


@pytest.mark.parametrize("count", [0, 1, 150, 222])
def test_a_client_with_as_many_or_fewer_words_is_accepted(count: int) -> None:
    check_global_word_count(count)


def test_a_client_with_more_words_is_an_internal_error() -> None:
    with pytest.raises(GlobalDictionaryMismatch) as info:
        check_global_word_count(223)
    assert str(info.value) == (
        "inconsistent global dictionary versions used: mixer knows 222 words, caller knows 223"
    )
    assert info.value.code is Code.INTERNAL
    assert not isinstance(info.value, WireDecodeError)
    assert WireDecodeError.code is Code.INVALID_ARGUMENT


def test_committed_generated_modules_are_fresh() -> None:
    assert build.stale_files() == []
