"""The database port and its two adapters.

Functions call ``db.rpc(name, args, as_user=caller)``: one SQL function in the
``public`` schema, called with JSON arguments, as PostgREST calls it.

* ``PostgresDatabase`` talks psycopg to a direct or pooled connection and does in
  one transaction what PostgREST does: switch to the caller's role, expose the
  caller's JWT claims as ``request.jwt.claims``, call the function and return its
  result as JSON.
* ``SupabaseDatabase`` sends the same call to Supabase's PostgREST over HTTPS.

Both return the same Python values for the same call (the contract tests in
``tests/db/test_database_contract.py`` hold them to it), and both raise the same
typed errors: a Postgres error is classified once, in ``classify``.

RPC functions must return a value (jsonb, a scalar, a row or a set of rows);
void functions are not supported because PostgREST answers them with no body.
Write RPCs must be idempotent: a connection lost after the call was sent is
reported as DatabaseUnavailableError (503, retry, or parked for replay), and the call
may have committed. The
adapter itself never sends a call twice.
"""

from __future__ import annotations

import json
import re
import select
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_core import to_json, to_jsonable_python

from shared.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    GoneError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
    UnauthorizedError,
    UnavailableError,
)

if TYPE_CHECKING:
    import httpx
    import psycopg
    from psycopg.pq.abc import PGconn, PGresult
    from psycopg_pool import ConnectionPool

    from shared.runtime import Services

API_ROLES = frozenset({"anon", "authenticated", "service_role"})
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Caller:
    """Who an RPC runs as: verified JWT claims, and the token they came from.

    PostgresDatabase only needs the claims; PostgREST needs the token itself.
    """

    claims: Mapping[str, Any]
    access_token: str | None = None

    @property
    def role(self) -> str:
        """The API role to run as; refuses claims Postgres would misread."""
        role = self.claims.get("role")
        if role not in API_ROLES:
            raise ForbiddenError("This token's role may not use the API.")
        subject = self.claims.get("sub")
        if subject is not None:
            try:
                uuid.UUID(str(subject))
            except ValueError:
                raise UnauthorizedError("This token's subject is not a user id.") from None
        return str(role)


SERVICE = Caller(claims={"role": "service_role"})


class Database(Protocol):
    def rpc(
        self, name: str, args: Mapping[str, Any] | None = None, *, as_user: Caller | None = None
    ) -> Any:
        """Call public.<name>(args) as ``as_user`` (default: service_role)."""

    def close(self) -> None: ...


# --- one classification of database failures ------------------------------------------


@dataclass(frozen=True)
class PostgresFailure:
    """A failure as Postgres (SQLSTATE) or PostgREST (PGRSTnnn) reported it.

    Kept on the typed error for logs and tests. ``details`` may quote row values,
    phone numbers included: it is never logged or sent to a caller.
    """

    code: str | None
    message: str
    details: str | None = None
    hint: str | None = None


_INVALID_INPUT_CODES = frozenset({"23502", "23503", "23514", "23P01"})
# "Cannot reach the database right now; the call did not take effect": PostgREST's
# connection codes and gateway statuses (postgrest-py reports a non-JSON error as its
# HTTP status). With the SQLSTATE classes 08, 53 and 57P, what may park a request.
_DATABASE_UNAVAILABLE_CODES = frozenset(
    {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "429", "502", "503", "504", "520"}
)
# "The database is there, but this call did not go through; retry it": serialization
# failures and deadlocks (rolled back; ingest_sms raises one on purpose when an SMS is
# erased under it), and a statement cut off by statement_timeout. Retried by the caller,
# never parked: a retry meets the database's answer.
_TRANSIENT_CODES = frozenset({"40001", "40P01", "57014"})
# PostgREST refusing the JWT a user call carried.
_UNAUTHORIZED_CODES = frozenset({"PGRST301", "PGRST302", "PGRST303"})
# SQL functions raise caller-facing errors as SQLSTATE 'VPnnn' (nnn: the HTTP status),
# with a message written for the caller and the offending field in HINT.
_RAISED_BY_US = re.compile(r"VP(\d{3})")
_RAISED_STATUS: dict[str, type[ServiceError]] = {
    "404": NotFoundError,
    "409": ConflictError,
    "410": GoneError,
    "422": InvalidInputError,
    "403": ForbiddenError,
}
_INVALID_MESSAGES = {
    "23502": "{field} is required.",
    "23503": "{field} refers to a record that does not exist.",
    "23514": "{field} has a value that is not allowed.",
}
_KEY_COLUMNS = re.compile(r"Key \(([^)]+)\)")
_COLUMN = re.compile(r'column "([^"]+)"')
_CHECK = re.compile(r'relation "([^"]+)" violates check constraint "([^"]+)"')


