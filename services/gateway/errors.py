"""Error translation at the gateway's edge: one table from error types to ``(status, "CODE")``.

Every 4xx body is ``{"error": {"code", "message", "field"}}`` and names the field at fault
(``"body"`` for an unreadable request body). Nothing a user can send becomes a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.errors
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ferry.domain.errors import (
    ArtifactNotFound,
    ConcurrencyError,
    Conflict,
    FerryError,
    HostError,
    InvalidInput,
    InvalidPath,
    InvalidRef,
    InvariantViolation,
    NotFound,
    RefNotFound,
    RepositoryError,
    SelfApproval,
    StoreUnavailable,
)
from ferry.infra.secrets import SecretKeyError

log = logging.getLogger("ferry.gateway")


class MalformedBody(InvalidInput):
    """The request body is not JSON (or not a JSON object)."""

    code = "MALFORMED_JSON"


class ServiceUnavailable(StoreUnavailable):
    """A service the request needs (such as the builder) is not answering."""

    code = "SERVICE_UNAVAILABLE"


class GatewayTimeout(StoreUnavailable):
    """A service the request needs (such as the builder) took too long to answer."""

    code = "SERVICE_TIMEOUT"


class UpstreamError(FerryError):
    """A service answered the request with an error of its own."""

    code = "UPSTREAM"


class Unauthenticated(FerryError):
    """No token, or one that is unknown or revoked (answered with ``WWW-Authenticate: Bearer``)."""

    code = "UNAUTHENTICATED"


class Forbidden(FerryError):
    """The caller's role does not allow this request, or a cookie request failed the CSRF check."""

    code = "FORBIDDEN"


class PayloadTooLarge(InvalidInput):
    """The request body is larger than ``FERRY_MAX_BODY`` (declared or counted while streaming)."""

    code = "TOO_LARGE"


# Looked up along the exception's MRO, so the most specific entry wins.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    MalformedBody: (400, "MALFORMED_JSON"),
    Unauthenticated: (401, "UNAUTHENTICATED"),
    Forbidden: (403, "FORBIDDEN"),
    SelfApproval: (403, "SELF_APPROVAL"),
    PayloadTooLarge: (413, "TOO_LARGE"),
    InvalidInput: (422, "INVALID_INPUT"),
    InvalidRef: (422, "INVALID_REF"),
    InvalidPath: (422, "INVALID_PATH"),
    ValidationError: (422, "VALIDATION"),
    NotFound: (404, "NOT_FOUND"),
    RefNotFound: (404, "REF_NOT_FOUND"),
    ArtifactNotFound: (404, "NOT_FOUND"),
    Conflict: (409, "CONFLICT"),
    ConcurrencyError: (409, "CONCURRENCY"),
    InvariantViolation: (409, "INVARIANT"),
    IntegrityError: (409, "CONFLICT"),
    RepositoryError: (502, "REPOSITORY"),
    HostError: (502, "HOST"),
    UpstreamError: (502, "UPSTREAM"),
    StoreUnavailable: (503, "STORE_UNAVAILABLE"),
    ServiceUnavailable: (503, "SERVICE_UNAVAILABLE"),
    GatewayTimeout: (504, "SERVICE_TIMEOUT"),
    OperationalError: (503, "DATABASE_UNAVAILABLE"),
    nats.errors.Error: (503, "STORE_UNAVAILABLE"),
    SecretKeyError: (500, "SECRET_KEY"),
    FerryError: (500, "FERRY_ERROR"),
}

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def status_of(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, "INTERNAL"


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def field_of(loc: tuple[int | str, ...], err: ErrorDetails | None = None) -> str:
    """A pydantic location as a dotted field name (``health.timeout``, ``hosts.0``).

    Model-level checks name their field in the error context (``loc``), relative to the model.
    """
    parts = [str(p) for p in loc]
    ctx: dict[str, Any] = dict(err.get("ctx") or {}) if err is not None else {}
    extra = ctx.get("loc")
    if extra:
        parts.append(str(extra))
    return ".".join(parts) or "body"


def _describe(err: ErrorDetails) -> str:
    where = field_of(err["loc"], err)
    if err["type"] == "missing":
        return f"{where}: field required"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {err['msg']}"


def validation_body(exc: ValidationError) -> dict[str, Any]:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else None
    code = "VALIDATION"
    if first is not None and first["type"] == "ferry":
        code = str((first.get("ctx") or {}).get("code", code))
    details = [{"field": field_of(e["loc"], e), "message": _describe(e), "type": e["type"]} for e in errors]
    message = "; ".join(d["message"] for d in details) or "invalid input"
    field = field_of(first["loc"], first) if first is not None else None
    return error_body(code, message, field, details=details)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return JSONResponse(validation_body(exc), status_code=422)


async def _tabled_error(request: Request, exc: Exception) -> Response:
    status, code = status_of(exc)
    if isinstance(exc, FerryError):
        # Subclasses without their own table entry keep the more precise code they carry.
        if type(exc) not in ERROR_TABLE and exc.code != FerryError.code:
            code = exc.code
        message, field = exc.message, exc.field
    elif isinstance(exc, IntegrityError):
        message, field = "the change conflicts with existing data", None
    elif isinstance(exc, OperationalError):
        message, field = "the database is not answering", None
    else:
        message, field = "the event store is not answering", None
    if status >= 500:
        log.error("request failed", extra={"path": request.url.path, "code": code, "why": str(exc)})
    return JSONResponse(error_body(code, message, field), status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/api"):
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    field = "path" if exc.status_code == 404 else None
    return JSONResponse(
        error_body(code, str(exc.detail), field), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", extra={"path": request.url.path})
    return JSONResponse(error_body("INTERNAL", "internal error; see the gateway log"), status_code=500)


async def _client_left(request: Request, exc: Exception) -> Response:
    # Nobody reads this answer: the client went away while sending its body.
    log.info("client disconnected while sending its request", extra={"path": request.url.path})
    return JSONResponse(error_body("CLIENT_DISCONNECTED", "the body was cut short", "body"), status_code=400)


def install_error_handlers(app: Starlette) -> None:
    """Register the one translation table on ``app``."""
    for cls in ERROR_TABLE:
        if cls is not ValidationError:
            app.add_exception_handler(cls, _tabled_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unexpected)
