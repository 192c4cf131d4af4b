"""Registers Mixer's built-in templates through the same hook third-party templates use."""

from __future__ import annotations

from mixer import hookimpl
from mixer.templates import BUILTIN_TEMPLATES, TemplateSpec


@hookimpl
def mixer_register_templates() -> list[TemplateSpec]:
    return list(BUILTIN_TEMPLATES)
