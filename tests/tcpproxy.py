"""A TCP proxy on loopback that tests put in front of PostgreSQL, Redis, RabbitMQ or SMTP to cut, refuse or stall
the link, as a network fault or a restarted server would."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PASS, REFUSE, STALL = "pass", "refuse", "stall"
CHUNK_BYTES = 65536


class TcpProxy:
    """Forwards connections from `port` to `target`, until told to cut, refuse or stall them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = PASS
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcpproxy", daemon=True).start()

    def url_for(self, url: str, port: int) -> str:
        """`url` with `port` (the target's) replaced by the proxy's."""
        return url.replace(f":{port}", f":{self.port}", 1)

    def cut(self) -> None:
        """Reset every open connection and refuse new ones (accepted and closed at once) until restore()."""
        self.mode = REFUSE
        self._close_all()

    def refuse(self) -> None:
        """Refuse new connections (the open ones stay)."""
        self.mode = REFUSE

    def stall(self) -> None:
        """Keep connections open but forward nothing, until restore()."""
        self.mode = STALL

    def restore(self) -> None:
        self.mode = PASS

    def reset_connections(self) -> None:
        """Reset the open connections once; new ones are taken as before."""
        self._close_all()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                # shutdown() first: a close() alone would not wake the pump blocked in recv() on it, and the
                # connection would live on, half dead, in the kernel.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()  # linger 0: an RST, as a broken link gives

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == REFUSE:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                while self.mode == STALL:
                    time.sleep(0.05)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def proxy_to(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
