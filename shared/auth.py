"""Caller authentication: bearer API keys, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from shared.errors import UnauthorizedError

if TYPE_CHECKING:
    from flask import Request


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_api_key(request: Request, keys: Iterable[SecretStr]) -> None:
    """Pass if the bearer token is one of the keys; otherwise 401. No keys: nobody passes.

    Every key is compared, whatever the outcome, so timing tells nothing about which
    key came close.
    """
    token = bearer_token(request) or ""
    # Digests are compared, so not even the keys' lengths show in the timing.
    presented = hashlib.sha256(token.encode()).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(
            presented, hashlib.sha256(key.get_secret_value().encode()).digest()
        )
    if not token or not matched:
        raise UnauthorizedError("Send a valid key as 'Authorization: Bearer <key>'.")
