"""The jwt handler: verifies a request's bearer token and produces its ``request.auth.*`` attributes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from jwt.algorithms import get_default_algorithms

from adapters.jwt._config import JwtConfig, MissingToken
from adapters.jwt._keys import KeySet, inline_keys, parse_jwks
from adapters.jwt._template import RequestAuthInstance
from adapters.jwt._token import MalformedToken, bearer_token, claim_attributes, claims_of, parse_compact
from mixer import CheckHandler, CheckResult, Code, Status
from mixer.redact import redact_text, redact_url
from mixer.templates import Instance

_ALGORITHMS = get_default_algorithms()
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


class KeySetFetchError(Exception):
    """The key set source answered, but not with a usable document."""


@dataclass(slots=True)
class JwtStats:
    verified: int = 0
    #: Refusals by reason (a fixed set of keys: ``DENY_*``).
    denied: dict[str, int] = field(default_factory=dict)
    #: Key set loads that installed or confirmed a key set, and those that failed.
    fetches: int = 0
    fetch_errors: int = 0
    #: Loads started early because a token named a ``kid`` no key has.
    early_refreshes: int = 0
    #: Keys left out of the last key set loaded (unsupported, weak, beyond ``max_keys``).
    keys_skipped: int = 0


class JwtHandler(CheckHandler):
    """Verifies ``requestauth`` instances' tokens against inline keys and a JWKS (file or URL).

    A remote key set is loaded by a task that :meth:`start` launches (at once, then every
    ``refresh_interval``); a failed load keeps the last good set. A token whose ``kid`` no key
    has starts one load early, at most once per ``min_refresh_interval``, shared by every check
    waiting for it.
    """

    def __init__(
        self,
        config: JwtConfig,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._logger = logger
        self._clock = clock
        self._monotonic = monotonic
        self._algorithms = frozenset(config.algorithms)
        self._inline = KeySet(inline_keys(config.keys, config.algorithms))
        self._source = config.jwks_url or config.jwks_file
        self._remote: KeySet | None = None
        self._digest: bytes | None = None
        self._last_attempt = -math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.stats = JwtStats()
        self.last_error: str | None = None
        if not self._source and not len(self._inline):
            logger.warning("jwt handler has no keys: every token will be refused")

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
        if not keys and self._source and await self._refresh_for_unknown_key():
            keys = self._candidates(kid, algorithm)
        if not keys:
            if self._source and self._remote is None:
                # Fail closed, and let no proxy cache what the next load may change. Where the
                # keys come from and why they failed to load is for the log, not the caller.
                return CheckResult(
                    Status(Code.UNAVAILABLE, KEYS_NOT_LOADED),
                    _NOT_CACHED,
                    0,
                )
            named = f"kid {kid!r}" if kid is not None else "a token without kid"
            return self._deny(DENY_UNKNOWN_KEY, f"no {algorithm} key for {named}", cache=False)

        verifier = _ALGORITHMS[algorithm]
        if not any(verifier.verify(parsed.signing_input, key, parsed.signature) for key in keys):
            return self._deny(DENY_SIGNATURE, "signature verification failed")
        try:
            claims = claims_of(parsed.payload)
        except MalformedToken as exc:
            return self._deny(DENY_MALFORMED, f"malformed token: {exc}")
        return self._validate(claims, parsed.payload)

    def _validate(self, claims: dict[str, Any], payload: bytes) -> CheckResult:
        config = self._config
        for name in config.required_claims:
            if name not in claims:
                return self._deny(DENY_CLAIMS, f"the token lacks the required claim {name!r}")
        now = self._clock()
        leeway = config.leeway.total_seconds()
        times: dict[str, float] = {}
        for name in ("exp", "nbf", "iat"):
            if name in claims:
                value = claims[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    return self._deny(DENY_CLAIMS, f"claim {name!r} is not a number of seconds")
                times[name] = float(value)
        expires = times.get("exp")
        if expires is not None and now > expires + leeway:
            return self._deny(DENY_EXPIRED, f"token expired at {_when(expires)}")
        not_before = times.get("nbf")
        if not_before is not None and now + leeway < not_before:
            until = timedelta(seconds=not_before - leeway - now)
            return self._deny(DENY_NOT_YET_VALID, f"token not valid before {_when(not_before)}", until=until)
        issued = times.get("iat")
        if issued is not None and now + leeway < issued:
            return self._deny(DENY_NOT_YET_VALID, f"token issued in the future ({_when(issued)})")
        if config.issuers:
            issuer = claims.get("iss")
            if not isinstance(issuer, str) or issuer not in config.issuers:
                return self._deny(DENY_ISSUER, f"issuer {issuer!r} is not accepted")
        if config.audiences:
            audience = claims.get("aud")
            named = (
                [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
            )
            if not any(isinstance(a, str) and a in config.audiences for a in named):
                return self._deny(DENY_AUDIENCE, f"audience {audience!r} is not accepted")
        try:
            attributes = claim_attributes(claims, payload)
        except UnicodeDecodeError:
            return self._deny(DENY_MALFORMED, "malformed token: the payload is not UTF-8")
        self.stats.verified += 1
        valid = config.valid_duration
        if expires is not None:
            # An answer cached past the token's expiry would let an expired token through.
            valid = min(valid, timedelta(seconds=max(0.0, expires - now)))
        return CheckResult(Status(), valid, config.valid_use_count, attributes=attributes)

    def _candidates(self, kid: str | None, algorithm: str) -> list[Any]:
        keys = self._inline.candidates(kid, algorithm)
        if self._remote is not None:
            keys.extend(self._remote.candidates(kid, algorithm))
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
        return len(self._inline) + (len(self._remote) if self._remote is not None else 0)

    async def refresh(self) -> bool:
        """Load the key set once (joining a load already running); on failure keep the last good one.

        :returns: whether a key set was installed or confirmed unchanged.
        """
        if self._inflight is None:
            self._last_attempt = self._monotonic()
            self._inflight = asyncio.get_running_loop().create_task(self._load(), name=f"jwks {self._source}")
            self._inflight.add_done_callback(self._load_done)
        # Shielded: a check that gives up (its deadline) must not cancel a load others wait for.
        return await asyncio.shield(self._inflight)

    def _load_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_for_unknown_key(self) -> bool:
        if self._closed:
            return False
        if self._inflight is None:
            if self._monotonic() - self._last_attempt < self._config.min_refresh_interval.total_seconds():
                return False
            self.stats.early_refreshes += 1
        return await self.refresh()

    async def _load(self) -> bool:
        source = self._source
        config = self._config
        try:
            body = await self._fetch()
            digest = hashlib.sha256(body).digest()
            if digest != self._digest or self._remote is None:
                parsed = parse_jwks(body, config.algorithms, config.max_keys)
                self._remote = KeySet(parsed.keys)
                self._digest = digest
                self.stats.keys_skipped = len(parsed.skipped)
                for reason in parsed.skipped[:5]:
                    self._logger.warning("key set from %s: key left out: %s", source, reason)
                self._logger.info(
                    "key set from %s installed: %d keys (kids: %s)",
                    source,
                    len(self._remote),
                    ", ".join(self._remote.kids()) or "none",
                )
        except (aiohttp.ClientError, OSError, TimeoutError, KeySetFetchError, ValueError) as exc:
            self.stats.fetch_errors += 1
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.last_error = redact_text(error)
            self._logger.warning(
                "could not load the key set from %s: %s", redact_url(source), self.last_error
            )
            return False
        self.stats.fetches += 1
        self.last_error = None
        return True

    async def _fetch(self) -> bytes:
        config = self._config
        limit = config.max_jwks_bytes
        if config.jwks_file:
            return await asyncio.to_thread(_read_file, Path(config.jwks_file), limit)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=config.fetch_timeout.total_seconds())
        async with self._session.get(config.jwks_url, timeout=timeout) as response:
            if response.status != 200:
                raise KeySetFetchError(f"{config.jwks_url} answered HTTP {response.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise KeySetFetchError(f"the key set is larger than max_jwks_bytes ({limit})")
                chunks.append(chunk)
            return b"".join(chunks)

    async def _refresh_forever(self) -> None:
        interval = self._config.refresh_interval.total_seconds()
        while True:
            await self.refresh()
            await asyncio.sleep(interval)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._source and self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_forever(), name=f"jwks refresh {self._source}"
            )

    async def shutdown(self, timeout: float) -> None:
        self._closed = True
        tasks = [task for task in (self._task, self._inflight) if task is not None]
        self._task = self._inflight = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f}"


def _read_file(path: Path, limit: int) -> bytes:
    with path.open("rb") as file:
        body = file.read(limit + 1)
    if len(body) > limit:
        raise KeySetFetchError(f"{path} is larger than max_jwks_bytes ({limit})")
    return body
