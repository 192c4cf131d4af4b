"""Registers Mixer's built-in templates, and plancheck, through the hook third-party templates use."""

from __future__ import annotations

from mixer import hookimpl
from mixer.templates import BUILTIN_TEMPLATES, PLAN_TEMPLATES, TemplateSpec


@hookimpl
def mixer_register_templates() -> list[TemplateSpec]:
    return [*BUILTIN_TEMPLATES, *PLAN_TEMPLATES]
