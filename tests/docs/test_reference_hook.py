"""The site hook's own rules: link rewriting, section includes and the rendering of schema values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HOOK = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "reference.py"


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mixer_docs_reference_hook", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_links_into_docs_and_to_adapter_readmes(hook: ModuleType) -> None:
    text = "See [quotas](../../docs/quotas.md#redis) and [memquota](../memquota/README.md)."
    out = hook.rewrite_links(text, "adapters/redisquota/README.md", "adapters/redisquota.md")
    assert out == "See [quotas](../quotas.md#redis) and [memquota](memquota.md)."


def test_other_repository_files_become_paths(hook: ModuleType) -> None:
    out = hook.rewrite_links(
        "[the config](../deploy/nginx/nginx.conf) and [deploy/kubernetes/](../deploy/kubernetes/)",
        "docs/quotas.md",
        "quotas.md",
    )
    assert out == "the config (`deploy/nginx/nginx.conf`) and `deploy/kubernetes/`"


def test_missing_targets_web_links_and_code_blocks_are_left_alone(hook: ModuleType) -> None:
    text = (
        "[gone](../adapters/nosuch/README.md) [web](https://example.com/a.md) [here](#top)\n"
        "```markdown\n[inside](../adapters/stdio/README.md)\n```\n"
    )
    assert hook.rewrite_links(text, "docs/x.md", "x.md") == text


def test_a_section_ends_at_the_next_heading_of_its_level_not_at_comments_in_code(hook: ModuleType) -> None:
    text = "# Top\n## One\nfirst\n```sh\n# a comment\n```\n### Sub\nsub\n## Two\nsecond\n"
    assert hook._section(text, "One", "t.md") == "first\n```sh\n# a comment\n```\n### Sub\nsub\n"
    with pytest.raises(ValueError, match="no section 'Three'"):
        hook._section(text, "Three", "t.md")


@pytest.mark.parametrize(
    ("iso", "text"),
    [
        ("PT5S", "5s"),
        ("PT0.2S", "0.2s"),
        ("PT1M", "1m"),
        ("PT1H30M", "1h30m"),
        ("P1D", "24h"),
        ("PT0S", "0s"),
    ],
)
def test_durations_read_as_config_writes_them(hook: ModuleType, iso: str, text: str) -> None:
    assert hook._duration(iso) == text
