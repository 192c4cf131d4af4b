"""The project's shared reference data, found beside the checkout (``../shared``).

Some facts may be read there but not copied into the project (Istio's own configs, the golden
messages' originals). A test that needs them fails, never skips, when the folder is missing: a
checkout without it cannot show those facts hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``shared/`` beside the repository root (the root is the parent of tests/).
SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """The path under ``../shared``; fails the calling test with a clear message when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"{path} is missing: this test reads the project's shared reference data, which is laid "
            "beside the checkout as ../shared (it may not be copied into the repository)",
            pytrace=False,
        )
    return path
