"""The Redis counter store over TLS (``rediss://``) to a real redis-server serving TLS with client
certificates required, certificates made by trustme."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.exceptions
import trustme

from mixer.quota import Algorithm, CounterRequest, EpochWindow
from mixer.quota.redis_store import RedisCounterStore
from tests.backends._process import free_port
from tests.backends.redis import RedisServer, unique_prefix
from tests.quota.support import FakeClock


class TlsRedisServer(RedisServer):
    """redis-server with a TLS port beside its plaintext one (kept for the readiness ping)."""

    log_stem = "redis-tls"

    def __init__(self, directory: Path, ca: trustme.CA) -> None:
        super().__init__(directory)
        self.tls_port = free_port()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.cert_path = directory / "redis.pem"
        self.key_path = directory / "redis.key"
        self.ca_path = directory / "ca.pem"
        cert.cert_chain_pems[0].write_to_path(str(self.cert_path))
        cert.private_key_pem.write_to_path(str(self.key_path))
        ca.cert_pem.write_to_path(str(self.ca_path))

    def argv(self) -> list[str]:
        return [
            *super().argv(),
            "--tls-port",
            str(self.tls_port),
            "--tls-cert-file",
            str(self.cert_path),
            "--tls-key-file",
            str(self.key_path),
            "--tls-ca-cert-file",
            str(self.ca_path),
            "--tls-auth-clients",
            "yes",
        ]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls"), ca).start()
    try:
        yield server
    finally:
        server.stop()


def client_files(directory: Path, ca: trustme.CA, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(f"{name}.client.example")
    pem, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    cert.private_key_pem.write_to_path(str(key))
    return pem, key


def rediss_url(server: TlsRedisServer, *, client: tuple[Path, Path] | None) -> str:
    query = f"ssl_ca_certs={quote(str(server.ca_path))}"
    if client is not None:
        query += f"&ssl_certfile={quote(str(client[0]))}&ssl_keyfile={quote(str(client[1]))}"
    return f"rediss://127.0.0.1:{server.tls_port}/0?{query}"


def request(key: str) -> CounterRequest:
    return CounterRequest(key, 1, 2, Algorithm.FIXED_WINDOW, window=EpochWindow(60))


async def allocate_three(url: str) -> list[bool]:
    store = RedisCounterStore(url, key_prefix=unique_prefix("tls"), clock=FakeClock(6000.0), timeout=5.0)
    try:
        return [(await store.allocate([request("k")])).allowed for _ in range(3)]
    finally:
        await store.close()


async def test_counts_over_mutual_tls(tls_redis: TlsRedisServer, ca: trustme.CA, tmp_path: Path) -> None:
    url = rediss_url(tls_redis, client=client_files(tmp_path, ca, "mixer"))
    # A limit of 2: the third is refused, so all three went to the one Redis over TLS.
    assert await allocate_three(url) == [True, True, False]


async def test_without_a_client_certificate_the_server_refuses(tls_redis: TlsRedisServer) -> None:
    # Under TLS 1.3 the refusal comes after the client's handshake has finished: the client reads
    # either the server's certificate_required alert or, when the server closed first, a reset.
    with pytest.raises(
        redis.exceptions.ConnectionError, match=r"CERTIFICATE_REQUIRED|Connection reset by peer|EOF"
    ):
        await allocate_three(rediss_url(tls_redis, client=None))


async def test_a_server_from_an_untrusted_ca_is_refused(tls_redis: TlsRedisServer, tmp_path: Path) -> None:
    other = trustme.CA()
    other_ca = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_ca))
    client = client_files(tmp_path, other, "stranger")
    url = (
        f"rediss://127.0.0.1:{tls_redis.tls_port}/0?ssl_ca_certs={quote(str(other_ca))}"
        f"&ssl_certfile={quote(str(client[0]))}&ssl_keyfile={quote(str(client[1]))}"
    )
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        await allocate_three(url)
