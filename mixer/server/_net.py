"""Listen addresses: parsing ``HOST:PORT`` and reserving a shared port for worker processes."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A host and a port; port 0 asks the system for a free one."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``127.0.0.1:9091``, ``[::1]:9091`` or ``localhost:0``.

        :raises ValueError: no port, or a port outside 0..65535.
        """
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"listen address {text!r} is not HOST:PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"listen address {text!r}: port {port} is outside 0..65535")
        return cls(host, port)

    def with_port(self, port: int) -> ListenAddress:
        return ListenAddress(self.host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def reserve_shared_port(address: ListenAddress) -> tuple[socket.socket, ListenAddress]:
    """Bind (without listening) a SO_REUSEPORT socket on ``address`` and return it with the port.

    Worker processes bind the same port with SO_REUSEPORT; a bound socket that never listens
    receives no connections, but as long as it is open no process without SO_REUSEPORT can take
    the port, so port 0 resolves once for all workers without a race.

    :raises OSError: the address cannot be bound.
    """
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock, address.with_port(int(sock.getsockname()[1]))
