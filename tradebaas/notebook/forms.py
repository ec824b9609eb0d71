"""The strategy start form, generated from the parameters the engine declares (``strategy.available``).

The engine is the authority on config validity (``strategy.start`` answers -32602 with the key and the rule), but
a round trip per keystroke is not needed to tell a user that "abc" is not a number or that 120 is above a
maximum of 100: :func:`parse_param` and :func:`validate` repeat the schema's rules client-side so the form can
explain a bad value next to its field before anything is sent. Those functions are pure; :class:`StartForm`
only wires them to widgets.

Number fields are text boxes on purpose: ipywidgets' numeric boxes silently revert what they cannot parse, which
hides the mistake instead of explaining it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w

_INT = {"int", "integer"}
_FLOAT = {"float", "number", "double"}
_BOOL = {"bool", "boolean"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def param_kind(param: Mapping[str, Any]) -> str:
    """Normalise the declared type to one of "int", "float", "bool", "str"."""
    declared = str(param.get("type") or "").lower()
    if declared in _INT:
        return "int"
    if declared in _FLOAT:
        return "float"
    if declared in _BOOL:
        return "bool"
    if declared in {"str", "string"}:
        return "str"
    default = param.get("default")  # an undeclared type: infer it from the default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "str"


def format_default(param: Mapping[str, Any]) -> str:
    """The text shown in a field before the user edits it."""
    default = param.get("default")
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def parse_param(param: Mapping[str, Any], raw: Any) -> tuple[Any, str | None]:
    """Turn a field's value into the config value, or explain why it cannot be one.

    Returns ``(value, None)`` or ``(None, message)``; the message names the rule, not the key (it is shown next
    to the field).
    """
    kind = param_kind(param)
    choices = param.get("choices") or param.get("enum")
    if choices:
        for choice in choices:
            if raw == choice or str(raw).strip() == str(choice):
                return choice, None
        return None, "must be one of " + ", ".join(str(c) for c in choices)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw, None
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
        return None, "must be true or false"
    text = str(raw).strip() if not isinstance(raw, int | float) else raw
    if kind == "str":
        return str(text), None
    value: float | int
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = text
    else:
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            if kind == "int":
                try:
                    as_float = float(text)
                except ValueError:
                    return None, "must be a whole number"
                if not as_float.is_integer():
                    return None, "must be a whole number"
                value = int(as_float)
            else:
                return None, "must be a number"
    if kind == "int" and isinstance(value, float):
        if not value.is_integer():
            return None, "must be a whole number"
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None, "must be a finite number"
    minimum, maximum = param.get("minimum"), param.get("maximum")
    if minimum is not None and value < minimum:
        return None, f"must be >= {_num(minimum)}"
    if maximum is not None and value > maximum:
        return None, f"must be <= {_num(maximum)}"
    return value, None


def validate(params: Sequence[Mapping[str, Any]], raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse every declared field of ``raw``: ``(config, errors)``, errors keyed by parameter name.

    Fields missing from ``raw`` take their default; keys that are not declared are an error (the engine refuses
    unknown keys too, so a typo must not pass silently).
    """
    config: dict[str, Any] = {}
    errors: dict[str, str] = {}
    declared = {str(p["name"]) for p in params}
    for param in params:
        name = str(param["name"])
        if name not in raw:
            config[name] = param.get("default")
            continue
        value, error = parse_param(param, raw[name])
        if error is not None:
            errors[name] = error
        else:
            config[name] = value
    for key in raw:
        if key not in declared:
            errors[key] = "unknown parameter"
    return config, errors