def classify(failure: PostgresFailure, *, retry_after: int = 5) -> ServiceError:
    """Map a database failure onto the service's typed errors."""
    code = failure.code or ""
    error: ServiceError
    raised = _RAISED_BY_US.fullmatch(code)
    if raised and raised.group(1) in _RAISED_STATUS:
        error = _RAISED_STATUS[raised.group(1)](failure.message, field=failure.hint or None)
    elif code == "23505":
        error = ConflictError(field=_field_of(failure))
    elif code in _INVALID_INPUT_CODES or code.startswith("22"):
        name = _field_of(failure)
        error = InvalidInputError(
            _INVALID_MESSAGES.get(code, "{field} has an invalid value.").format(
                field=name or "A value"
            ),
            field=name,
        )
    elif code == "42501":
        error = ForbiddenError()
    elif code in _UNAUTHORIZED_CODES:
        error = UnauthorizedError()
    elif code.startswith(("08", "53", "57P")) or code in _DATABASE_UNAVAILABLE_CODES:
        error = DatabaseUnavailableError(retry_after=retry_after)
    elif code in _TRANSIENT_CODES:
        error = UnavailableError(retry_after=retry_after)
    else:
        error = InternalError()
    error.diagnostic = failure
    return error


def _field_of(failure: PostgresFailure) -> str | None:
    """The column a constraint error is about, from Postgres's own wording."""
    if failure.details and (match := _KEY_COLUMNS.search(failure.details)):
        return match.group(1)
    if match := _CHECK.search(failure.message):
        table, constraint = match.groups()
        return constraint.removeprefix(f"{table}_").removesuffix("_check")
    if match := _COLUMN.search(failure.message):
        return match.group(1)
    return None


