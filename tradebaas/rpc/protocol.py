"""JSON-RPC 2.0, pure: parse a frame, validate params, call the handler, build the answer. No sockets.

Adding a method (later issues add ``strategy.*``, ``orders.*``, ...)::

    from tradebaas.rpc.protocol import Param, Registry

    registry = Registry()

    @registry.method("strategy.stop", id=Param(str), flatten=Param(bool, default=False))
    async def strategy_stop(id: str, flatten: bool) -> dict: ...

    registry.add("orders.list", handler, {"open_only": Param(bool, default=True)})

Handlers may be sync or async. A handler that declares a parameter named ``ctx`` receives the ``CallContext``
of the connection (its session, used by ``subscribe``). Raise ``RpcError(code, message)`` for a specific error or
``tradebaas.errors.UserError`` for a readable application error (code -32000); anything else becomes -32603
"internal error" (logged with its traceback, never sent to the client).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradebaas.errors import UserError

log = logging.getLogger("tradebaas.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: The engine's own errors (JSON-RPC reserves -32000..-32099 for implementation-defined server errors).
APP_ERROR = -32000
NOT_FOUND = -32001
CONFLICT = -32002
FORBIDDEN = -32003


class Access(enum.StrEnum):
    """Who may call a method: ``read`` (any token, a read-only one included) or ``trade`` (the full token only)."""

    READ = "read"
    TRADE = "trade"


class RpcError(UserError):
    """A JSON-RPC error: raised by handlers on the server, and by the clients when the engine answers one."""

    exit_code = 5

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Param:
    """One named parameter: its JSON type(s), default (absent = required) and an optional extra check.

    ``type`` is a Python type or tuple of types (``int`` accepts no bool; ``float`` accepts int; ``list``/``dict``
    check only the container). ``check(value)`` may return an error string to refuse the value.
    """

    type: type | tuple[type, ...] = object
    default: Any = _REQUIRED
    doc: str = ""
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def validate(self, name: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        ok = False
        for t in types:
            if t is object:
                ok = True
            elif t is float and isinstance(value, int | float) and not isinstance(value, bool):
                value, ok = float(value), True
            elif t is int and isinstance(value, bool):
                continue
            elif isinstance(value, t):
                ok = True
            if ok:
                break
        if not ok:
            names = " or ".join(_json_type_name(t) for t in types)
            raise RpcError(INVALID_PARAMS, f"param {name!r} must be {names}, got {_json_type_name(type(value))}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise RpcError(INVALID_PARAMS, f"param {name!r}: {problem}")
        return value


def _json_type_name(t: type) -> str:
    return {
        str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
        dict: "an object", type(None): "null", object: "any value",
    }.get(t, t.__name__)


@dataclass(slots=True)
class CallContext:
    """What a handler may know about the caller: the server-side session object (opaque here) and what its token
    allows (in-process callers, tests and the engine itself, have full access)."""

    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    access: Access = Access.TRADE


Handler = Callable[..., Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    params: Mapping[str, Param]
    wants_ctx: bool
    doc: str = ""
    access: Access = Access.TRADE


class Registry:
    """Method name -> handler and its parameter schema."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def add(
        self, name: str, handler: Handler, params: Mapping[str, Param] | None = None, *, doc: str = "",
        access: Access = Access.TRADE,
    ) -> None:
        """Register ``handler`` under ``name``. ``access`` defaults to the full token: a method is read-only only
        when it says so."""
        if name in self._methods:
            raise ValueError(f"RPC method {name!r} is already registered")
        if not name or name.startswith("rpc."):
            raise ValueError(f"bad RPC method name {name!r}")
        wants_ctx = "ctx" in inspect.signature(handler).parameters
        self._methods[name] = Method(name, handler, dict(params or {}), wants_ctx, doc or (handler.__doc__ or ""),
                                     Access(access))

    def set_access(self, name: str, access: Access) -> None:
        """Change the access level of a method registered elsewhere (the server's own ``subscribe``)."""
        self._methods[name] = dataclasses.replace(self._methods[name], access=Access(access))

    def method(self, name: str, **params: Param) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``: ``@registry.method("engine.ping")``."""

        def deco(fn: Handler) -> Handler:
            self.add(name, fn, params)
            return fn

        return deco

    def remove(self, name: str) -> None:
        self._methods.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    # -- dispatch ------------------------------------------------------------------------------------------
    async def dispatch(self, frame: str | bytes, ctx: CallContext | None = None) -> str | None:
        """Answer one incoming frame (a request, a notification or a batch). None = nothing to send back.

        Promise: every frame gets exactly one answer, except a valid notification (or a batch of only valid
        notifications), which gets none, as JSON-RPC 2.0 says. Hostile frames included: non-JSON bytes,
        ``NaN``/``Infinity``/out-of-range numbers (parse error), nesting deeper than ``MAX_NESTING`` (invalid
        request), and answers that cannot be encoded (internal error) are all answered, never raised.
        """
        ctx = ctx or CallContext()
        try:
            message = decode(frame)
        except RecursionError:
            return encode(error_response(None, RpcError(INVALID_REQUEST, TOO_DEEP)))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            return encode(error_response(None, RpcError(PARSE_ERROR, f"parse error: {exc}")))
        if isinstance(message, list):
            if not message:
                return encode(error_response(None, RpcError(INVALID_REQUEST, "invalid request: empty batch")))
            answers = [a for a in [await self.handle(m, ctx) for m in message] if a is not None]
            return "[" + ",".join(encode_answer(a) for a in answers) + "]" if answers else None
        answer = await self.handle(message, ctx)
        return None if answer is None else encode_answer(answer)

    async def handle(self, message: Any, ctx: CallContext) -> dict[str, Any] | None:
        """Answer one decoded request object."""
        if not isinstance(message, dict):
            return error_response(None, RpcError(INVALID_REQUEST, "invalid request: expected a JSON object"))
        req_id = message.get("id")
        is_notification = "id" not in message
        if not _valid_id(req_id):
            return error_response(None, RpcError(INVALID_REQUEST, "invalid request: bad id"))
        if nested_deeper_than(message, MAX_NESTING):
            return error_response(req_id, RpcError(INVALID_REQUEST, TOO_DEEP))
        if message.get("jsonrpc") != "2.0":
            return error_response(req_id, RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"'))
        name = message.get("method")
        if not isinstance(name, str) or not name:
            return error_response(req_id, RpcError(INVALID_REQUEST, "invalid request: missing method"))
        raw_params = message.get("params", {})
        if raw_params is None:
            raw_params = {}
        if not isinstance(raw_params, dict | list):
            return error_response(req_id, RpcError(INVALID_REQUEST, "invalid request: params must be object or array"))
        try:
            result = await self.call(name, raw_params, ctx)
        except RpcError as exc:
            return None if is_notification else error_response(req_id, exc)
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    async def call(self, name: str, raw_params: dict[str, Any] | list[Any], ctx: CallContext) -> Any:
        """Validate and run one method; every failure comes out as RpcError."""
        method = self._methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {name}")
        if method.access is Access.TRADE and ctx.access is not Access.TRADE:
            raise RpcError(FORBIDDEN, f"{name} needs the engine's full token; this connection is read-only")
        kwargs = bind_params(method, raw_params)
        if method.wants_ctx:
            kwargs["ctx"] = ctx
        try:
            result = method.handler(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            return to_jsonable(result)
        except RpcError:
            raise
        except UserError as exc:
            raise RpcError(APP_ERROR, str(exc)) from exc
        except Exception as exc:
            log.exception("RPC method %s failed", name)
            raise RpcError(INTERNAL_ERROR, f"internal error in {name}: {type(exc).__name__}") from exc


def bind_params(method: Method, raw: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Check ``raw`` against the method's schema: unknown, missing and mistyped params are -32602."""
    spec = method.params
    if isinstance(raw, list):
        if len(raw) > len(spec):
            raise RpcError(INVALID_PARAMS, f"{method.name} takes at most {len(spec)} positional params")
        raw = dict(zip(spec, raw, strict=False))
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise RpcError(INVALID_PARAMS, f"unknown param(s) for {method.name}: {', '.join(unknown)} (allowed: {allowed})")
    out: dict[str, Any] = {}
    for pname, param in spec.items():
        if pname in raw:
            out[pname] = param.validate(pname, raw[pname])
        elif param.required:
            raise RpcError(INVALID_PARAMS, f"missing param {pname!r} for {method.name}")
        else:
            out[pname] = param.default
    return out


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


