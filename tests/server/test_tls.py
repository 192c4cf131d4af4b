"""TLS and mTLS on the gRPC and HTTP listeners of a real `mixer serve`, with trustme certificates."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mixer.api.mixer_v1 import CHECK_METHOD
from mixer.cli import build_parser
from mixer.cli._serve import options_from_args
from mixer.proto.istio.mixer.v1.check_pb2 import CheckResponse
from mixer.server import ServeOptions
from mixer.wire import encode_check_request
from tests.server.support import READY_TIMEOUT, Launcher, ServerProcess, launcher, wait_until

ALLOWED = "spiffe://td/ns/x/sa/y"
DENIED = "spiffe://td/ns/x/sa/z"
ALLOWED_DNS = "client.example"


@dataclass
class Pki:
    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA

    def path(self, name: str) -> Path:
        return self.directory / name

    def issue_server(self) -> None:
        """A new server certificate for 127.0.0.1 and localhost, swapped in by rename."""
        cert = self.server_ca.issue_cert("127.0.0.1", "localhost")
        for name, blob in (("server.key", cert.private_key_pem), ("server.pem", cert.cert_chain_pems)):
            tmp = self.path(f".{name}.tmp")
            if isinstance(blob, list):
                tmp.write_bytes(b"".join(b.bytes() for b in blob))
            else:
                tmp.write_bytes(blob.bytes())
            os.replace(tmp, self.path(name))

    def client(self, name: str, identity: str, ca: trustme.CA | None = None) -> tuple[Path, Path]:
        pem, key = self.path(f"{name}.pem"), self.path(f"{name}.key")
        cert_pem, key_pem = client_cert(ca or self.client_ca, identity)
        pem.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        return pem, key


def client_cert(ca: trustme.CA, identity: str) -> tuple[bytes, bytes]:
    """A client certificate signed by ``ca`` whose SAN is ``identity``: a URI (SPIFFE ID) when it
    has a scheme, else a DNS name (trustme issues DNS and IP names only)."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name: x509.GeneralName = (
        x509.UniformResourceIdentifier(identity) if "://" in identity else x509.DNSName(identity)
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mixer tests")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"), trustme.CA(), trustme.CA())
    pki.server_ca.cert_pem.write_to_path(str(pki.path("server-ca.pem")))
    pki.client_ca.cert_pem.write_to_path(str(pki.path("client-ca.pem")))
    pki.issue_server()
    pki.client("allowed", ALLOWED)
    pki.client("allowed-dns", ALLOWED_DNS)
    pki.client("denied", DENIED)
    pki.client("untrusted", ALLOWED, ca=trustme.CA())
    return pki


def start_tls(launch: Launcher, pki: Pki, *extra: str) -> ServerProcess:
    """A TLS server; its readiness is read from its ready file (the HTTP port speaks TLS only)."""
    ready = launch.directory / f"ready-{len(launch.servers)}.json"
    server = launch.start(
        "--tls-cert",
        str(pki.path("server.pem")),
        "--tls-key",
        str(pki.path("server.key")),
        "--tls-client-ca",
        str(pki.path("client-ca.pem")),
        "--ready-file",
        str(ready),
        *extra,
        wait=False,
    )

    def is_ready() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.stderr()}")
        return ready.exists()

    wait_until(is_ready, READY_TIMEOUT, "the ready file")
    return server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with launcher(tmp_path_factory.mktemp("mtls")) as launch:
        yield start_tls(
            launch,
            pki,
            "--tls-client-auth",
            "require",
            "--tls-allowed-identities",
            f"{ALLOWED},{ALLOWED_DNS}",
        )


def grpc_credentials(pki: Pki, client: str | None) -> grpc.ChannelCredentials:
    root = pki.path("server-ca.pem").read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=pki.path(f"{client}.key").read_bytes(),
        certificate_chain=pki.path(f"{client}.pem").read_bytes(),
    )


