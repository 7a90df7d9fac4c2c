"""Supabase-style access tokens (HS256, the project's JWT secret), as Supabase Auth
issues them: for `make dev`'s demo viewer, the tests and the benchmarks."""

from __future__ import annotations

import time
from typing import Any


def access_token(claims: dict[str, Any], secret: str, *, ttl: int = 3600) -> str:
    """A token carrying these claims, issued now and valid for ttl seconds."""
    import jwt

    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + ttl, **claims}, secret, algorithm="HS256")
