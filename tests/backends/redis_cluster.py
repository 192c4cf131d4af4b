"""A real Redis Cluster of ``redis-server`` processes on free 127.0.0.1 ports, stopped by PID.

Three masters (``redis_cluster``, one per module: tests keep to their own key prefix, see
:func:`~tests.backends.redis.unique_prefix`), or three masters with a replica each
(``replicated_redis_cluster``, one per test: failover tests kill a master). The cluster is made
by ``redis-cli --cluster create`` and handed over once every node sees all 16384 slots served
(``cluster_state:ok``) and every replica is in sync with its master.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends._process import ManagedProcess, free_port
from tests.backends.redis import REDIS_SERVER, STOP_TIMEOUT, _ping, redis_argv

__all__ = [
    "REDIS_CLI",
    "ClusterNode",
    "RedisClusterProcesses",
    "redis_cluster",
    "replicated_redis_cluster",
    "running_cluster",
]

REDIS_CLI = shutil.which("redis-cli") or str(Path(REDIS_SERVER).with_name("redis-cli"))
#: Generous: creating a cluster takes about a second here, a failover two to five.
FORM_TIMEOUT = 30.0
#: Milliseconds a node may be unreachable before the others count it failed (failover starts).
NODE_TIMEOUT_MS = 1000
SLOTS = 16384


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode(ManagedProcess):
    """One ``redis-server`` in cluster mode, its ``nodes.conf`` in its own directory."""

    name = "redis-server (cluster)"
    log_stem = "redis-cluster"
    stop_timeout = STOP_TIMEOUT

    def argv(self) -> list[str]:
        return redis_argv(
            self.port,
            self.directory,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        )

    def ready(self) -> bool:
        return _ping(self.port)

    def command(self, *args: str | bytes) -> object:
        """One command on this node alone (no redirects followed)."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            return client.execute_command(*args)

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` (``CLUSTER INFO`` for ``cluster``) as text fields."""
        raw = self.command("CLUSTER", "INFO") if section == "cluster" else self.command("INFO", section)
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class RedisClusterProcesses:
    """``masters`` masters with ``replicas`` replicas each, formed into one cluster."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 0) -> None:
        self.nodes = []
        for n in range(masters * (1 + replicas)):
            node_dir = directory / f"node-{n}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(ClusterNode(node_dir, free_cluster_port()))
        self.replicas = replicas
        self.directory = directory

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        argv = [
            REDIS_CLI,
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        done = subprocess.run(argv, capture_output=True, timeout=FORM_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{done.stdout.decode()}{done.stderr.decode()}"
            )
        self.wait_ok(FORM_TIMEOUT)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def state_ok(self) -> bool:
        """Every running node serves all slots, agrees on the masters, and every replica is synced."""
        try:
            masters: set[int] = set()
            for node in self.running_nodes():
                info = node.info("cluster")
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return False
                replication = node.info("replication")
                if replication.get("role") == "master":
                    masters.add(node.port)
                elif replication.get("master_link_status") != "up":
                    return False
            return all(self.master_port(node, 0) in masters for node in self.running_nodes())
        except Exception:
            return False

    def wait_ok(self, timeout: float) -> float:
        """Poll until :meth:`state_ok`; the seconds it took.

        :raises RuntimeError: not ok within ``timeout``.
        """
        started = time.monotonic()
        deadline = started + timeout
        while not self.state_ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ok after {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - started

    @staticmethod
    def master_port(node: ClusterNode, slot: int) -> int:
        """The port of the master serving ``slot`` as ``node`` sees it."""
        for start, end, master, *_ in node.command("CLUSTER", "SLOTS"):  # type: ignore[attr-defined]
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise LookupError(f"slot {slot} is not served")

    def node_for_key(self, key: str) -> ClusterNode:
        """The master that serves ``key`` now."""
        first = self.running_nodes()[0]
        slot = int(first.command("CLUSTER", "KEYSLOT", key))  # type: ignore[call-overload]
        port = self.master_port(first, slot)
        return next(node for node in self.nodes if node.port == port)

    def command(self, *args: str, key: str) -> object:
        """One command on the master that serves ``key``."""
        return self.node_for_key(key).command(*args)

    def keys(self, pattern: str) -> list[bytes]:
        """``KEYS pattern`` on every running master, together."""
        found: list[bytes] = []
        for node in self.running_nodes():
            if node.info("replication").get("role") == "master":
                found.extend(node.command("KEYS", pattern))  # type: ignore[arg-type]
        return found


@contextlib.contextmanager
def running_cluster(directory: Path, *, replicas: int = 0) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(directory, replicas=replicas)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """Three masters shared by a module: never stop or flush them; use a unique key prefix."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def replicated_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    """Three masters with a replica each, for this test alone (it may kill a master)."""
    with running_cluster(tmp_path, replicas=1) as cluster:
        yield cluster
