"""The OpenAPI schema with dancu's credentials in it: people's bearer tokens and the
devices' three signed headers as security schemes, and on every operation the schemes and
roles :data:`api.access.POLICY` lets in, so ``/docs`` shows how to call each route (and
its Authorize button takes a token)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.access import POLICY, PUBLIC_PATHS, SELF_SIGNED

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "person": {
        "type": "http",
        "scheme": "bearer",
        "description": "A person's API token (`dancu users add NAME --role ROLE`).",
    },
    "deviceId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Device-Id",
        "description": "A checkpoint device's ID (`dancu devices add CHECKPOINT_ID`).",
    },
    "deviceTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Timestamp",
        "description": "Unix seconds when the device signed the request.",
    },
    "deviceSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": (
            "Hex HMAC-SHA256 with the device's key over method, path with query, "
            "timestamp and the body's hash (infra/auth.py); each signature is accepted once."
        ),
    },
}
PERSON: dict[str, list[str]] = {"person": []}
DEVICE: dict[str, list[str]] = {"deviceId": [], "deviceTimestamp": [], "deviceSignature": []}
REFUSALS = {
    "401": {"description": "No credentials, or unknown, expired or revoked ones"},
    "403": {"description": "The caller's role, district or checkpoint does not allow it"},
}


def secure(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the security schemes, and each operation's requirements and roles, in place."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path in PUBLIC_PATHS:
                operation["security"] = []
                continue
            if (method.upper(), path) in SELF_SIGNED:  # open; a kiosk device may sign it
                operation["security"] = [{}, DEVICE, PERSON]
                note = "No credential needed: the signed poster in the body is the proof."
                description = operation.get("description", "")
                operation["description"] = f"{description}\n\n{note}" if description else note
                continue
            roles = POLICY.get((method.upper(), path), frozenset())
            requirements = []
            if roles - {"device"}:
                requirements.append(PERSON)
            if "device" in roles:
                requirements.append(DEVICE)
            operation["security"] = requirements or [PERSON]
            who = ", ".join(sorted(roles)) if roles else "no one (not yet in the access policy)"
            note = f"Roles: {who}."
            description = operation.get("description", "")
            operation["description"] = f"{description}\n\n{note}" if description else note
            for status, response in REFUSALS.items():
                operation["responses"].setdefault(status, response)
    return schema


def install(app: FastAPI) -> None:
    """Serve :func:`secure`'s schema at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = secure(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
