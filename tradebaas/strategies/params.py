"""Strategy configuration: validation and a JSON-schema-like description, both from the declared ``Param``s.

One source of truth: a strategy declares its parameters at the top of its file; the CLI (``--set key=value``),
the RPC (``strategy.start``), the control-panel form and the docs all go through here. The form sees only the
RPC's description of the parameters (``params_list``), so ``params_from_schema`` rebuilds the same ``Param``s
from it: the form then checks a field with the engine's own ``coerce``, rules and words. Values are coerced
sensibly (``"0.5"`` -> 0.5, ``"true"`` -> True, ``3.0`` -> 3 for an int), ranges are inclusive, 0 is a valid
value wherever the range contains it, and unknown keys are an error (a typo must never silently fall back to a
default on a live account).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from tradebaas.errors import UserError
from tradebaas.strategies.base import Param

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class Declared(Protocol):
    """What the functions here need of a strategy class: its name and its declared parameters."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]


class ConfigError(UserError):
    """A strategy config value is unknown, of the wrong type or out of range; the message names the key."""


def allowed_text(p: Param) -> str:
    """What ``p`` accepts, in the words of the error messages: "a number in [0, 100]", "true or false"."""
    if p.choices is not None:
        return "one of " + ", ".join(repr(c) for c in p.choices)
    if p.type is bool:
        return "true or false"
    lo = "-inf" if p.minimum is None else _fmt(p.minimum)
    hi = "inf" if p.maximum is None else _fmt(p.maximum)
    kind = "an integer" if p.type is int else "a number" if p.type is float else p.type.__name__
    return f"{kind} in [{lo}, {hi}]"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def coerce(p: Param, value: Any, strategy: str = "") -> Any:
    """Coerce ``value`` to ``p.type`` and check its range; raise ``ConfigError`` naming the key."""
    where = f"{strategy}." if strategy else ""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"config {where}{p.name}={value!r}: {why} (allowed: {allowed_text(p)})")

    if p.type is bool:
        if isinstance(value, bool):
            out: Any = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            out = value.strip().lower() in _TRUE
        elif isinstance(value, int | float) and value in (0, 1):
            out = bool(value)
        else:
            raise bad("not a boolean")
    elif p.type is int:
        if isinstance(value, bool):
            raise bad("a boolean is not an integer")
        if isinstance(value, int):
            out = value
        else:
            try:
                f = float(value.strip()) if isinstance(value, str) else float(value)
            except (TypeError, ValueError):
                raise bad("not an integer") from None
            if not math.isfinite(f) or not f.is_integer():
                raise bad("not an integer")
            out = int(f)
    elif p.type is float:
        if isinstance(value, bool):
            raise bad("a boolean is not a number")
        try:
            out = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise bad("not a number") from None
        if not math.isfinite(out):
            raise bad("not a finite number")
    elif p.type is str:
        if not isinstance(value, str) or not value.strip():
            raise bad("not a non-empty string")
        out = value.strip()
    else:  # pragma: no cover - a strategy declaring an exotic type
        try:
            out = p.type(value)
        except Exception as exc:
            raise bad(str(exc)) from None
    if p.choices is not None and out not in p.choices:
        raise bad("not an allowed value")
    if p.type in (int, float):
        if (p.minimum is not None and out < p.minimum) or (p.maximum is not None and out > p.maximum):
            raise bad("out of range")
    return out


def defaults(strategy_cls: type[Declared]) -> dict[str, Any]:
    """The full default config of a strategy."""
    return {p.name: p.default for p in strategy_cls.params}


def unknown_key_error(key: Any, declared: Iterable[str], strategy: str = "") -> ConfigError:
    """The refusal of a key no parameter declares, with a did-you-mean hint and the known keys."""
    names = list(declared)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(names) or "none"
    return ConfigError(f"unknown config key {key!r} for strategy {strategy}{hint} (known: {known})")


def check_config(params: Sequence[Param], config: Mapping[str, Any] | None,
                 strategy: str = "") -> tuple[dict[str, Any], dict[str, ConfigError]]:
    """Every refusal at once: ``(typed config, errors by key)``, errors in the order of ``config``'s keys.

    The config holds the declared defaults overridden by the valid values of ``config``. ``validate_config``
    raises the first error; the control-panel form shows each one next to its field.
    """
    declared = {p.name: p for p in params}
    out = {p.name: p.default for p in params}
    errors: dict[str, ConfigError] = {}
    for key, value in (config or {}).items():
        p = declared.get(key)
        if p is None:
            errors[str(key)] = unknown_key_error(key, declared, strategy)
            continue
        try:
            out[key] = coerce(p, value, strategy)
        except ConfigError as exc:
            errors[str(key)] = exc
    return out, errors