def _validated_name(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise InternalError(f"Not a valid SQL function name: {name!r}")
    return name


def _arg_names(args: Mapping[str, Any] | None) -> frozenset[str]:
    return frozenset(_validated_name(key) for key in args or {})


def _json_args(args: Mapping[str, Any] | None) -> dict[str, Any]:
    """Arguments as JSON values: what PostgREST receives, so both adapters coerce alike.

    UUIDs, decimals and datetimes become strings; pydantic_core.to_json writes the
    same JSON in one pass for PostgresDatabase.
    """
    _arg_names(args)
    payload: dict[str, Any] = to_jsonable_python(dict(args or {}))
    return payload


# --- PostgresDatabase -------------------------------------------------------------------


# Every overload of public.<$1>, as one JSON array: sent through the same pipeline as a
# call, with its deadline (a pooler holding the connection must not hold it longer).
_OVERLOADS_SQL = b"""
SELECT coalesce(jsonb_agg(jsonb_build_array(
       coalesce(p.proargnames, '{}'),
       coalesce(p.proargmodes::text[], array_fill('i'::text, ARRAY[p.pronargs])),
       array(SELECT format_type(t, NULL)
             FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
                  WITH ORDINALITY AS a(t, i)
             ORDER BY i),
       p.pronargdefaults,
       CASE WHEN p.proretset THEN 'set'
            WHEN p.prorettype = 'void'::regtype THEN 'void'
            WHEN coalesce(base.typtype, r.typtype) IN ('c', 'p') THEN 'row'
            ELSE 'scalar' END)), '[]')
FROM pg_proc AS p
JOIN pg_type AS r ON r.oid = p.prorettype
LEFT JOIN pg_type AS base ON base.oid = r.typbasetype  -- a domain's
WHERE p.pronamespace = 'public'::regnamespace AND p.proname = $1
"""


def _resolve(rows: list[tuple[Any, ...]], name: str, keys: frozenset[str]) -> str | None:
    """The call of the overload PostgREST would pick: it takes every given argument and
    needs no other. The SQL takes one parameter, the JSON object of arguments."""
    for names, modes, types, n_defaults, returns in rows:
        inputs = [(n, t) for n, m, t in zip(names, modes, types, strict=False) if m in "ibv"]
        input_names = {n for n, _ in inputs}
        required = {n for n, _ in inputs[: len(inputs) - n_defaults]}
        if not (required <= keys <= input_names):
            continue
        if returns == "void":
            raise InternalError(f"RPC function {name} returns void; RPCs must return a value.")
        return _call_sql(name, [(n, t) for n, t in inputs if n in keys], returns)
    return None


def _call_sql(name: str, args: list[tuple[str, str]], returns: str) -> str:
    # jsonb_to_record converts each JSON value to the parameter's type exactly as
    # PostgREST does, so a call means the same thing through either adapter.
    if args:
        columns = ", ".join(f'"{n}" {t}' for n, t in args)
        arguments = f"jsonb_to_record($1::jsonb) AS _a({columns})"
    else:
        arguments = "(SELECT $1::jsonb) AS _a"
    named = ", ".join(f'"{n}" => _a."{n}"' for n, _ in args)
    call = f'public."{name}"({named})'
    if returns == "scalar":
        # Called in the select list, as PostgREST calls a function returning a scalar:
        # as a function scan in FROM it took ~25 µs more server time a call here.
        return f"SELECT to_jsonb({call}) FROM {arguments}"  # noqa: S608 (names validated, types from the catalog)
    result = "coalesce(jsonb_agg(_r), '[]'::jsonb)" if returns == "set" else "to_jsonb(_r)"
    return f"SELECT {result} FROM {arguments}, LATERAL {call} AS _r"  # noqa: S608


# Sent before the call, in the same pipeline: both statements run in the implicit
# transaction that lasts until the pipeline's one Sync, so the role and claims are in
# force when the call is planned (row-level security) and executed, and end with it.
# One round trip, where BEGIN, SET, call and COMMIT would take four. Every value is a
# bound parameter, never SQL text: the server logs a failed statement's text, and the
# claims can hold the user's email and phone number. statement_timeout is set per
# transaction because poolers drop start-up options.
_SET_CONTEXT = (
    b"SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true),"
    b" set_config('statement_timeout', $3, true)"
)


def connection_options(timeout: float) -> dict[str, Any]:
    """libpq settings that end a call to a peer gone silent. Connecting is bounded by
    connect_timeout. A peer that stops acknowledging (packets dropped) is given up after
    tcp_user_timeout, and an idle connection to a vanished peer is found by keepalives
    (with tcp_user_timeout set, unanswered probes end it within that time too). A peer
    that still acknowledges but never answers (a hung pooler, a mute relay) only a
    deadline of our own ends: PostgresDatabase keeps one per call."""
    seconds = max(1, round(timeout))
    return {
        "connect_timeout": seconds,
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }


# Past the statement timeout, how long a call waits for the server's own answer (the
# statement canceled) before it gives up on a peer that says nothing at all.
_DEADLINE_GRACE_SECONDS = 1.0


class PostgresDatabase:
    """psycopg over a direct or pooled (Supabase pooler) connection."""

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 4,
        timeout: float = 10.0,
        retry_after: int = 5,
        renew_credentials: Callable[[], bool] = lambda: False,
    ) -> None:
        self._conninfo = conninfo
        self._pool_size = pool_size
        self._timeout = timeout
        self._retry_after = retry_after
        self._renew_credentials = renew_credentials
        # Set by the pool's own thread when the server refused its credentials.
        self._refused: str | None = None
        # Closed for good: a thread still holding it after new credentials replaced it
        # gets a 503 to retry with them, never a pool of the old ones opened again.
        self._closed = False
        self._statement_timeout = f"{int(timeout * 1000)}ms".encode()
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._calls: dict[tuple[str, frozenset[str]], bytes] = {}

    def _connections(self) -> ConnectionPool:
        with self._pool_lock:
            if self._closed:
                raise UnavailableError(retry_after=self._retry_after)
            pool, first = self._pool, self._pool is None
            if pool is None:
                from psycopg_pool import ConnectionPool

                pool = self._pool = ConnectionPool(
                    self._conninfo,
                    connection_class=self._connection_class(),
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=self._timeout,
                    open=False,
                    # prepare_threshold=None: transaction-mode poolers (Supabase's
                    # on port 6543) cannot keep prepared statements.
                    kwargs={
                        "autocommit": True,
                        "prepare_threshold": None,
                        **connection_options(self._timeout),
                    },
                    name="sms-tracking",
                )
                pool.open(wait=False)
        if first:
            # The first call waits for the pool's first connection rather than asking
            # beside it: a request the pool cannot serve at once makes it grow, and it
            # then hands its connections out in turn. On this machine a connection left
            # idle for a call in between costs ~0.1 ms more per call (benchmarks/
            # README.md, status). Calls arriving meanwhile wait on the same pool. One
            # that cannot connect in time closes itself, failing them all together,
            # and is dropped: the next call starts anew.
            from psycopg_pool import PoolTimeout

            try:
                pool.wait(timeout=self._timeout)
            except PoolTimeout:
                with self._pool_lock:
                    if self._pool is pool:
                        self._pool = None
                raise
        return pool

    def rpc(
        self, name: str, args: Mapping[str, Any] | None = None, *, as_user: Caller | None = None
    ) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        caller = as_user or SERVICE
        role = caller.role
        names = _arg_names(args)
        payload = to_json(dict(args or {}))
        claims = to_json(dict(caller.claims))
        # Every call ends by this time, whatever the network does: a connection from the
        # pool, the call's round trip and its answer all count against it.
        deadline = time.monotonic() + self._timeout + _DEADLINE_GRACE_SECONDS
        # Each idle pooled connection may have been closed by the server meanwhile
        # (restart, pg_terminate_backend, pooler timeout). Such a connection is found
        # before anything is sent, and replaced; one attempt more than the pool holds
        # always reaches a fresh one. A call is never sent twice.
        for _ in range(self._pool_size + 1):
            try:
                pool = self._connections()
                with pool.connection(timeout=_remaining(deadline)) as conn:
                    if _closed_by_server(conn):
                        conn.close()  # the pool discards it
                        continue
                    call = self._call(conn, _validated_name(name), names, deadline)
                    try:
                        context, result = _pipeline(
                            conn.pgconn,
                            (_SET_CONTEXT, [role.encode(), claims, self._statement_timeout]),
                            (call, [payload]),
                            deadline=deadline,
                        )
                    except BaseException:
                        conn.close()  # its protocol state is unknown: the pool discards it
                        raise
                    failed = _failure_in(context) or _failure_in(result)
                    if failed is not None:
                        raise classify(failed, retry_after=self._retry_after)
                    value = result.get_value(0, 0) if result.ntuples else None
                    return json.loads(value) if value is not None else None
            except PoolTimeout:
                if self._refused is not None:
                    raise self._credentials_refused() from None
                failure = PostgresFailure("08000", "no database connection within the timeout")
                raise classify(failure, retry_after=self._retry_after) from None
            except DeadlineError:
                failure = PostgresFailure(
                    "08000", "the database did not answer within the deadline"
                )
                raise classify(failure, retry_after=self._retry_after) from None
            except psycopg.Error as exc:
                raise classify(failure_of(exc), retry_after=self._retry_after) from None
        failure = PostgresFailure("08000", "every pooled connection had been closed by the server")
        raise classify(failure, retry_after=self._retry_after)

    def _connection_class(self) -> type[psycopg.Connection[Any]]:
        """psycopg's connection, telling this database when the server (or the pooler)
        refuses its credentials: the pool retries in its own thread and would report a
        mere timeout."""
        import psycopg

        database = self

        class Connection(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs: Any) -> Connection:
                try:
                    conn = super().connect(conninfo, **kwargs)
                except psycopg.OperationalError as exc:
                    database._refused = refusal_in(exc)
                    raise
                database._refused = None
                return conn

        return Connection

    def _credentials_refused(self) -> ServiceError | ConfigurationError:
        return credentials_refused(
            self._refused or "", self._renew_credentials, "DATABASE_URL", self._retry_after
        )

    def _call(
        self, conn: psycopg.Connection[Any], name: str, keys: frozenset[str], deadline: float
    ) -> bytes:
        """The SQL calling public.<name> with these argument names, cached per process."""
        call = self._calls.get((name, keys))
        if call is None:
            try:
                (found,) = _pipeline(conn.pgconn, (_OVERLOADS_SQL, [name.encode()]),
                                     deadline=deadline)  # fmt: skip
            except BaseException:
                conn.close()  # its protocol state is unknown: the pool discards it
                raise
            if (failed := _failure_in(found)) is not None:
                raise classify(failed, retry_after=self._retry_after)
            sql = _resolve(json.loads(found.get_value(0, 0) or b"[]"), name, keys)
            if sql is None:
                failure = PostgresFailure(
                    "PGRST202",
                    f"Could not find the function public.{name}({', '.join(sorted(keys))})",
                )
                raise classify(failure, retry_after=self._retry_after)
            call = self._calls[(name, keys)] = sql.encode()
        return call

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection has something to read: only the server's goodbye
    (a FATAL message, or end of file) arrives unasked on a connection at rest."""
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class DeadlineError(Exception):
    """A call's deadline passed with the database silent."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineError
    return left


