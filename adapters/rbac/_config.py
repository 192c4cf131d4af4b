"""The rbac adapter's params: roles (what may be done) and bindings (who has a role)."""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from adapters.rbac._patterns import check_pattern
from mixer.params import NonNegativeDuration


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


def _patterns(values: list[str]) -> list[str]:
    for value in values:
        check_pattern(value)
    return values


class Constraint(_Model):
    """``action.properties[key]`` must match one of ``values``."""

    key: str = Field(min_length=1, description="The ``action.properties`` key.")
    values: list[str] = Field(min_length=1, description="Patterns, one of which the property must match.")

    @field_validator("values")
    @classmethod
    def _valid(cls, values: list[str]) -> list[str]:
        return _patterns(values)


class AccessRule(_Model):
    """What a role allows. Every field is a list of patterns; an empty list allows any value."""

    namespaces: list[str] = Field(
        default_factory=list, description="Patterns the action's namespace must match."
    )
    services: list[str] = Field(default_factory=list, description="Patterns the action's service must match.")
    methods: list[str] = Field(default_factory=list, description="Patterns the action's method must match.")
    paths: list[str] = Field(default_factory=list, description="Patterns the action's path must match.")
    constraints: list[Constraint] = Field(
        default_factory=list, description="Action properties that must match, all of them."
    )

    @field_validator("namespaces", "services", "methods", "paths")
    @classmethod
    def _valid(cls, values: list[str]) -> list[str]:
        return _patterns(values)


class Role(_Model):
    name: str = Field(min_length=1, description="The name bindings refer to.")
    rules: list[AccessRule] = Field(
        default_factory=list, description="What the role allows: an action is allowed when one rule matches."
    )


class BindingSubject(_Model):
    """Who: every field given must match (a user, a group, subject properties)."""

    user: str | None = Field(default=None, description="Pattern the subject's user must match.")
    group: str | None = Field(default=None, description="Pattern one of the subject's groups must match.")
    properties: dict[str, str] = Field(
        default_factory=dict, description="Subject properties and the patterns they must match."
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.user is None and self.group is None and not self.properties:
            raise ValueError('a subject needs a user, a group or properties (user: "*" for everyone)')
        for value in (self.user, self.group, *self.properties.values()):
            if value is not None:
                check_pattern(value)
        return self


class Binding(_Model):
    role: str = Field(min_length=1, description="The role granted.")
    subjects: list[BindingSubject] = Field(
        min_length=1, description="Who is granted the role: any subject matching."
    )


class RbacConfig(_Model):
    """Params of an ``rbac`` handler; snake_case and camelCase keys are both accepted."""

    roles: list[Role] = Field(default_factory=list, description="The roles, each with the actions it allows.")
    bindings: list[Binding] = Field(default_factory=list, description="Which subjects have which roles.")
    valid_duration: NonNegativeDuration = Field(
        default=timedelta(seconds=60), description="How long a proxy may cache an answer."
    )
    valid_use_count: int = Field(
        default=10000, ge=0, description="How many uses a proxy may answer from its cache."
    )

    @model_validator(mode="after")
    def _references(self) -> Self:
        names: set[str] = set()
        for i, role in enumerate(self.roles):
            if role.name in names:
                raise ValueError(f"roles[{i}]: role {role.name!r} is defined twice")
            names.add(role.name)
        for i, binding in enumerate(self.bindings):
            if binding.role not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ValueError(f"bindings[{i}]: unknown role {binding.role!r} (roles: {known})")
        return self