async def grpc_check(server: ServerProcess, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of one Check over TLS (or plaintext with ``credentials`` None)."""
    request = encode_check_request({"destination.service.host": "svc.example"}).SerializeToString()
    channel = (
        grpc.aio.secure_channel(server.grpc_target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(server.grpc_target)
    )
    async with channel:
        method = channel.unary_unary(CHECK_METHOD)
        try:
            answer = await method(request, timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code()
    CheckResponse.FromString(answer)
    return grpc.StatusCode.OK


def https_get(server: ServerProcess, pki: Pki, path: str, client: str | None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(pki.path("server-ca.pem")))
    if client is not None:
        ctx.load_cert_chain(pki.path(f"{client}.pem"), pki.path(f"{client}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        conn.close()


def served_serial(port: int, pki: Pki, alpn: str | None) -> int:
    """The serial number of the certificate the listener on ``port`` presents."""
    ctx = ssl.create_default_context(cafile=str(pki.path("server-ca.pem")))
    ctx.load_cert_chain(pki.path("allowed.pem"), pki.path("allowed.key"))
    if alpn is not None:
        ctx.set_alpn_protocols([alpn])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


# -- gRPC ----------------------------------------------------------------------------------------


async def test_grpc_allowed_identities_pass(mtls_server: ServerProcess, pki: Pki) -> None:
    assert await grpc_check(mtls_server, grpc_credentials(pki, "allowed")) == grpc.StatusCode.OK
    assert await grpc_check(mtls_server, grpc_credentials(pki, "allowed-dns")) == grpc.StatusCode.OK


async def test_grpc_disallowed_identity_is_permission_denied(mtls_server: ServerProcess, pki: Pki) -> None:
    assert await grpc_check(mtls_server, grpc_credentials(pki, "denied")) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("client", [None, "untrusted"], ids=["no-client-cert", "untrusted-client-cert"])
async def test_grpc_without_a_trusted_client_certificate_is_refused(
    mtls_server: ServerProcess, pki: Pki, client: str | None
) -> None:
    # Refused in the handshake: the call never reaches the server.
    assert await grpc_check(mtls_server, grpc_credentials(pki, client)) == grpc.StatusCode.UNAVAILABLE


async def test_grpc_plaintext_is_refused(mtls_server: ServerProcess) -> None:
    assert await grpc_check(mtls_server, None) == grpc.StatusCode.UNAVAILABLE


# -- HTTP ----------------------------------------------------------------------------------------


def reached_the_check(answer: tuple[int, str]) -> bool:
    """Whether /v1/auth's answer came from the policy check (the embedded config wants an API key,
    so 401 with a Check status), not from the identity refusal."""
    return "status" in json.loads(answer[1])


def test_http_allowed_identity_passes(mtls_server: ServerProcess, pki: Pki) -> None:
    assert reached_the_check(https_get(mtls_server, pki, "/v1/auth", "allowed"))
    assert reached_the_check(https_get(mtls_server, pki, "/v1/auth", "allowed-dns"))
    status, body = https_get(mtls_server, pki, "/readyz", "allowed")
    assert status == 200
    assert json.loads(body)["status"] == "serving"


def test_http_disallowed_identity_is_403_with_a_reason(mtls_server: ServerProcess, pki: Pki) -> None:
    status, body = https_get(mtls_server, pki, "/v1/auth", "denied")
    assert status == 403
    assert json.loads(body) == {"error": "client certificate identity not allowed"}
    assert DENIED not in body


@pytest.mark.parametrize("client", [None, "untrusted"], ids=["no-client-cert", "untrusted-client-cert"])
def test_http_without_a_trusted_client_certificate_is_refused(
    mtls_server: ServerProcess, pki: Pki, client: str | None
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(mtls_server, pki, "/v1/auth", client)


def test_http_plaintext_gets_no_answer(mtls_server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", mtls_server.http_port, timeout=10)
    try:
        conn.request("GET", "/readyz")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.getresponse()
    finally:
        conn.close()


async def test_optional_client_auth_lets_probes_in_and_keeps_data_for_allowed_identities(
    pki: Pki, tmp_path: Path
) -> None:
    with launcher(tmp_path) as launch:
        server = start_tls(launch, pki, "--tls-client-auth", "optional", "--tls-allowed-identities", ALLOWED)
        assert https_get(server, pki, "/healthz", None)[0] == 200
        status, body = https_get(server, pki, "/v1/auth", None)
        assert status == 401
        assert json.loads(body) == {"error": "a client certificate is required"}
        assert reached_the_check(https_get(server, pki, "/v1/auth", "allowed"))
        assert https_get(server, pki, "/v1/auth", "denied")[0] == 403
        # An untrusted certificate sent is still refused in the handshake.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(server, pki, "/v1/auth", "untrusted")
        # gRPC cannot ask for a certificate without requiring one; identities need one.
        assert await grpc_check(server, grpc_credentials(pki, "allowed")) == grpc.StatusCode.OK
        assert await grpc_check(server, grpc_credentials(pki, "denied")) == grpc.StatusCode.PERMISSION_DENIED
        assert await grpc_check(server, grpc_credentials(pki, None)) == grpc.StatusCode.UNAVAILABLE


async def test_optional_client_auth_without_identities_serves_grpc_without_a_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    with launcher(tmp_path) as launch:
        server = start_tls(launch, pki, "--tls-client-auth", "optional")
        assert await grpc_check(server, grpc_credentials(pki, None)) == grpc.StatusCode.OK
        assert https_get(server, pki, "/readyz", None)[0] == 200
        assert https_get(server, pki, "/readyz", "allowed")[0] == 200


# -- rotation ------------------------------------------------------------------------------------


def test_a_rotated_certificate_is_served_without_restart(pki: Pki, tmp_path: Path) -> None:
    with launcher(tmp_path) as launch:
        server = start_tls(launch, pki, "--tls-client-auth", "require")
        before_http = served_serial(server.http_port, pki, None)
        before_grpc = served_serial(server.grpc_port, pki, "h2")
        assert before_http == before_grpc
        pki.issue_server()
        wanted = x509.load_pem_x509_certificate(pki.path("server.pem").read_bytes()).serial_number
        assert wanted != before_http
        wait_until(lambda: served_serial(server.http_port, pki, None) == wanted, 30, "the new HTTP cert")
        wait_until(lambda: served_serial(server.grpc_port, pki, "h2") == wanted, 30, "the new gRPC cert")
        assert server.process.poll() is None
        assert "TLS certificate reloaded" in server.stderr()


def test_a_broken_rotation_keeps_the_old_certificate(pki: Pki, tmp_path: Path) -> None:
    with launcher(tmp_path) as launch:
        server = start_tls(launch, pki, "--tls-client-auth", "require")
        before = served_serial(server.http_port, pki, None)
        original = pki.path("server.key").read_bytes()
        pki.path("server.key").write_text("not a key\n")
        try:
            wait_until(lambda: "do not load" in server.stderr(), 30, "the reload failure in the log")
            assert served_serial(server.http_port, pki, None) == before
            assert served_serial(server.grpc_port, pki, "h2") == before
        finally:
            pki.path("server.key").write_bytes(original)


def test_unreadable_tls_files_stop_the_start_with_a_reason(pki: Pki, tmp_path: Path) -> None:
    with launcher(tmp_path) as launch:
        server = launch.start(
            "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(pki.path("server.key")), wait=False
        )
        assert server.process.wait(READY_TIMEOUT) == 1
        assert "TLS files do not load" in server.stderr()


# -- the CLI client ------------------------------------------------------------------------------


def _mixer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_check_and_report_speak_mtls(mtls_server: ServerProcess, pki: Pki) -> None:
    common = [
        "--server",
        mtls_server.grpc_target,
        "--tls-ca",
        str(pki.path("server-ca.pem")),
        "--tls-cert",
        str(pki.path("allowed.pem")),
        "--tls-key",
        str(pki.path("allowed.key")),
        "--tls-server-name",
        "localhost",
    ]
    checked = _mixer("check", *common, "--string", "destination.service.host=svc.example")
    assert checked.returncode == 0, checked.stderr
    # Answered by the policy (the embedded config wants an API key): the call went through.
    assert "plans.istio-system" in json.loads(checked.stdout)["status"]["message"]
    reported = _mixer("report", *common, "--string", "destination.service.host=svc.example")
    assert reported.returncode == 0, reported.stderr


def test_cli_with_a_disallowed_identity_says_permission_denied(mtls_server: ServerProcess, pki: Pki) -> None:
    denied = _mixer(
        "check",
        "--server",
        mtls_server.grpc_target,
        "--tls-ca",
        str(pki.path("server-ca.pem")),
        "--tls-cert",
        str(pki.path("denied.pem")),
        "--tls-key",
        str(pki.path("denied.key")),
    )
    assert denied.returncode != 0
    assert "PERMISSION_DENIED" in denied.stderr


def test_cli_tls_flags_are_checked(pki: Pki) -> None:
    half = _mixer("check", "--tls-cert", str(pki.path("allowed.pem")))
    assert half.returncode != 0
    assert "--tls-cert and --tls-key go together" in half.stderr


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": Path("c.pem")}, "--tls-cert and --tls-key go together"),
        ({"tls_client_ca": Path("ca.pem")}, "need --tls-cert"),
        (
            {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem"), "tls_client_auth": "require"},
            "--tls-client-auth require needs --tls-client-ca",
        ),
        (
            {
                "tls_cert": Path("c.pem"),
                "tls_key": Path("k.pem"),
                "tls_client_ca": Path("ca.pem"),
                "tls_allowed_identities": (ALLOWED,),
            },
            "--tls-allowed-identities needs --tls-client-auth optional or require",
        ),
        (
            {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem"), "tls_client_auth": "sometimes"},
            "--tls-client-auth must be one of none, optional, require",
        ),
    ],
)
def test_tls_options_that_do_not_fit_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ServeOptions(**settings)


def test_tls_options_reach_the_workers_command_line() -> None:
    options = ServeOptions(
        tls_cert=Path("/tls/c.pem"),
        tls_key=Path("/tls/k.pem"),
        tls_client_ca=Path("/tls/ca.pem"),
        tls_client_auth="require",
        tls_allowed_identities=(ALLOWED, ALLOWED_DNS),
        admin_listen="127.0.0.1:0",
        admin_token_file=Path("/tls/token"),
        log_format="json",
    )
    again = options_from_args(build_parser().parse_args(["serve", *options.to_argv()]))
    assert again == options