def changed_only(params: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``config`` that differ from their defaults: what ``strategy.start`` needs to be sent.

    Sending only the changes keeps the stored config short and lets engine-side default changes apply.
    """
    defaults = {str(p["name"]): p.get("default") for p in params}
    return {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}


_KEY_IN_MESSAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def error_key(message: str, data: Any, names: Sequence[str]) -> str | None:
    """Which form field an engine -32602 error is about: from its ``data`` (``{"key": ..}``) when given, else the
    first declared parameter named in its message (the engine's messages start with the key, then the rule)."""
    if isinstance(data, Mapping):
        for field_name in ("key", "param", "field", "name"):
            value = data.get(field_name)
            if isinstance(value, str) and value in names:
                return value
    known = set(names)
    for word in _KEY_IN_MESSAGE.findall(message or ""):  # the first one named: "a=5: must be below b" is about a
        if word in known:
            return word
    return None


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def error_html(message: str | None) -> str:
    """The inline explanation under a field (empty when the value is fine)."""
    if not message:
        return ""
    return f'<span class="tb-error" style="color:#c0392b">{html.escape(message)}</span>'


def help_text(param: Mapping[str, Any]) -> str:
    """The full hint (tooltip): the meaning, the allowed values and the default."""
    parts = []
    meaning = param.get("help") or param.get("description")
    if meaning:
        parts.append(str(meaning))
    parts.append(range_text(param))
    return " · ".join(p for p in parts if p)


def range_text(param: Mapping[str, Any]) -> str:
    """The short hint shown beside a field: allowed values and the default, e.g. "[0, 100] · default 40.0"."""
    parts = []
    choices = param.get("choices") or param.get("enum")
    if choices:
        parts.append("one of " + ", ".join(str(c) for c in choices))
    lo, hi = param.get("minimum"), param.get("maximum")
    if lo is not None or hi is not None:
        parts.append(f"[{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]")
    parts.append(f"default {format_default(param) or '-'}")
    return " · ".join(parts)


LABEL_WIDTH = "170px"


class StartForm(w.VBox):
    """A form for one strategy: one field per declared parameter, its inline error, and a Start button.

    ``on_submit(name, instrument, config)`` is called with a config that passed client-side validation and holds
    only the values that differ from the defaults; it returns nothing and reports engine errors through
    :meth:`show_engine_error`.
    """

    def __init__(
        self,
        strategies: Sequence[Mapping[str, Any]],
        on_submit: Callable[[str, str, dict[str, Any]], None],
        default_instrument: str = "BTC_USDC-PERPETUAL",
    ) -> None:
        self._strategies = {str(s["name"]): s for s in strategies}
        self._on_submit = on_submit
        names = list(self._strategies)
        first = "razor" if "razor" in names else (names[0] if names else None)  # the flagship strategy first
        self.choice = w.Dropdown(options=names, value=first, description="strategy",
                                 style={"description_width": LABEL_WIDTH}, layout=w.Layout(width="400px"))
        self.choice.add_class("tb-strategy-choice")
        self.instrument = w.Text(value=default_instrument, description="instrument",
                                 style={"description_width": LABEL_WIDTH}, layout=w.Layout(width="400px"))
        self.instrument.add_class("tb-field-instrument")
        self.fields: dict[str, w.Widget] = {}
        self.errors: dict[str, w.HTML] = {}
        self.fields_box = w.VBox()
        self.fields_box.add_class("tb-form-fields")
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.start_button.add_class("tb-start")
        self.message = w.HTML("")
        self.message.add_class("tb-form-message")
        self.start_button.on_click(lambda _b: self.submit())
        self.choice.observe(lambda _c: self._build_fields(), names="value")
        super().__init__([self.choice, self.instrument, self.fields_box, w.HBox([self.start_button, self.message])])
        self.add_class("tb-start-form")
        self._build_fields()

    @property
    def params(self) -> list[Mapping[str, Any]]:
        spec = self._strategies.get(self.choice.value or "")
        return list(spec.get("params") or []) if spec else []

    def _form_params(self) -> list[Mapping[str, Any]]:
        return [p for p in self.params if p.get("name") != "instrument"]

    def _build_fields(self) -> None:
        self.fields, self.errors = {}, {}
        rows: list[w.Widget] = []
        for param in self.params:
            name = str(param["name"])
            if name == "instrument":  # sent as strategy.start's own argument, shown in the instrument box
                if param.get("default"):
                    self.instrument.value = str(param["default"])
                continue
            tip = help_text(param)
            field: w.Widget
            choices = param.get("choices") or param.get("enum")
            label = w.HTML(f'<div title="{html.escape(tip)}" style="text-align:right;padding-right:8px">'
                           f"{html.escape(name)}</div>", layout=w.Layout(width=LABEL_WIDTH, flex=f"0 0 {LABEL_WIDTH}"))
            if choices:
                field = w.Dropdown(options=list(choices), value=param.get("default"), tooltip=tip,
                                   layout=w.Layout(width="140px", flex="0 0 140px"))
            elif param_kind(param) == "bool":
                field = w.Checkbox(value=bool(param.get("default")), indent=False, tooltip=tip,
                                   layout=w.Layout(width="140px", flex="0 0 140px"))
            else:
                field = w.Text(value=format_default(param), placeholder=format_default(param), tooltip=tip,
                               continuous_update=True, layout=w.Layout(width="140px", flex="0 0 140px"))
            field.add_class(f"tb-field-{name}")
            error = w.HTML("")
            error.add_class(f"tb-error-{name}")
            field.observe(lambda _c, p=param: self._check_one(p), names="value")
            hint = w.HTML(f'<span title="{html.escape(tip)}" style="color:#777;font-size:85%;white-space:nowrap">'
                          f"{html.escape(range_text(param))}</span>")
            self.fields[name], self.errors[name] = field, error
            rows.append(w.HBox([label, field, error, hint], layout=w.Layout(align_items="center")))
        spec = self._strategies.get(self.choice.value or "") or {}
        description = w.HTML(f"<i>{html.escape(str(spec.get('description') or ''))}</i>")
        self.fields_box.children = [description, *rows]
        self.message.value = ""

    def raw_values(self) -> dict[str, Any]:
        return {name: field.value for name, field in self.fields.items()}

    def _check_one(self, param: Mapping[str, Any]) -> None:
        name = str(param["name"])
        _value, error = parse_param(param, self.fields[name].value)
        self.errors[name].value = error_html(error)

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fill fields programmatically (notebooks, tests); a value is set as the user would type it."""
        for name, value in values.items():
            if name == "instrument":
                self.instrument.value = str(value)
                continue
            field = self.fields[name]
            field.value = value if isinstance(field, w.Checkbox | w.Dropdown) else format_default({"default": value})

    def submit(self) -> bool:
        """Validate and hand over to ``on_submit``; True when the form was valid and submitted."""
        params = self._form_params()
        config, errors = validate(params, self.raw_values())
        for name, box in self.errors.items():
            box.value = error_html(errors.get(name))
        if errors:
            self.message.value = error_html(f"{len(errors)} invalid value(s): " + ", ".join(sorted(errors)))
            return False
        instrument = self.instrument.value.strip()
        if not instrument:
            self.message.value = error_html("instrument is required")
            return False
        self.message.value = '<span class="tb-form-busy">starting…</span>'
        self._on_submit(str(self.choice.value), instrument, changed_only(params, config))
        return True

    def show_engine_error(self, message: str, data: Any = None) -> None:
        """Show the engine's refusal both under the form and, when it names a field, next to that field."""
        self.message.value = error_html(f"engine: {message}")
        key = error_key(message, data, list(self.errors))
        if key is not None:
            self.errors[key].value = error_html(message)

    def show_started(self, text: str) -> None:
        self.message.value = f'<span class="tb-form-ok" style="color:#1e8449">{html.escape(text)}</span>'
