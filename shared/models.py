"""Pydantic models of what crosses the wire."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error response: {"error": {"code", "message", "field"?}}."""

    error: ErrorDetail
