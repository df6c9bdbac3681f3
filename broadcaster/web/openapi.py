"""The OpenAPI 3 document of the HTTP API, generated from the command registry.

Nothing here is written by hand per route: each registered command gives its method, path,
input dataclass, body kind, status and summary, and this module turns them into the same
contract `api.make_handler` serves. GET and DELETE take every input field as a query (or path)
parameter; a POST whose body is audio takes its fields as query parameters and the audio as an
octet-stream body; any other POST takes a JSON object with exactly the dataclass's fields.
Routes that are not commands (the live feed, the live page, the dial-in channel, this document)
add their own path items; WebSocket routes are GETs with the upgrade, their messages described
by an `x-websocket` extension and a pointer to the document of their wire format.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from broadcaster.core.commands import REGISTRY, Spec

VERSION = "0.1.0"
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)
_REASONS = {
    400: "bad input",
    401: "no valid session or token",
    403: "outside your scope, cross-origin, or a missing CSRF token",
    404: "no such object or target",
    409: "speakers busy or offline, or a conflict",
    413: "body too large",
    422: "audio that cannot be decoded",
    429: "too many failed logins",
    503: "overloaded",
}
_PATH_PARAM = re.compile(r"{(\w+)}")
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. forbidden, busy"},
        "message": {"type": "string", "description": "what was wrong, naming where"},
        "detail": {"type": "object", "description": "machine-readable particulars"},
    },
}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token from `broadcaster users token NAME`",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "bc_session",
        "description": "a browser session from POST /api/login (SameSite=Strict)",
    },
    "csrf": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "the login answer's csrf value; required with a session cookie on "
        "every request that is not GET",
    },
}


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of a field's Python type (str, int, float, bool, lists, optionals)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        out = type_schema(inner[0])
        if type(None) in args:
            out = {**out, "nullable": True}
        return out
    if origin is list:
        return {"type": "array", "items": type_schema(args[0] if args else str)}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    return {"type": "string"}


def _fields(spec: Spec) -> list[tuple[dataclasses.Field, Any, bool]]:
    """(field, type, required) of a command's input, in declaration order."""
    if spec.input is None:
        return []
    hints = typing.get_type_hints(spec.input)
    return [
        (
            f,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(spec.input)
    ]


def _parameters(spec: Spec, in_query: bool) -> list[dict[str, Any]]:
    path_names = set(_PATH_PARAM.findall(spec.path))
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(spec.path)
    ]
    if not in_query:
        return params
    for f, tp, required in _fields(spec):
        if f.name in path_names:
            continue
        schema = type_schema(tp)
        schema.pop("nullable", None)  # a query value is never null: absent means the default
        param: dict[str, Any] = {
            "name": f.name,
            "in": "query",
            "required": required,
            "schema": schema,
        }
        if schema["type"] == "array":
            param |= {"style": "form", "explode": True}
        params.append(param)
    return params


