"""A test-only server that speaks PostgREST's RPC protocol, over the real database.

No PostgREST binary can be installed here, so SupabaseDatabase is tested against
this: POST /rest/v1/rpc/<fn> with Supabase's gateway rules for the apikey and
Authorization headers, JSON arguments, and PostgREST's error JSON and status
codes. Calls execute through PostgresDatabase on the real Postgres.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from werkzeug.wrappers import Request, Response

from shared.db import Caller, PostgresDatabase, PostgresFailure
from shared.errors import ServiceError
from tools.loopback import LoopbackServer


@dataclass(frozen=True)
class Keys:
    jwt_secret: str
    secret_key: str  # sb_secret_...
    publishable_key: str  # sb_publishable_...
    legacy_service_key: str  # JWT, role service_role
    legacy_anon_key: str  # JWT, role anon


def postgrest_status(code: str, *, authenticated: bool) -> int:
    """PostgREST's documented mapping of SQLSTATE (and its own codes) to HTTP status."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "42883": 404,
        "42P01": 404,
        "P0001": 400,
        "PGRST202": 404,
        "PGRST000": 503,
        "PGRST301": 401,
        "PGRST303": 401,
        "42501": 403 if authenticated else 401,
    }
    if code in exact:
        return exact[code]
    by_class = {"08": 503, "09": 500, "0L": 403, "0P": 403, "28": 403, "53": 503, "54": 413}
    if code[:2] in by_class:
        return by_class[code[:2]]
    if code[:2] in {"25", "2D", "38", "39", "3B", "40", "55", "57", "58", "F0", "HV", "P0", "XX"}:
        return 500
    return 400


class FakePostgrest(LoopbackServer):
    def __init__(self, database: PostgresDatabase, keys: Keys) -> None:
        self.database = database
        self.keys = keys
        self.requests: list[dict[str, str]] = []
        super().__init__(self._wsgi)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        self.requests.append(dict(request.headers))
        prefix = "/rest/v1/rpc/"
        if not request.path.startswith(prefix):
            return _error(404, None, "Not found")
        if request.method != "POST":
            return _error(405, "PGRST117", "Unsupported HTTP method")
        claims = self._claims(request)
        if isinstance(claims, Response):
            return claims
        try:
            args = json.loads(request.get_data() or b"{}")
        except json.JSONDecodeError:
            return _error(400, "PGRST102", "Empty or invalid json")
        if not isinstance(args, dict):
            return _error(400, "PGRST102", "Empty or invalid json")
        try:
            result = self.database.rpc(request.path[len(prefix) :], args, as_user=Caller(claims))
        except ServiceError as exc:
            failure = exc.diagnostic
            if not isinstance(failure, PostgresFailure):
                raise
            code = "PGRST000" if (failure.code or "").startswith("08") else (failure.code or "")
            status = postgrest_status(code, authenticated=claims.get("role") != "anon")
            return _error(status, code, failure.message, failure.details, failure.hint)
        return Response(json.dumps(result), 200, mimetype="application/json")

    def _claims(self, request: Request) -> dict[str, Any] | Response:
        """The gateway's and PostgREST's rules: which role does this request run as?"""
        apikey = request.headers.get("apikey", "")
        keys = self.keys
        if apikey not in {
            keys.secret_key,
            keys.publishable_key,
            keys.legacy_service_key,
            keys.legacy_anon_key,
        }:
            return Response(
                json.dumps({"message": "Invalid API key", "hint": "Double check your API key."}),
                401,
                mimetype="application/json",
            )
        authorization = request.headers.get("Authorization")
        if authorization is None:
            if apikey == keys.secret_key:
                return {"role": "service_role"}
            if apikey == keys.publishable_key:
                return {"role": "anon"}
            token = apikey
        elif authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ")
        else:
            return _error(401, "PGRST301", "Invalid Authorization header")
        try:
            return dict(
                jwt.decode(
                    token, keys.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
                )
            )
        except jwt.ExpiredSignatureError:
            return _error(401, "PGRST303", "JWT expired")
        except jwt.InvalidTokenError:
            # An sb_ key in Authorization is not a JWT: Supabase rejects it too.
            return _error(401, "PGRST301", "JWT could not be decoded")


def _error(
    status: int,
    code: str | None,
    message: str,
    details: str | None = None,
    hint: str | None = None,
) -> Response:
    body = {"code": code, "message": message, "details": details, "hint": hint}
    return Response(json.dumps(body), status, mimetype="application/json")