# -- frames ------------------------------------------------------------------------------------------------
#: How deep a request may nest (objects and arrays, the request object itself being level 1). Real requests
#: use a handful of levels; the limit keeps every later step (validation, handlers, encoding) far from Python's
#: recursion limit. A batch adds one level of its own.
MAX_NESTING = 64
TOO_DEEP = f"invalid request: nested deeper than {MAX_NESTING} levels"


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def decode(frame: str | bytes) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` and numbers beyond a double's range are ``ValueError`` (the answer could
    not carry them back, and no handler wants them). Deep nesting may raise ``RecursionError``."""
    return json.loads(frame, parse_constant=_not_json_constant, parse_float=_finite_float)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` (a decoded JSON value) nests objects/arrays more than ``limit`` levels; iterative, so
    it cannot itself hit the recursion limit, and it stops at the first path that is too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def error_response(req_id: Any, exc: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": exc.to_json()}


def notification(channel: str, data: Any) -> dict[str, Any]:
    """The frame pushed to subscribers: ``{"jsonrpc":"2.0","method":"event","params":{"channel","data"}}``."""
    return {"jsonrpc": "2.0", "method": "event", "params": {"channel": channel, "data": data}}


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, paths, tuples and sets -> plain JSON values (recursively)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return to_jsonable(_jsonable_leaf(value))  # enums, dataclasses, sets, paths; anything else: TypeError


def encode(message: Any) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def encode_jsonable(message: Any) -> str:
    """``encode(to_jsonable(message))``, with the conversion done by the JSON encoder's own walk (in C) and
    ``to_jsonable`` only for what it cannot take (non-string keys): the engine pushes every decision to every
    panel, and the Python walk over each record cost more than the encoding (issue 15). One difference: a key
    ``True`` or ``None`` is written as JSON writes it ("true", "null"), not as ``str`` does; no push has one."""
    try:
        return json.dumps(message, separators=(",", ":"), allow_nan=False, default=_jsonable_leaf)
    except TypeError:
        return encode(to_jsonable(message))


def _jsonable_leaf(value: Any) -> Any:
    """What ``to_jsonable`` makes of a value the JSON encoder does not know (it then encodes the result)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"RPC result not JSON serialisable: {type(value).__name__}")


def encode_answer(answer: dict[str, Any]) -> str:
    """``encode(answer)``, or, when the answer cannot be encoded (a result holding NaN, too deep...), an
    internal-error answer for the same id: the caller gets an answer, never a timeout."""
    try:
        return encode(answer)
    except (ValueError, TypeError, RecursionError) as exc:
        log.warning("RPC answer to id %r could not be encoded (%s)", answer.get("id"), type(exc).__name__)
        req_id = answer.get("id")
        failure = RpcError(INTERNAL_ERROR, "internal error: the answer could not be encoded as JSON")
        return encode(error_response(req_id if _valid_id(req_id) else None, failure))


# -- channels ----------------------------------------------------------------------------------------------
def valid_channel(name: Any) -> bool:
    """Channel names: dotted words (``log``, ``strategy.ab12``, ``ticker.BTC-PERPETUAL``); ``prefix.*`` matches all."""
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:*")
    if not set(name) <= allowed:
        return False
    return "*" not in name or (name.endswith(".*") and name.count("*") == 1) or name == "*"


def channel_matches(pattern: str, channel: str) -> bool:
    if pattern == channel or pattern == "*":
        return True
    return pattern.endswith(".*") and channel.startswith(pattern[:-1])
