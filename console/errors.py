"""API errors: a status, a stable ``error_id`` and a message that says what is wrong.

Every error the API answers is JSON ``{"error_id": "...", "message": "..."}`` (plus
``errors`` for a refused import). ``as_api_error`` turns whatever a service raised
into one: ``ApiError`` as is; the dispatch tree by class (``NotFound`` 404,
``Conflict`` 409, ``InvalidInput`` 422); any exception carrying an int ``status`` and
a str ``error_id`` (the calls feature's ``CallError``) as it says; the store's errors
by their ``error_id``. Anything else is a bug: 500 ``internal-error``, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from starlette.responses import JSONResponse

from dispatch.errors import Conflict, DispatchError, ImportFailed, InvalidInput, NotFound

log = logging.getLogger(__name__)

#: Statuses of the hub store's errors (hub.store.StoreError subclasses), by error_id.
_STORE_STATUS: Final[Mapping[str, int]] = {
    "invalid-input": 422,
    "already-exists": 409,
    "not-found": 404,
    "store-busy": 503,
}


class ApiError(Exception):
    """An answer other than success, raised anywhere in a request's handling."""

    def __init__(self, status: int, error_id: str, message: str,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error_id": self.error_id, "message": self.message, **self.extra}
        return JSONResponse(body, status_code=self.status,
                            headers={"cache-control": "no-store", **self.headers})


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, {"www-authenticate": 'Bearer realm="hub"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def invalid(message: str, error_id: str = "invalid-input") -> ApiError:
    return ApiError(422, error_id, message)


def as_api_error(exc: BaseException) -> ApiError | None:
    """The API error ``exc`` stands for, or None if it is not one (a bug)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImportFailed):
        return ApiError(422, exc.error_id, exc.message, extra={
            "errors": [{"line": e.line, "message": e.message} for e in exc.errors]})
    if isinstance(exc, DispatchError):
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) \
            else 422 if isinstance(exc, InvalidInput) else 400
        return ApiError(code, exc.error_id, exc.message)
    status: object = getattr(exc, "status", None)
    error_id: object = getattr(exc, "error_id", None)
    if isinstance(status, int) and 400 <= status < 600 and isinstance(error_id, str):
        return ApiError(status, error_id, str(exc))
    if isinstance(error_id, str) and error_id in _STORE_STATUS:
        return ApiError(_STORE_STATUS[error_id], error_id, str(exc))
    return None


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON answer for ``exc``; unknown exceptions become a logged 500."""
    error = as_api_error(exc)
    if error is None:
        log.error("request failed", exc_info=exc)
        error = ApiError(500, "internal-error", "the hub failed to handle this request; "
                         "it has been logged")
    return error.response()
