"""API errors carry their status code and a message a user can act on (STYLE.md §8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.faults import is_transient


class ApiError(Exception):
    status_code = 400

    def __init__(self, message: str, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadInput(ApiError):
    status_code = 422


class TooLarge(ApiError):
    status_code = 413


class Unavailable(ApiError):
    status_code = 503


def validation_message(errors: Sequence[Any]) -> dict[str, object]:
    """``{"error": "field: problem; …", "details": [...]}`` from pydantic's errors."""
    details = [
        {"field": ".".join(str(x) for x in e["loc"] if x != "body"), "error": e["msg"]}
        for e in errors
    ]
    message = "; ".join(f"{d['field'] or 'body'}: {d['error']}" for d in details)
    return {"error": message, "details": details}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, object] = {"error": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _store_away(_: Request, exc: Exception) -> JSONResponse:
        # A store that is away (Redis restarting, Kafka electing a leader) is a 503 the
        # caller may retry, not a 500; anything else is a bug and stays a 500.
        if is_transient(exc):
            return JSONResponse(
                {"error": f"a store is unavailable, retry shortly ({type(exc).__name__})"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (unknown route, a body it cannot parse) in our one shape.
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        elif exc.status_code == 400 and "parsing the body" in message:
            message = "the body cannot be parsed as JSON (or is nested too deeply)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_message(exc.errors()), status_code=422)
