"""Reserving a shared port for worker processes (:class:`ListenAddress` lives in :mod:`mixer.api`)."""

from __future__ import annotations

import socket

from mixer.api import ListenAddress

__all__ = ["ListenAddress", "reserve_shared_port"]


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
