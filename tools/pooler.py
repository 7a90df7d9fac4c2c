"""PgBouncer in transaction mode, in front of a Postgres server: the tests' stand-in for
Supabase's transaction pooler (Supavisor on port 6543).

What production's pooler forbids, this one forbids too: a connection belongs to a client
for one transaction only, so nothing may outlive it (session settings, named prepared
statements, advisory locks held across transactions). `make test` installs PgBouncer
(`tools/require.sh`); this module only runs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from tools.embedded import free_port, wait_for_port

INSTALL_HINT = (
    "PgBouncer is needed: run `make test` as root on Debian/Ubuntu to install it, "
    "or install it yourself (apt-get install pgbouncer · brew install pgbouncer)"
)
# Where Debian puts it, outside an unprivileged user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer", path=_SEARCH_PATH)
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


def _server_address(server_url: str) -> tuple[str, int]:
    """Host (or socket folder) and port of a postgresql:// URL, as libpq reads them."""
    parts = urlsplit(server_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return unquote(host), port


def _unprivileged_user(host: str) -> str:
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


@contextmanager
def transaction_pooler(
    server_url: str,
    *,
    users: tuple[str, ...] = ("postgres",),
    passwords: Mapping[str, str] | None = None,
    listen_port: int | None = None,
    server_connections: int = 20,
) -> Iterator[str]:
    """Run PgBouncer (pool_mode = transaction) in front of this server; yield a URL like
    ``server_url`` that goes through it. Every database of the server is reachable, as
    each of ``users`` (trusted: the server behind it decides), or with ``passwords``, as
    each of those users with their password, checked by SCRAM as Supabase's pooler does.
    """
    host, port = _server_address(server_url)
    listen_port = listen_port or free_port()
    folder = Path(tempfile.mkdtemp(prefix="sms-pgbouncer-"))
    credentials = passwords or dict.fromkeys(users, "")
    (folder / "users.txt").write_text(
        "".join(f'"{user}" "{password}"\n' for user, password in credentials.items())
    )
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(listen_port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256" if passwords else "trust",
        "auth_file": str(folder / "users.txt"),
        "pool_mode": "transaction",
        "max_client_conn": "500",
        "default_pool_size": str(server_connections),
        "ignore_startup_parameters": "extra_float_digits",
        # A database back after an outage is used again at once, not 15 s later.
        "server_login_retry": "1",
        "logfile": str(folder / "pgbouncer.log"),
        "pidfile": str(folder / "pgbouncer.pid"),
    }
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; it drops to this user after reading its
        # files: the one the server's socket folder belongs to, who may reach it.
        settings["user"] = _unprivileged_user(host)
        os.chmod(folder, 0o777)  # noqa: S103 (a private temporary folder it writes its log in)
    config = "[databases]\n" + f"* = host={host} port={port}\n\n[pgbouncer]\n"
    config += "".join(f"{name} = {value}\n" for name, value in settings.items())
    (folder / "pgbouncer.ini").write_text(config)
    # To a file, never a pipe: it logs there as well as to its log file, and once a
    # pipe nobody reads is full, it blocks on the write and serves no one.
    with (folder / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [pgbouncer_binary(), str(folder / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        try:
            wait_for_port(listen_port, "PgBouncer", process)
        except RuntimeError:
            logs = [folder / "pgbouncer.log", folder / "stderr.log"]
            detail = "".join(log.read_text(errors="replace") for log in logs if log.exists())
            raise RuntimeError(f"PgBouncer did not start:\n{detail}") from None
        parts = urlsplit(server_url)
        user = parts.username or "postgres"
        yield urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{listen_port}", query=""))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
