"""The floor: an HTTP function that does nothing, served as the real ones are."""

from werkzeug.wrappers import Request


def empty_function(request: Request) -> str:
    return ""