def _wait(pgconn: PGconn, *, writable: bool, deadline: float) -> None:
    """Until the connection's socket is ready, or the deadline has passed."""
    sockets = [pgconn.socket]
    ready = (
        select.select([], sockets, [], _remaining(deadline))
        if writable
        else select.select(sockets, [], [], _remaining(deadline))
    )
    if not any(ready):
        raise DeadlineError


def _pipeline(
    pgconn: PGconn, *statements: tuple[bytes, list[bytes]], deadline: float
) -> list[PGresult]:
    """Send the statements with their parameters bound by the server, then one Sync;
    return each statement's result. One round trip, one implicit transaction, ended by
    the deadline whatever the server does."""
    from psycopg import pq

    pgconn.enter_pipeline_mode()
    for sql, params in statements:
        pgconn.send_query_params(sql, params)
    pgconn.pipeline_sync()
    while pgconn.flush():
        _wait(pgconn, writable=True, deadline=deadline)
    results: list[PGresult] = []
    while True:
        while pgconn.is_busy():
            _wait(pgconn, writable=False, deadline=deadline)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            continue  # the end of one statement's results
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        results.append(result)
    pgconn.exit_pipeline_mode()
    return results


def _failure_in(result: PGresult) -> PostgresFailure | None:
    """The error a statement's result reports, if any. A statement skipped because an
    earlier one failed reports nothing of its own."""
    from psycopg import pq

    if result.status != pq.ExecStatus.FATAL_ERROR:
        return None

    def field(name: pq.DiagnosticField) -> str | None:
        value = result.error_field(name)
        return value.decode(errors="replace") if value is not None else None

    return PostgresFailure(
        code=field(pq.DiagnosticField.SQLSTATE),
        message=field(pq.DiagnosticField.MESSAGE_PRIMARY) or "",
        details=field(pq.DiagnosticField.MESSAGE_DETAIL),
        hint=field(pq.DiagnosticField.MESSAGE_HINT),
    )


