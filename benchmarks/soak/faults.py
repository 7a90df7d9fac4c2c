"""The faults the gauntlet injects: a link that goes down, killed sessions, killed workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg


class FlakyLink:
    """A TCP relay between the functions and a backing service (Postgres, S3).

    ``cut(seconds)`` is an outage as the functions see one: every open connection is
    dropped and new ones are refused until the link is back. A relay thread per
    direction keeps the faults in this process simple; it costs the functions a little
    latency, the same on every run.
    """

    def __init__(self, connect_upstream: Callable[[], socket.socket]) -> None:
        self._connect_upstream = connect_upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        listener = self._listen(0)
        self._listener: socket.socket | None = listener
        self.port = int(listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(256)
        return listener

    def cut(self, seconds: float) -> None:
        """Refuse and reset every connection for this long (blocks meanwhile)."""
        with self._lock:
            listener, self._listener = self._listener, None
            for sock in self._open:
                _shut(sock)
            self._open.clear()
        if listener is not None:
            _shut(listener)
            listener.close()
        time.sleep(seconds)
        with self._lock:
            self._listener = self._listen(self.port)
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._listener is not None:
                _shut(self._listener)
                self._listener.close()

    def _accept_forever(self) -> None:
        listener = self._listener
        while listener is not None and not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the link was cut or closed
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
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
