"""Strategy configuration: validation and a JSON-schema-like description, both from the declared ``Param``s.

One source of truth: a strategy declares its parameters at the top of its file; the CLI (``--set key=value``),
the RPC (``strategy.start``), the control-panel form and the docs all go through here. Values are coerced
sensibly (``"0.5"`` -> 0.5, ``"true"`` -> True, ``3.0`` -> 3 for an int), ranges are inclusive, 0 is a valid
value wherever the range contains it, and unknown keys are an error (a typo must never silently fall back to a
default on a live account).
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any

from tradebaas.errors import UserError
from tradebaas.strategies.base import Param

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


class ConfigError(UserError):
    """A strategy config value is unknown, of the wrong type or out of range; the message names the key."""


def _range_text(p: Param) -> str:
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
        return ConfigError(f"config {where}{p.name}={value!r}: {why} (allowed: {_range_text(p)})")

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


def defaults(strategy_cls: type) -> dict[str, Any]:
    """The full default config of a strategy."""
    return {p.name: p.default for p in strategy_cls.params}


def validate_config(strategy_cls: type, config: dict[str, Any] | None) -> dict[str, Any]:
    """The complete, typed config: declared defaults overridden by ``config``.

    Raises ``ConfigError`` for an unknown key (with a did-you-mean hint), a value of the wrong type or out of
    range. Idempotent: validating a validated config returns it unchanged.
    """
    name = getattr(strategy_cls, "name", "") or strategy_cls.__name__
    declared = {p.name: p for p in strategy_cls.params}
    out = defaults(strategy_cls)
    for key, value in (config or {}).items():
        p = declared.get(key)
        if p is None:
            close = difflib.get_close_matches(str(key), list(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(declared) or "none"
            raise ConfigError(f"unknown config key {key!r} for strategy {name}{hint} (known: {known})")
        out[key] = coerce(p, value, name)
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


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def param_schema(p: Param) -> dict[str, Any]:
    s: dict[str, Any] = {"type": _JSON_TYPES.get(p.type, "string"), "default": p.default, "description": p.help}
    if p.minimum is not None:
        s["minimum"] = p.minimum
    if p.maximum is not None:
        s["maximum"] = p.maximum
    if p.choices is not None:
        s["enum"] = list(p.choices)
    return s


def schema(strategy_cls: type) -> dict[str, Any]:
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


def docs_table(strategy_cls: type) -> str:
    """A Markdown table of the parameters (name, type, default, range, meaning) for the docs."""
    rows = ["| name | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for p in strategy_cls.params:
        rows.append(f"| {p.name} | {p.type.__name__} | {p.default!r} | {_range_text(p)} | {p.help} |")
    return "\n".join(rows)