# How libpq, PgBouncer and Supavisor word a login refused for its credentials: at
# connect, psycopg has no SQLSTATE to tell it from a network failure.
_REFUSED = re.compile(
    r"password authentication failed|SASL authentication failed|no password supplied"
    r"|wrong password|tenant or user not found",
    re.IGNORECASE,
)


def refusal_in(exc: psycopg.Error) -> str | None:
    """What refused the credentials, in a failed connection's error; None if nothing did."""
    match = _REFUSED.search(str(exc))
    return match.group(0).lower() if match else None


def credentials_refused(
    refusal: str, renew: Callable[[], bool], setting: str, retry_after: int
) -> ServiceError | ConfigurationError:
    """A refusal is a rotated secret, not an outage: once new credentials are in hand
    (renew read them), a retry succeeds (503); with none newer, nothing will (500,
    alarmed)."""
    if renew():
        return UnavailableError(retry_after=retry_after)
    return ConfigurationError(
        f"the database refused {setting}'s credentials ({refusal}): put the role's"
        " current password in its secret"
    )


def failure_of(exc: psycopg.Error) -> PostgresFailure:
    import psycopg

    diag = exc.diag
    # A connection that cannot be made or was lost has no SQLSTATE from a server.
    lost = isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    return PostgresFailure(
        code="08000" if lost else exc.sqlstate,
        message=diag.message_primary or str(exc).strip(),
        details=diag.message_detail,
        hint=diag.message_hint,
    )


