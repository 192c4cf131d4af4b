"""Listen addresses: ``HOST:PORT`` parsed once, for every port the server and its inputs bind."""

from __future__ import annotations

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