def _json_body(spec: Spec) -> dict[str, Any] | None:
    path_names = set(_PATH_PARAM.findall(spec.path))
    fields = [(f, tp, req) for f, tp, req in _fields(spec) if f.name not in path_names]
    if spec.input is None:
        return None
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: type_schema(tp) for f, tp, _ in fields},
    }
    required = [f.name for f, _, req in fields if req]
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def operation(spec: Spec) -> dict[str, Any]:
    """The OpenAPI operation object of one command."""
    audio = spec.body == "audio"
    query = spec.method in ("GET", "DELETE") or audio
    op: dict[str, Any] = {
        "operationId": spec.name.replace("/", "_"),
        "summary": spec.summary,
        "tags": [spec.name.split("/")[0]],
        "parameters": _parameters(spec, query),
        "responses": responses(
            spec.status,
            None
            if spec.returns == "application/json"
            else {
                "description": "done",
                "content": {spec.returns: {"schema": {"type": "string", "format": "binary"}}},
            },
        ),
    }
    if spec.input is not None and spec.input.__doc__:
        op["description"] = spec.input.__doc__.strip().splitlines()[0]
    if audio:
        op["requestBody"] = {
            "required": False,
            "description": "an audio file (any format ffmpeg decodes), or with live=true a "
            "WAV stream played as it arrives; none for clip or tts",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    elif spec.method not in ("GET", "DELETE"):
        body = _json_body(spec)
        if body is not None:
            op["requestBody"] = body
    if spec.public:
        op["security"] = []
    elif spec.method not in ("GET", "HEAD"):
        op["security"] = [{"bearer": []}, {"session": [], "csrf": []}]
    return op


def responses(status: int, success: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The success answer (a JSON object unless given) and every error answer."""
    out: dict[str, Any] = {
        str(status): success
        or {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}}
    }
    for code in ERROR_STATUSES:
        out[str(code)] = {
            "description": _REASONS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def document(
    specs: Iterable[Spec] | None = None, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The whole OpenAPI 3.0 document: every command, plus extra path items (non-commands)."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in REGISTRY.values() if specs is None else specs:
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation(spec)
    for path, item in (extra or {}).items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "broadcaster",
            "version": VERSION,
            "description": "IP broadcast-speaker controller. Every route needs a session "
            "or an API token except those with an empty security list. "
            "Errors are {error, message}.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"Error": ERROR_SCHEMA}, "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}, {"session": []}],
    }


SELF_PATH = {
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "tags": ["meta"],
            "security": [],
            "parameters": [],
            "responses": responses(200),
        }
    }
}


def websocket(
    operation_id: str,
    summary: str,
    doc: str,
    messages: Mapping[str, Any],
    *,
    tags: list[str],
    parameters: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    """The path item of a WebSocket route: a GET with the upgrade; 101, or a JSON error.

    OpenAPI 3.0 has no words for the messages on the socket: `x-websocket` names who speaks
    first and gives the JSON schema of that first message; `externalDocs` points to the wire
    format (every message, in both directions).
    """
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": "A WebSocket: send `Connection: Upgrade` and `Upgrade: websocket`; a plain "
        f"GET is refused (400). The messages are described in {doc}.",
        "tags": tags,
        "parameters": list(parameters or []),
        "externalDocs": {"description": f"the wire format ({doc})", "url": doc},
        "x-websocket": dict(messages),
        "responses": responses(101, {"description": "switching to the WebSocket protocol"}),
    }
    if public:
        op["security"] = []
    return {"get": op}


_DIAL_IN_HELLO = {
    "type": "object",
    "required": ["t", "v", "speaker", "nonce", "mac"],
    "properties": {
        "t": {"type": "string", "enum": ["hello"]},
        "v": {"type": "integer", "enum": [1]},
        "speaker": {"type": "string", "description": "the speaker's id in zones.yaml"},
        "nonce": {"type": "string", "description": "32 hex digits, fresh"},
        "mac": {"type": "string", "description": "HMAC-SHA256 over the controller's nonce"},
    },
}
DIAL_IN = {
    "/api/dial-in": websocket(
        "dial_in",
        "A speaker behind NAT connects out and carries its control requests over the socket "
        "(for speakers, not users: no token; the speaker proves its pairing key on the "
        "channel, a refused one is closed with code 4401 and raises an attack event).",
        "docs/protocol.md#8-dial-in-speakers-behind-nat",
        {
            "first": "server",
            "server_first": "challenge {t, v, nonce, clock_port}",
            "client_first_message": _DIAL_IN_HELLO,
        },
        tags=["speakers"],
        public=True,
    )
}
DOC = web.AppKey("openapi_document", dict)


def add_routes(app: web.Application, extra: Mapping[str, Mapping[str, Any]]) -> None:
    """Serve the document (built once, from the registry and the extra path items)."""
    app[DOC] = document(extra={**SELF_PATH, **DIAL_IN, **extra})

    async def serve(request: web.Request) -> web.Response:
        return web.json_response(request.app[DOC])

    app.router.add_get("/api/openapi.json", serve)


def extend(app: web.Application, items: Mapping[str, Mapping[str, Any]]) -> None:
    """Add the path items of routes added after the document was built (kept sorted)."""
    paths = app[DOC]["paths"]
    for path, item in items.items():
        paths.setdefault(path, {}).update(item)
    app[DOC]["paths"] = dict(sorted(paths.items()))