def validate_config(strategy_cls: type[Declared], config: dict[str, Any] | None) -> dict[str, Any]:
    """The complete, typed config: declared defaults overridden by ``config``.

    Raises ``ConfigError`` for an unknown key (with a did-you-mean hint), a value of the wrong type or out of
    range (the first such key of ``config``). Idempotent: validating a validated config returns it unchanged.
    """
    name = getattr(strategy_cls, "name", "") or strategy_cls.__name__
    out, errors = check_config(strategy_cls.params, config, name)
    if errors:
        raise next(iter(errors.values()))
    return out


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` (from repeated ``--set key=value``) -> ``{"a": "1", "b": "x"}``; values stay strings
    so that ``validate_config`` coerces them against the declared types."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


_JSON_TYPES: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}
_PY_TYPES: dict[str, type] = {name: cls for cls, name in _JSON_TYPES.items()}


def param_schema(p: Param) -> dict[str, Any]:
    """One parameter as a JSON-schema property (``type``, ``default``, ``description``, bounds, ``enum``)."""
    s: dict[str, Any] = {"type": _JSON_TYPES.get(p.type, "string"), "default": p.default, "description": p.help}
    if p.minimum is not None:
        s["minimum"] = p.minimum
    if p.maximum is not None:
        s["maximum"] = p.maximum
    if p.choices is not None:
        s["enum"] = list(p.choices)
    return s


def schema(strategy_cls: type[Declared]) -> dict[str, Any]:
    """A JSON-schema-like description of the config (for the control-panel form and the docs).

    Properties keep their declaration order (the form's order); every key is optional (defaults apply) and
    ``additionalProperties`` is false, as ``validate_config`` enforces.
    """
    return {
        "title": getattr(strategy_cls, "name", strategy_cls.__name__),
        "description": " ".join((inspect.getdoc(strategy_cls) or "").split("\n\n")[0].split()),
        "type": "object",
        "properties": {p.name: param_schema(p) for p in strategy_cls.params},
        "additionalProperties": False,
    }


def params_list(strategy_cls: type[Declared]) -> list[dict[str, Any]]:
    """The strategy's declared parameters in docs/rpc.md's ``Param`` shape, in declaration order.

    What ``strategy.available`` and ``strategy.get`` answer: ``{name, type, default, minimum, maximum, help,
    choices}`` with ``type`` one of "number", "integer", "boolean", "string". ``params_from_schema`` reverses it.
    """
    props = schema(strategy_cls)["properties"]
    return [{"name": name, "type": spec["type"], "default": spec["default"], "minimum": spec.get("minimum"),
             "maximum": spec.get("maximum"), "help": spec.get("description", ""), "choices": spec.get("enum")}
            for name, spec in props.items()]


def params_from_schema(items: Iterable[Mapping[str, Any]]) -> tuple[Param, ...]:
    """The ``Param``s that ``params_list`` described (after a JSON round trip): same rules, same messages.

    Strict on purpose: a parameter without a name or with a type the engine never sends raises ``ConfigError``
    rather than guessing a type, since a guess could accept what the engine refuses.
    """
    out = []
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a strategy parameter without a name: {dict(item)!r}")
        kind = _PY_TYPES.get(str(item.get("type")))
        if kind is None:
            raise ConfigError(f"parameter {name!r} has type {item.get('type')!r}; expected one of "
                              + ", ".join(_PY_TYPES))
        choices = item.get("choices")
        out.append(Param(name, kind, item.get("default"), minimum=item.get("minimum"), maximum=item.get("maximum"),
                         help=str(item.get("help") or ""),
                         choices=tuple(choices) if choices is not None else None))
    return tuple(out)


def docs_table(strategy_cls: type[Declared]) -> str:
    """A Markdown table of the parameters (name, type, default, range, meaning) for the docs."""
    rows = ["| name | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for p in strategy_cls.params:
        rows.append(f"| {p.name} | {p.type.__name__} | {p.default!r} | {allowed_text(p)} | {p.help} |")
    return "\n".join(rows)
