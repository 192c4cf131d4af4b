"""parse_ip: the C parser's fast path gives ipaddress.ip_address's answer, or its error."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.attributes import parse_ip


def _reference(text: str) -> object:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        return ("error", str(exc))


def _ours(text: str) -> object:
    try:
        return parse_ip(text)
    except ValueError as exc:
        return ("error", str(exc))


_octet = st.one_of(st.integers(0, 300).map(str), st.text("0123456789", min_size=1, max_size=4))
_dotted = st.lists(_octet, min_size=1, max_size=5).map(".".join)
_group = st.text("0123456789abcdefABCDEF", max_size=5)
_colons = st.lists(_group, min_size=1, max_size=10).map(":".join)
_mapped = st.tuples(_colons, _dotted).map(":".join)
_noisy = st.text(alphabet=st.sampled_from("0123456789abcdef.:%[] \t\x00\u0661x"), max_size=45)


@settings(max_examples=300)
@given(st.one_of(_dotted, _colons, _mapped, _noisy, st.text(max_size=40)))
def test_every_text_reads_as_ipaddress_reads_it(text: str) -> None:
    assert _ours(text) == _reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "10.1.0.17",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "::ffff:10.0.0.1",
        "2001:db8::8a2e:370:7334",
        "fe80::1%eth0",
        "01.2.3.4",
        "1.2.3",
        " 1.2.3.4",
        "256.1.1.1",
        "1.2.3.4\x00",
        "\u0661.2.3.4",
        "",
    ],
)
def test_spellings_the_c_parser_accepts_or_refuses(text: str) -> None:
    ours, reference = _ours(text), _reference(text)
    assert ours == reference
    assert type(ours) is type(reference)
    if not isinstance(reference, tuple):
        # The scope id is part of an IPv6 address's identity but not of its equality.
        assert str(ours) == str(reference)
