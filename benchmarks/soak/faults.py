"""The faults the gauntlet injects: a link that goes down, killed sessions, killed workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg


class FlakyLink:
    """A TCP relay between the functions and a backing service (Postgres, S3).

    ``cut(seconds)`` is an outage as the functions see one: every open connection is
    dropped, and every new one is reset as soon as it is accepted, until the link is
    back. The listener stays bound throughout: released, its port (an ephemeral one)
    could be taken meanwhile as the source port of some outgoing connection, and the
    link could not come back. A relay thread per direction keeps the faults in this
    process simple; it costs the functions a little latency, the same on every run.
    """

    def __init__(self, connect_upstream: Callable[[], socket.socket]) -> None:
        self._connect_upstream = connect_upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down_until = 0.0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def cut(self, seconds: float) -> None:
        """Reset every connection, open or new, for this long (blocks meanwhile)."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            for sock in self._open:
                _shut(sock)
            self._open.clear()
        time.sleep(seconds)

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


def terminate_sessions(database_url: str) -> int:
    """pg_terminate_backend on every other session of this database: the functions'."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) if row else 0


def workers_of(master_pid: int) -> list[int]:
    """The gunicorn workers a functions-framework process forked."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def kill_workers(master_pid: int) -> list[int]:
    """SIGKILL every worker, as the OOM killer would, so that requests in flight die with
    them; gunicorn starts new ones."""
    workers = workers_of(master_pid)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    return workers
