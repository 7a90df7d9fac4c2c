"""The floor: an HTTP function that does nothing, served as the real ones are."""

from flask import Request


def empty_function(request: Request) -> str:
    return ""
