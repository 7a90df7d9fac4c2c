"""The faults the gauntlet injects beside the relay's (tools/relay.py: a link cut or gone
mute): killed sessions, killed workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg


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