# --- SupabaseDatabase -------------------------------------------------------------------


@dataclass
class SupabaseDatabase:
    """Supabase's PostgREST, through the supabase client's PostgREST layer.

    Works with the new secret keys (``sb_secret_...``), which go in the ``apikey``
    header only because they are not JWTs, and with the legacy ``service_role``
    JWT, which also goes in ``Authorization``. A user call carries the user's own
    access token, so PostgREST applies their role and row-level security.
    """

    url: str
    secret_key: str = field(repr=False)
    timeout: float = 10.0
    retry_after: int = 5
    _http: httpx.Client | None = field(default=None, init=False, repr=False)
    _http_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _headers(self, caller: Caller) -> dict[str, str]:
        headers = {"apikey": self.secret_key}
        role = caller.role  # refuses a role the API does not know, as PostgresDatabase does
        if caller.access_token:
            headers["Authorization"] = f"Bearer {caller.access_token}"
        elif role != "service_role":
            raise InternalError("A user call through Supabase needs the user's access token.")
        elif not self.secret_key.startswith("sb_secret_"):
            headers["Authorization"] = f"Bearer {self.secret_key}"
        return headers

    def _client(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                import httpx

                self._http = httpx.Client(
                    base_url=self.rest_url, timeout=self.timeout, follow_redirects=False
                )
            return self._http

    @property
    def rest_url(self) -> str:
        return self.url.rstrip("/") + "/rest/v1"

    def rpc(
        self, name: str, args: Mapping[str, Any] | None = None, *, as_user: Caller | None = None
    ) -> Any:
        import httpx
        from postgrest import APIError, SyncPostgrestClient

        client = SyncPostgrestClient(
            self.rest_url, headers=self._headers(as_user or SERVICE), http_client=self._client()
        )
        try:
            return client.rpc(_validated_name(name), _json_args(args)).execute().data
        except APIError as exc:
            failure = PostgresFailure(
                code=exc.code,
                message=exc.message or "",
                details=exc.details if isinstance(exc.details, str) else None,
                hint=exc.hint,
            )
            raise classify(failure, retry_after=self.retry_after) from None
        except httpx.TransportError:
            raise DatabaseUnavailableError(retry_after=self.retry_after) from None

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None


def database(services: Services) -> Database:
    """The factory of the composition root (shared.runtime)."""
    settings = services.settings
    if settings.database_url is not None:
        return PostgresDatabase(
            settings.database_url.get_secret_value(),
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout_seconds,
            retry_after=settings.retry_after_seconds,
            renew_credentials=lambda: services.renew() is not None,
        )
    assert settings.supabase_url is not None
    assert settings.supabase_secret_key is not None
    return SupabaseDatabase(
        str(settings.supabase_url),
        settings.supabase_secret_key.get_secret_value(),
        timeout=settings.database_timeout_seconds,
        retry_after=settings.retry_after_seconds,
    )
