"""The jwt handler: verifies a request's bearer token and produces its ``request.auth.*`` attributes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from adapters.jwt._config import JwtConfig, MissingToken
from adapters.jwt._keys import KeySet, inline_keys, parse_jwks
from adapters.jwt._template import RequestAuthInstance
from adapters.jwt._token import MalformedToken, bearer_token, claim_attributes, claims_of, parse_compact
from mixer import CheckHandler, CheckResult, Code, Status
from mixer.fetch import FetchStats, RemoteDocument
from mixer.redact import redact_url
from mixer.templates import Instance

_NOT_CACHED = timedelta(0)
#: What a caller is told while no signing keys are loaded.
KEYS_NOT_LOADED = "signing keys not loaded"

#: Reasons a token is refused (the keys of ``JwtStats.denied``).
DENY_MISSING = "missing"
DENY_MALFORMED = "malformed"
DENY_ALGORITHM = "algorithm"
DENY_UNKNOWN_KEY = "unknown_key"
DENY_SIGNATURE = "signature"
DENY_EXPIRED = "expired"
DENY_NOT_YET_VALID = "not_yet_valid"
DENY_ISSUER = "issuer"
DENY_AUDIENCE = "audience"
DENY_CLAIMS = "claims"


@dataclass(slots=True)
class JwtStats:
    verified: int = 0
    #: Refusals by reason (a fixed set of keys: ``DENY_*``).
    denied: dict[str, int] = field(default_factory=dict)
    #: Loads started early because a token named a ``kid`` no key has.
    early_refreshes: int = 0
    #: Keys left out of the last key set loaded (unsupported, weak, beyond ``max_keys``).
    keys_skipped: int = 0
    #: The key set source's counters.
    source: FetchStats = field(default_factory=FetchStats)

    @property
    def fetches(self) -> int:
        """Key set loads that installed or confirmed a key set."""
        return self.source.fetches

    @property
    def fetch_errors(self) -> int:
        """Key set loads that failed."""
        return self.source.failures


class JwtHandler(CheckHandler):
    """Verifies ``requestauth`` instances' tokens against inline keys and a JWKS (file or URL).

    PyJWT checks the signature and the registered claims; this handler picks the candidate keys,
    keeps the key set fresh and turns PyJWT's refusals into its own reasons. A remote key set is
    loaded by a task that :meth:`start` launches (at once, then every ``refresh_interval``; sooner,
    with backoff, after a failure); a failed load keeps the last good set. A token whose ``kid``
    no key has starts one load early, at most once per ``min_refresh_interval``, shared by every
    check waiting for it. Time claims are judged by the wall clock, as PyJWT reads it.
    """

    def __init__(
        self,
        config: JwtConfig,
        logger: logging.Logger,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._logger = logger
        self._monotonic = monotonic
        self._algorithms = frozenset(config.algorithms)
        self._inline = KeySet(inline_keys(config.keys, config.algorithms))
        self._decoder = jwt.PyJWT()
        self._options: Any = {
            "require": list(config.required_claims),
            "verify_aud": bool(config.audiences),
            "verify_iss": bool(config.issuers),
            # Not checked before PyJWT did; a token's sub and jti are the issuer's business.
            "verify_sub": False,
            "verify_jti": False,
            "enforce_minimum_key_length": True,
        }
        self._document: RemoteDocument[KeySet] | None = None
        source = config.jwks_url or config.jwks_file
        if source:
            self._document = RemoteDocument(
                source,
                self._parse,
                what="the key set",
                logger=logger,
                max_bytes=config.max_jwks_bytes,
                size_setting="max_jwks_bytes",
                timeout=config.fetch_timeout.total_seconds(),
                interval=config.refresh_interval.total_seconds(),
                monotonic=monotonic,
            )
        self.stats = JwtStats(source=self._document.stats if self._document is not None else FetchStats())
        if self._document is None and not len(self._inline):
            logger.warning("jwt handler has no keys: every token will be refused")

    @property
    def last_error(self) -> str | None:
        """Why the last key set load failed (redacted); None after a success."""
        return self._document.last_error if self._document is not None else None

    # -- checks ---------------------------------------------------------------------------------

    async def handle_check(self, instance: Instance) -> CheckResult:
        config = self._config
        token = bearer_token(instance.token if isinstance(instance, RequestAuthInstance) else None)
        if token is None:
            if config.missing_token is MissingToken.ALLOW:
                return self._answer(Status())
            return self._deny(DENY_MISSING, "no bearer token")
        if len(token) > config.max_token_bytes:
            return self._deny(DENY_MALFORMED, f"token longer than max_token_bytes ({config.max_token_bytes})")
        # The header is read here, before PyJWT, to pick the keys and to refuse with our own reasons.
        try:
            parsed = parse_compact(token)
        except MalformedToken as exc:
            return self._deny(DENY_MALFORMED, f"malformed token: {exc}")
        header = parsed.header
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            return self._deny(DENY_ALGORITHM, f"algorithm {algorithm!r} is not accepted")
        if "crit" in header:
            return self._deny(DENY_MALFORMED, "critical header extensions are not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return self._deny(DENY_MALFORMED, "kid is not a string")

        keys = self._candidates(kid, algorithm)
        if not keys and self._document is not None and await self._refresh_for_unknown_key():
            keys = self._candidates(kid, algorithm)
        if not keys:
            if self._document is not None and self._document.value is None:
                # Fail closed, and let no proxy cache what the next load may change. Where the
                # keys come from and why they failed to load is for the log, not the caller.
                return CheckResult(Status(Code.UNAVAILABLE, KEYS_NOT_LOADED), _NOT_CACHED, 0)
            named = f"kid {kid!r}" if kid is not None else "a token without kid"
            return self._deny(DENY_UNKNOWN_KEY, f"no {algorithm} key for {named}", cache=False)

        for key in keys:
            try:
                # Only the token's algorithm, which every candidate key was prepared for.
                claims = self._decoder.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    options=self._options,
                    audience=config.audiences or None,
                    issuer=config.issuers or None,
                    leeway=config.leeway,
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
                # PyJWT checks the claims only once a key has verified the signature; the header and
                # segments it could refuse before that were already read by parse_compact.
                return self._refused(exc, parsed.payload)
            return self._accepted(claims, parsed.payload)
        return self._deny(DENY_SIGNATURE, "signature verification failed")

    def _claim_problem(self, claims: dict[str, Any]) -> CheckResult | None:
        """Claims PyJWT reads leniently (``"123"`` or ``true`` as a time) or reports without naming."""
        for name in self._config.required_claims:
            if name not in claims:
                return self._deny(DENY_CLAIMS, f"the token lacks the required claim {name!r}")
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return self._deny(DENY_CLAIMS, f"claim {name!r} is not a number of seconds")
        return None

    def _refused(self, error: Exception, payload: bytes) -> CheckResult:
        """The refusal for what PyJWT raised on a token whose signature it verified."""
        try:
            claims = claims_of(payload)
        except MalformedToken as exc:
            return self._deny(DENY_MALFORMED, f"malformed token: {exc}")
        problem = self._claim_problem(claims)
        if problem is not None:
            return problem
        missing = error.claim if isinstance(error, jwt.MissingRequiredClaimError) else None
        if isinstance(error, jwt.ExpiredSignatureError):
            return self._deny(DENY_EXPIRED, f"token expired at {_when(claims['exp'])}")
        if isinstance(error, jwt.ImmatureSignatureError):
            now = time.time()
            leeway = self._config.leeway.total_seconds()
            not_before = claims.get("nbf")
            if not_before is not None and now + leeway < not_before:
                until = timedelta(seconds=not_before - leeway - now)
                return self._deny(
                    DENY_NOT_YET_VALID, f"token not valid before {_when(not_before)}", until=until
                )
            return self._deny(DENY_NOT_YET_VALID, f"token issued in the future ({_when(claims['iat'])})")
        if isinstance(error, jwt.InvalidIssuerError) or missing == "iss":
            return self._deny(DENY_ISSUER, f"issuer {claims.get('iss')!r} is not accepted")
        if isinstance(error, jwt.InvalidAudienceError) or missing == "aud":
            return self._deny(DENY_AUDIENCE, f"audience {claims.get('aud')!r} is not accepted")
        if missing is not None:
            return self._deny(DENY_CLAIMS, f"the token lacks the required claim {missing!r}")
        return self._deny(DENY_MALFORMED, f"malformed token: {error}")

    def _accepted(self, claims: dict[str, Any], payload: bytes) -> CheckResult:
        problem = self._claim_problem(claims)
        if problem is not None:
            return problem
        try:
            attributes = claim_attributes(claims, payload)
        except UnicodeDecodeError:
            return self._deny(DENY_MALFORMED, "malformed token: the payload is not UTF-8")
        self.stats.verified += 1
        valid = self._config.valid_duration
        expires = claims.get("exp")
        if expires is not None:
            # An answer cached past the token's expiry would let an expired token through.
            valid = min(valid, timedelta(seconds=max(0.0, expires - time.time())))
        return CheckResult(Status(), valid, self._config.valid_use_count, attributes=attributes)

    def _candidates(self, kid: str | None, algorithm: str) -> list[Any]:
        keys = self._inline.candidates(kid, algorithm)
        remote = self._document.value if self._document is not None else None
        if remote is not None:
            keys.extend(remote.candidates(kid, algorithm))
        return keys

    def _answer(self, status: Status) -> CheckResult:
        return CheckResult(status, self._config.valid_duration, self._config.valid_use_count)

    def _deny(
        self, reason: str, message: str, *, cache: bool = True, until: timedelta | None = None
    ) -> CheckResult:
        denied = self.stats.denied
        denied[reason] = denied.get(reason, 0) + 1
        status = Status(Code.UNAUTHENTICATED, message)
        if not cache:
            return CheckResult(status, _NOT_CACHED, 0)
        valid = self._config.valid_duration if until is None else min(until, self._config.valid_duration)
        return CheckResult(status, valid, self._config.valid_use_count)

    # -- key set --------------------------------------------------------------------------------

    @property
    def keys(self) -> int:
        """Keys usable now: inline plus the last good key set."""
        remote = self._document.value if self._document is not None else None
        return len(self._inline) + (len(remote) if remote is not None else 0)

    async def refresh(self) -> bool:
        """Load the key set once (joining a load already running); on failure keep the last good one.

        :returns: whether a key set was installed or confirmed unchanged.
        """
        return await self._document.refresh() if self._document is not None else True

    async def _refresh_for_unknown_key(self) -> bool:
        document = self._document
        if document is None or document.closed:
            return False
        if not document.loading:
            if self._monotonic() - document.last_attempt < self._config.min_refresh_interval.total_seconds():
                return False
            self.stats.early_refreshes += 1
        return await document.refresh()

    def _parse(self, body: bytes) -> KeySet:
        config = self._config
        source = redact_url(config.jwks_url or config.jwks_file)
        parsed = parse_jwks(body, config.algorithms, config.max_keys)
        keys = KeySet(parsed.keys)
        self.stats.keys_skipped = len(parsed.skipped)
        for reason in parsed.skipped[:5]:
            self._logger.warning("key set from %s: key left out: %s", source, reason)
        self._logger.info(
            "key set from %s installed: %d keys (kids: %s)",
            source,
            len(keys),
            ", ".join(keys.kids()) or "none",
        )
        return keys

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._document is not None:
            self._document.start()

    async def shutdown(self, timeout: float) -> None:
        if self._document is not None:
            await self._document.close(timeout)


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f}"
