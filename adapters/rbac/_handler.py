"""The rbac handler: allow-list decisions on authorization instances."""

from __future__ import annotations

from adapters.rbac._config import RbacConfig
from adapters.rbac._policy import Policy, Request, describe, split_groups
from mixer import CheckHandler, CheckResult, Code, Status
from mixer.templates import AuthorizationInstance, Instance


class RbacHandler(CheckHandler):
    """Allows an action when a role bound to the subject has a rule matching it; denies otherwise."""

    def __init__(self, config: RbacConfig) -> None:
        self._config = config
        self._policy = Policy(config)
        #: Decisions made, for tests and operators' debugging.
        self.allowed = 0
        self.denied = 0

    async def handle_check(self, instance: Instance) -> CheckResult:
        if not isinstance(instance, AuthorizationInstance):
            wrong = f"rbac takes authorization instances, not {instance.template}"
            return self._answer(Status(Code.INVALID_ARGUMENT, wrong))
        subject, action = instance.subject, instance.action
        request = Request(
            user=subject.user or "",
            groups=split_groups(subject.groups),
            subject_properties=subject.properties,
            namespace=action.namespace,
            service=action.service,
            method=action.method,
            path=action.path,
            action_properties=action.properties,
        )
        if self._policy.allowing_role(request) is not None:
            self.allowed += 1
            return self._answer(Status())
        self.denied += 1
        return self._answer(Status(Code.PERMISSION_DENIED, f"RBAC: {describe(request)}"))

    def _answer(self, status: Status) -> CheckResult:
        return CheckResult(status, self._config.valid_duration, self._config.valid_use_count)
