from __future__ import annotations

import argparse
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from mixer.cli._attrflags import AttributeFlagError, add_attribute_flags, attributes_from_args


def _parse(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_attribute_flags(parser)
    return dict(attributes_from_args(parser.parse_args(list(argv))))


def test_every_flag_type() -> None:
    values = _parse(
        "-s", "request.path=/a=b",
        "-i", "response.code=503",
        "-d", "custom.ratio=0.5",
        "-b", "connection.mtls=true",
        "-t", "request.time=2026-11-25T10:00:00Z",
        "-u", "response.duration=7.25ms",
        "--ip", "source.ip=10.0.0.1",
        "-m", "request.headers=x-user:jason;accept:*/*;:authority:web:8080",
    )  # fmt: skip
    assert values == {
        "request.path": "/a=b",
        "response.code": 503,
        "custom.ratio": 0.5,
        "connection.mtls": True,
        "request.time": datetime(2026, 11, 25, 10, tzinfo=UTC),
        "response.duration": timedelta(microseconds=7250),
        "source.ip": ipaddress.ip_address("10.0.0.1"),
        "request.headers": {"x-user": "jason", "accept": "*/*", ":authority": "web:8080"},
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("-s", "novalue"), "want name=value"),
        (("-i", "a=x"), "invalid int64"),
        (("-d", "a=x"), "invalid double"),
        (("-b", "a=maybe"), "invalid bool"),
        (("-t", "a=yesterday"), "invalid RFC 3339"),
        (("-t", "a=2026-11-25T10:00:00"), "needs a zone"),
        (("-u", "a=10 parsecs"), "invalid duration"),
        (("--ip", "a=10.0.0.300"), "invalid IP"),
        (("-m", "a=novalue"), "want key:value"),
    ],
)
def test_bad_flag_values(argv: tuple[str, str], message: str) -> None:
    with pytest.raises(AttributeFlagError, match=message):
        _parse(*argv)


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mixer", "adapters", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert "Traceback" not in proc.stderr
