"""``jwt``: verifies a request's bearer token (a JWT) and produces ``request.auth.*`` attributes.

A check adapter on the ``requestauth`` template (registered here too) that declares
``produces_attributes``: the runtime runs its rules first and layers the verified claims over
the request's attributes, so later rules and handlers read ``request.auth.claims["plan"]`` and
``request.auth.principal`` as if a proxy had verified the token. Keys come from inline secrets
and PEM keys, a JWKS file or a JWKS URL. See README.md for the params.
"""

from __future__ import annotations

from adapters.jwt._config import SUPPORTED_ALGORITHMS, InlineKey, JwtConfig, MissingToken
from adapters.jwt._template import REQUESTAUTH_TEMPLATE, RequestAuthInstance
from mixer import AdapterInfo, Handler, HandlerEnv, Stability, hookimpl
from mixer.templates import TemplateSpec

__all__ = [
    "ADAPTER",
    "REQUESTAUTH_TEMPLATE",
    "SUPPORTED_ALGORITHMS",
    "InlineKey",
    "JwtConfig",
    "MissingToken",
    "RequestAuthInstance",
    "build_handler",
    "mixer_register_templates",
]


def build_handler(config: JwtConfig, env: HandlerEnv) -> Handler:
    # aiohttp and the key parsing load with the first handler, only when config names this adapter.
    from adapters.jwt._handler import JwtHandler

    return JwtHandler(config, env.logger)


ADAPTER = AdapterInfo(
    name="jwt",
    description="Verifies bearer tokens (JWT) and exposes their claims as request.auth.* attributes",
    templates=frozenset({REQUESTAUTH_TEMPLATE.name}),
    config_model=JwtConfig,
    factory=build_handler,
    stability=Stability.BETA,
    produces_attributes=True,
)


@hookimpl
def mixer_register_templates() -> list[TemplateSpec]:
    return [REQUESTAUTH_TEMPLATE]
