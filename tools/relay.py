"""A TCP relay in front of a backing service (Postgres, a pooler, S3), and the network
faults it plays: for the gauntlet (benchmarks/soak) and the tests.

- ``cut(seconds)``: a loud outage. Every open connection is dropped, and every new one
  is reset as soon as it is accepted, until the link is back.
- ``mute(seconds)``: a silent one, as a hung pooler or a half-dead middlebox gives. The
  relay goes on accepting connections and its kernel goes on acknowledging what it is
  sent, but it forwards nothing, either way, and says nothing: no FIN, no reset. Only
  a deadline of the client's own ends a call then. When the mute ends, the connections
  it held are dropped (their clients gave up long ago) and new ones work again.

The listener stays bound throughout: released, its port (an ephemeral one) could be
taken meanwhile as the source port of some outgoing connection, and the link could not
come back. A relay thread per direction keeps the faults in one process simple; it
costs a little latency, the same on every run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict


class Relay:
    def __init__(self, connect_upstream: Callable[[], socket.socket]) -> None:
        self._connect_upstream = connect_upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down_until = 0.0
        self._mute_until = 0.0
        self._held: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _muted(self) -> bool:
        return time.monotonic() < self._mute_until

    def cut(self, seconds: float) -> None:
        """Reset every connection, open or new, for this long (blocks meanwhile)."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            for sock in self._open:
                _shut(sock)
            self._open.clear()
        time.sleep(seconds)

    def mute(self, seconds: float) -> None:
        """Forward nothing and answer nothing for this long (blocks meanwhile); then drop
        the connections it held."""
        with self._lock:
            self._mute_until = time.monotonic() + seconds
            self._held.update(self._open)
        time.sleep(seconds)
        with self._lock:
            for sock in self._held:
                _shut(sock)
                self._open.discard(sock)
            self._held.clear()

    def close(self) -> None:
        _shut(self._listener)
        self._listener.close()

    def _accept_forever(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._down():
                _reset(client)
                continue
            if self._muted():
                with self._lock:
                    self._held.add(client)  # accepted, and left without a word
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._down():  # cut while connecting upstream
                    _reset(client)
                    server.close()
                    continue
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while self._muted():
                    # Held, not forwarded; whatever comes next stays in the kernel's
                    # buffers, acknowledged, until the mute ends and drops us.
                    time.sleep(0.05)
                if source in self._held or sink in self._held:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            for sock in (source, sink):
                _shut(sock)
                sock.close()


def _shut(sock: socket.socket) -> None:
    """shutdown, not close alone: it wakes a thread blocked reading the socket, and the
    peer learns at once that the connection is gone."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a link that is down answers a new connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def relay_to_database(url: str) -> tuple[Relay, str]:
    """A relay in front of the database at `url`, and the URL that reaches it through it."""
    relay = Relay(_postgres_connector(url))
    return relay, _via(url, relay.port)


def tcp_connector(host: str, port: int) -> Callable[[], socket.socket]:
    def tcp() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=5)
        sock.settimeout(None)  # connected: from now on it may sit idle as long as it likes
        return sock

    return tcp


def _postgres_connector(url: str) -> Callable[[], socket.socket]:
    """How to reach the server behind `url`: a TCP address or a Unix socket."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    if not host.startswith("/"):
        return tcp_connector(host, port)
    path = f"{host}/.s.PGSQL.{port}"

    def unix() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        return sock

    return unix


def _via(url: str, port: int) -> str:
    """The same database, reached through the relay on this local port."""
    params = conninfo_to_dict(url)
    user = quote(str(params.get("user") or "postgres"), safe="")
    password = quote(str(params.get("password") or ""), safe="")
    credentials = f"{user}:{password}" if password else user
    return f"postgresql://{credentials}@127.0.0.1:{port}/{params['dbname']}"


NFT_TABLE = "sms_tracking_drop"


def can_drop_packets() -> str | None:
    """Why packets cannot be dropped at the IP level here, or None when they can: that
    takes root and nftables (Debian's nftables package)."""
    import os
    import shutil

    if os.geteuid() != 0:
        return "dropping packets needs root (nftables)"
    if shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin") is None:
        return "dropping packets needs nftables: apt-get install nftables"
    return None


@contextlib.contextmanager
def packets_dropped(port: int) -> Iterator[None]:
    """Every TCP packet to or from this local port silently dropped by the kernel while
    the block runs: a peer gone, as a cable pulled or a firewall would make it. Nothing
    is reset or refused; only timeouts notice."""
    import shutil
    import subprocess

    nft = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin") or "nft"
    rules = (
        f"table inet {NFT_TABLE} {{\n chain out {{\n"
        "  type filter hook output priority 0;\n"
        f"  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
    )
    subprocess.run([nft, "-f", "/dev/stdin"], input=rules.encode(), check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", NFT_TABLE], check=False)
