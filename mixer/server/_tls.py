"""TLS on the gRPC and HTTP listeners: server certificates, client certificates (mTLS), the
identities a client certificate may carry, and reloading the files without a restart."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
from aiohttp import web

from mixer.server._http import PROBE_PATHS

logger = logging.getLogger("mixer.server.tls")

#: ``none``: no client certificate is asked for; ``optional``: one is asked for and verified when
#: sent; ``require``: a connection without a trusted one is refused in the handshake.
CLIENT_AUTH_MODES: Final = ("none", "optional", "require")
#: How often the certificate files are checked for changes (a stat of each, no read).
TLS_POLL_SECONDS: Final = 1.0

DENIED_IDENTITY: Final = "client certificate identity not allowed"
NO_IDENTITY: Final = "a client certificate is required"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What ``--tls-*`` asked for; ``allowed_identities`` empty allows every trusted certificate."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    client_auth: str = "none"
    allowed_identities: tuple[str, ...] = ()

    @property
    def checks_identity(self) -> bool:
        return bool(self.allowed_identities)


@dataclass(frozen=True, slots=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None


def _stamp(paths: Iterable[Path | None]) -> tuple[tuple[int, int, int], ...]:
    # Inode too: tools rotate by renaming a new file over the old one (Kubernetes secrets do).
    out: list[tuple[int, int, int]] = []
    for path in paths:
        if path is None:
            continue
        st = os.stat(path)
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def identities_of_peercert(peercert: dict[str, Any] | None) -> list[str]:
    """The SAN DNS names and URIs of a certificate as :meth:`ssl.SSLSocket.getpeercert` gives it."""
    if not peercert:
        return []
    return [str(value) for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "URI")]


def identity_allowed(identities: Sequence[str], allowed: Iterable[str]) -> bool:
    allowed_set = set(allowed)
    return any(identity in allowed_set for identity in identities)


class ServerTls:
    """One set of certificate files, served on both listeners and reloaded when they change.

    The HTTP listener uses :attr:`ssl_context`, loaded again in place so that new handshakes get
    the new chain (connections already open keep theirs). gRPC asks :meth:`_fetch` at handshakes
    through its dynamic credentials. A file that does not load (half-written, key and certificate
    not matching) is logged and the previous certificate is kept.

    :raises ValueError: the files cannot be read or do not load at start.
    """

    def __init__(self, settings: TlsSettings) -> None:
        if settings.client_auth not in CLIENT_AUTH_MODES:
            raise ValueError(f"--tls-client-auth must be one of {', '.join(CLIENT_AUTH_MODES)}")
        if settings.client_auth != "none" and settings.client_ca is None:
            raise ValueError(f"--tls-client-auth {settings.client_auth} needs --tls-client-ca")
        self.settings = settings
        self._lock = threading.Lock()
        try:
            self._stamp = _stamp(self._paths())
            material = self._read()
            self.ssl_context = self._new_context(material)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS files do not load: {exc}") from exc
        self._grpc_pending: Any = None
        self._initial_grpc = self._grpc_config(material)
        self.reloads = 0
        self.reload_failures = 0

    def _paths(self) -> tuple[Path | None, ...]:
        s = self.settings
        return (s.cert, s.key, s.client_ca)

    def _read(self) -> _Material:
        s = self.settings
        ca = s.client_ca.read_bytes() if s.client_ca is not None and s.client_auth != "none" else None
        return _Material(s.cert.read_bytes(), s.key.read_bytes(), ca)

    def _new_context(self, material: _Material) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load(ctx, material)
        ctx.verify_mode = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "require": ssl.CERT_REQUIRED,
        }[self.settings.client_auth]
        return ctx

    def _load(self, ctx: ssl.SSLContext, material: _Material) -> None:
        # load_cert_chain reads files only. The bytes read once are written to a private folder
        # and loaded from there, so the pair checked on the scratch context is the pair loaded on
        # the live one even if the files change meanwhile (a mismatched pair would be half-loaded).
        with tempfile.TemporaryDirectory(prefix="mixer-tls-") as folder:
            cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert.write_bytes(material.cert)
            key.touch(mode=0o600)
            key.write_bytes(material.key)
            ctx.load_cert_chain(cert, key)
        if material.client_ca is not None:
            # Adds to the trust store: a CA removed from the file stays trusted until a restart.
            ctx.load_verify_locations(cadata=material.client_ca.decode("ascii", "replace"))

    def _grpc_config(self, material: _Material) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.client_ca
        )

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Dynamic credentials: a rotated certificate is served at the next handshake.

        grpc's Python API either requires a client certificate or asks for none: with
        ``optional`` the gRPC listener asks for none, unless identities are to be checked, which
        needs a certificate (see docs/serving.md).
        """
        s = self.settings
        return grpc.dynamic_ssl_server_credentials(
            self._initial_grpc,
            self._fetch,
            require_client_authentication=s.client_auth == "require"
            or (s.client_auth == "optional" and s.checks_identity),
        )

    def _fetch(self) -> Any:
        # Called by grpc's threads at handshakes: hand over a config that refresh() prepared.
        with self._lock:
            pending, self._grpc_pending = self._grpc_pending, None
        return pending

    def refresh(self) -> bool:
        """Load the files again if they changed; whether a new certificate is now served."""
        try:
            stamp = _stamp(self._paths())
        except OSError as exc:
            logger.warning("TLS files: cannot stat (%s); keeping the current certificate", exc)
            return False
        if stamp == self._stamp:
            return False
        try:
            material = self._read()
            # Checked on a scratch context first: a failed load may leave a live context half-set.
            self._new_context(material)
            self._load(self.ssl_context, material)
            config = self._grpc_config(material)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.reload_failures += 1
            # Not marked seen: a writer that has not finished yet gets another look next time.
            logger.warning("TLS files changed but do not load (%s); keeping the current certificate", exc)
            return False
        with self._lock:
            self._grpc_pending = config
        self._stamp = stamp
        self.reloads += 1
        logger.info("TLS certificate reloaded from %s", self.settings.cert)
        return True

    async def watch(self, interval: float = TLS_POLL_SECONDS) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.refresh)

    # -- identities ---------------------------------------------------------------------------

    def http_middleware(self) -> Any:
        """Refuses data requests whose client certificate carries no allowed identity (403 JSON)."""
        allowed = self.settings.allowed_identities

        @web.middleware
        async def check_identity(
            request: web.Request, handler: Callable[[web.Request], Any]
        ) -> web.StreamResponse:
            # Probes need no identity: kubelet sends no client certificate.
            if allowed and request.path not in PROBE_PATHS:
                transport = request.transport
                peercert = transport.get_extra_info("peercert") if transport is not None else None
                identities = identities_of_peercert(peercert)
                if not identities and not peercert:
                    return web.json_response({"error": NO_IDENTITY}, status=401)
                if not identity_allowed(identities, allowed):
                    logger.info("HTTP client refused: identities %s not allowed", identities)
                    return web.json_response({"error": DENIED_IDENTITY}, status=403)
            response: web.StreamResponse = await handler(request)
            return response

        return check_identity

    def grpc_handlers(self, handlers: Iterable[Any]) -> list[Any]:
        """``handlers`` with every method checking the caller's certificate identity first."""
        if not self.settings.allowed_identities:
            return list(handlers)
        return [_IdentityCheckingHandler(h, self.settings.allowed_identities) for h in handlers]


def grpc_peer_identities(context: Any) -> list[str] | None:
    """The SAN identities of the gRPC peer's certificate; None without one."""
    auth = context.auth_context() or {}
    if not auth.get("x509_pem_cert") and not auth.get("x509_subject_alternative_name"):
        return None
    return [v.decode("utf-8", "replace") for v in auth.get("x509_subject_alternative_name", ())]


class _IdentityCheckingHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    def __init__(self, inner: Any, allowed: tuple[str, ...]) -> None:
        self._inner = inner
        self._allowed = frozenset(allowed)

    async def _check(self, context: Any) -> None:
        identities = grpc_peer_identities(context)
        if identities is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_IDENTITY)
        elif not identity_allowed(identities, self._allowed):
            logger.info("gRPC client %s refused: identities %s not allowed", context.peer(), identities)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED_IDENTITY)

    def service(self, handler_call_details: Any) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        changes: dict[str, Any] = {}
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                changes[kind] = self._wrap(behavior)
        return handler._replace(**changes)

    def _wrap(self, behavior: Any) -> Any:
        check = self._check
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await check(context)
                async for item in behavior(request, context):
                    yield item

            return stream

        async def call(request: Any, context: Any) -> Any:
            await check(context)
            return await behavior(request, context)

        return call
