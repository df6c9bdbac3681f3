"""The one command surface: every operation, with typed input, called with a principal.

HTTP routes, the CLI (through HTTP), the demo and the console all call these; nothing else
reaches the controller. Scope and role are checked here, once. Each command declares its HTTP
mapping beside it, so the web layer and the OpenAPI document are generated from this registry.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.access.principal import Principal
from broadcaster.errors import InvalidInput, Unauthorized


@dataclass(frozen=True)
class Spec:
    """One registered command."""

    name: str
    func: Callable[..., Awaitable[Any]]
    input: type | None
    method: str
    path: str
    summary: str
    body: str | None = None  # "audio": the HTTP body may be an audio file; "stream": live WAV
    public: bool = False  # callable without a session or token (health, login)
    status: int = 200
    returns: str = "application/json"  # or a media type: the command then returns bytes


REGISTRY: dict[str, Spec] = {}


def command(
    name: str,
    method: str,
    path: str,
    input: type | None = None,
    *,
    body: str | None = None,
    public: bool = False,
    status: int = 200,
    returns: str = "application/json",
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register an operation under `name`, served at `method path`."""

    def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        summary = (fn.__doc__ or name).strip().splitlines()[0]
        REGISTRY[name] = Spec(name, fn, input, method, path, summary, body, public, status, returns)
        return fn

    return deco


@dataclass
class Call:
    """What a command receives besides its input: who asks, and the services it may use."""

    principal: Principal
    services: Any  # broadcaster.core.services.Services
    upload: Any = None  # an uploaded audio file (web layer), or a live feed
    extra: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], frozenset[str], tuple[dataclasses.Field, ...]]:
    # resolving the type hints is the slow part of a request's parsing: once per input class
    fields = dataclasses.fields(cls)
    return typing.get_type_hints(cls), frozenset(f.name for f in fields), fields


def parse_input(cls: type, raw: dict[str, Any]) -> Any:
    """Build a command's input dataclass from JSON or query values; unknown fields are refused."""
    hints, names, fields = _shape(cls)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InvalidInput(
            f"unknown field(s): {', '.join(unknown)}; this request takes "
            f"{', '.join(sorted(names)) or 'no fields'}",
            code="unknown_field",
        )
    values: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidInput(f"{f.name} is required", code="missing_field")
            continue
        values[f.name] = _coerce(f.name, hints[f.name], raw[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None


def _coerce(name: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(name, args[0], v) for v in items]
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidInput(f"{name} takes one value, not {len(value)}", code="bad_field")
        value = value[0]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value) if isinstance(value, str) else _bad(name, tp, value)
        except ValueError:
            pass
    elif tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidInput(f"{name} contains a NUL character", code="bad_field")
            return value
    else:
        return value
    return _bad(name, tp, value)


def _bad(name: str, tp: Any, value: Any) -> Any:
    kind = getattr(tp, "__name__", str(tp))
    raise InvalidInput(
        f"{name} must be {'a number' if kind in ('int', 'float') else kind}, not {value!r:.40}",
        code="bad_field",
    )


async def call(
    name: str,
    principal: Principal,
    services: Any,
    raw: dict[str, Any] | None = None,
    upload: Any = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """Run a registered command for a principal with raw (JSON or query) input."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise InvalidInput(f"unknown command {name!r}", code="unknown_command")
    if not spec.public and principal.kind == "anonymous":
        raise Unauthorized("log in first", code="unauthorized")
    arg = parse_input(spec.input, raw or {}) if spec.input else None
    ctx = Call(principal, services, upload, extra or {})
    return await (spec.func(ctx, arg) if spec.input else spec.func(ctx))
