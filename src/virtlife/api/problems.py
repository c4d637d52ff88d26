"""The one place where virtlife errors become HTTP responses: status, stable code, message.

Every error body is ``{"error": {"code": "...", "message": "..."}}``. The code is the
error class in snake case (``vm_not_found``), stable across releases; the message is
the CLI's. A user's mistake (unknown VM, refused transition, bad input) is a 4xx; a
5xx means a host, the store or virtlife itself failed, never the request.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from virtlife import errors

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[errors.VirtlifeError], int], ...] = (
    (errors.NotPermitted, 403),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.AmbiguousName, 409),
    (errors.InvalidTransition, 409),
    (errors.OperationBusy, 409),
    (errors.AgentTimeout, 504),
    (errors.AgentUnavailable, 409),
    (errors.AgentCommandFailed, 422),
    (errors.InvalidDefinition, 422),
    (errors.InvalidInput, 422),
    (errors.Unsupported, 422),
    (errors.OperationFailed, 422),
    (errors.OperationTimeout, 504),
    (errors.HostUnreachable, 503),
    (errors.StoreUnavailable, 503),
    (errors.NotLeader, 409),
    (errors.LabError, 500),
)


def code_of(err: type[BaseException]) -> str:
    """``VMNotFound`` -> ``vm_not_found``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", err.__name__).lower()


def status_of(err: errors.VirtlifeError) -> int:
    for cls, status in STATUS:
        if isinstance(err, cls):
            return status
    return 400


def problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def error_response(err: errors.VirtlifeError) -> JSONResponse:
    return problem(status_of(err), code_of(type(err)), str(err))


HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "content_too_large",
              415: "unsupported_media_type"}


def http_problem(err: StarletteHTTPException) -> JSONResponse:
    """An ``HTTPException`` in the one error shape, with its headers."""
    response = problem(err.status_code, HTTP_CODES.get(err.status_code, "http_error"),
                       str(err.detail))
    for key, value in (err.headers or {}).items():
        response.headers[key] = value
    return response


def install(app: FastAPI) -> None:
    """Register the handlers that give every error this shape."""

    @app.exception_handler(errors.VirtlifeError)
    async def virtlife_error(_request: Request, err: errors.VirtlifeError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for item in err.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where
                         else str(item.get("msg", "invalid")))
        return problem(422, "invalid_input", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return http_problem(err)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:
        # Starlette logs the traceback and re-raises after this answer; the client gets
        # the same JSON shape as for any error, never a bare text page.
        log.error("bug while answering %s %s: %r", request.method, request.url.path, err)
        return problem(500, "internal_error",
                       f"virtlife failed on this request (a bug): {type(err).__name__}; "
                       "the server's log has the details")
