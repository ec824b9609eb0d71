"""A report notebook's parameters, checked before any kernel starts.

Why here and not only in the notebook: a run starts a subprocess and a kernel (seconds) before the notebook's own
checks can say that ``period_days`` was ``-3``. What can be judged from the notebook file alone is judged at once,
and the run is recorded ``failed`` without executing:
- names: the cell tagged ``parameters`` declares them; an unknown one is a typo papermill would inject silently;
- values: JSON only; then, per name, the rule of the parameters cell's metadata ``tradebaas.params`` (a small
  subset of JSON Schema: ``type`` — one or a list of ``null``, ``number``, ``integer``, ``string``, ``boolean``,
  ``array``, ``object`` — ``minimum``, ``exclusive_minimum``, and ``must``: the words of the error), else the type
  of the default's literal (a number default takes a number, a text default a text; ``None`` takes anything).
The notebook still checks its parameters itself (what needs pandas or the engine, like parsing ``until``).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tradebaas.errors import UserError
from tradebaas.reports.config import ReportConfig

_TYPES = {"null": "None", "number": "a number", "integer": "an integer", "string": "a text", "boolean": "true or false",
          "array": "a list", "object": "an object"}


def _parameters_cell(path: Path) -> dict[str, Any] | None:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read notebook {path}: {exc}") from None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return dict(cell)
    return None


def notebook_parameters(path: Path) -> dict[str, str]:
    """Names assigned in the cell tagged ``parameters`` -> their default's source text ({} if no such cell)."""
    cell = _parameters_cell(path)
    if cell is None:
        return {}
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UserError(f"{path}: the parameters cell is not valid Python: {exc}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Name) and value is not None:
                out[t.id] = ast.get_source_segment(source, value) or ""
    return out


def parameter_rules(path: Path) -> dict[str, dict[str, Any]]:
    """Per parameter, the rule its value must pass: the cell's ``tradebaas.params`` metadata, else the type of the
    default's literal (none for ``None`` or an expression)."""
    cell = _parameters_cell(path)
    if cell is None:
        return {}
    declared = (cell.get("metadata", {}).get("tradebaas") or {}).get("params") or {}
    rules: dict[str, dict[str, Any]] = {}
    for name, default in notebook_parameters(path).items():
        if isinstance(declared.get(name), dict):
            rules[name] = dict(declared[name])
            continue
        try:
            value = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            continue
        kind = json_type(value)
        if kind not in (None, "null"):
            rules[name] = {"type": "number" if kind == "integer" else kind}
    return rules


def json_type(value: Any) -> str | None:
    """The JSON Schema type of a value (``integer`` for a whole number; None for what JSON cannot carry)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def value_problem(name: str, value: Any, rule: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not pass ``rule`` (None: it does), in the words of ``rule['must']`` when given."""
    must = rule.get("must")
    types = rule.get("type")
    allowed = [types] if isinstance(types, str) else list(types or [])
    kind = json_type(value)
    fits = not allowed or kind in allowed or (kind == "integer" and "number" in allowed)
    wrong = not fits
    if not wrong and kind in ("integer", "number"):
        if "minimum" in rule and value < rule["minimum"]:
            wrong = True
        if "exclusive_minimum" in rule and value <= rule["exclusive_minimum"]:
            wrong = True
    if not wrong:
        return None
    if not must:
        words = " or ".join(_TYPES.get(t, t) for t in allowed) if not fits else ""
        bounds = [f">= {rule['minimum']:g}" if "minimum" in rule else "",
                  f"> {rule['exclusive_minimum']:g}" if "exclusive_minimum" in rule else ""]
        must = words or " and ".join(b for b in bounds if b)
    return f"{name} must be {must}, got {value!r}"


def check_params(report: ReportConfig, params: Mapping[str, Any]) -> None:
    """Refuse (``UserError``) unknown names, values that are not JSON, and values that break their rule."""
    known = notebook_parameters(report.notebook)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UserError(
            f"report {report.name!r}: unknown parameter(s) {', '.join(unknown)} "
            f"(the notebook takes: {', '.join(known) or 'none'})"
        )
    try:
        json.dumps(dict(params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"report {report.name!r}: parameters must be JSON values ({exc})") from None
    rules = parameter_rules(report.notebook)
    for name, value in params.items():
        problem = value_problem(name, value, rules.get(name, {}))
        if problem:
            raise UserError(f"report {report.name!r}: {problem}")
