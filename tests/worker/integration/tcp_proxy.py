"""A TCP forwarder on 127.0.0.1 whose link can be cut and restored: a network outage on demand.

Put in front of a broker that advertises the proxy's port, every client connection goes
through it, so ``cut()`` makes Kafka unreachable for everyone while the broker (and its
in-memory state) keeps running, and ``restore()`` brings it back on the same port.
"""

from __future__ import annotations

import socket
import threading

from worker.kafka.embedded import free_port

_CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._dropping = False
        self.dropped = 0  # connections accepted and closed at once while dropping

    def __enter__(self) -> TcpProxy:
        return self.restore()

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def restore(self) -> TcpProxy:
        """Listen (again) on ``port`` and forward new connections upstream."""
        with self._lock:
            self._dropping = False
            if self._listener is not None:
                return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()
        return self

    def cut(self, refuse: bool = True) -> None:
        """Reset every open connection; refuse new ones, or (``refuse=False``) accept, count and close them."""
        with self._lock:
            self._dropping = not refuse
            listener = self._listener
            if refuse:
                self._listener = None
            connections, self._connections = self._connections, []
        if listener is not None and refuse:
            _close(listener)
        for conn in connections:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # listener closed by cut()
            with self._lock:
                if self._dropping:
                    self.dropped += 1
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True, name="proxy-pump").start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(_CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
