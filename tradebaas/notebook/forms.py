"""The strategy start form, generated from the parameters the engine declares (``strategy.available``).

The engine is the authority on config validity (``strategy.start`` answers -32602 with the key and the rule), but
a round trip per keystroke is not needed to tell a user that "abc" is not a number or that 120 is above a
maximum of 100. The form rebuilds the engine's ``Param``s from the schema it received
(:func:`~tradebaas.strategies.params.params_from_schema`) and checks every field with the engine's own
:func:`~tradebaas.strategies.params.coerce`: a value is refused here exactly when ``validate_config`` would refuse
it, with the same message, and coerced to the same value (the same words for true/false, the same ranges).
What only the engine can judge (an unknown instrument, a rule across fields) still comes back as its -32602,
shown by :meth:`StartForm.show_engine_error`. The functions here are pure; :class:`StartForm` only wires them to
widgets.

Number fields are text boxes on purpose: ipywidgets' numeric boxes silently revert what they cannot parse, which
hides the mistake instead of explaining it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w

from tradebaas.strategies.base import Param
from tradebaas.strategies.params import ConfigError, allowed_text, check_config, coerce, params_from_schema


def format_value(value: Any) -> str:
    """The text a field shows for ``value`` (a default, or a value set by a script)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_param(param: Param, raw: Any, strategy: str = "") -> tuple[Any, str | None]:
    """Turn a field's value into the config value, or explain why it cannot be one.

    Returns ``(value, None)`` or ``(None, message)``; the message is ``coerce``'s, i.e. the engine's -32602 text.
    """
    try:
        return coerce(param, raw, strategy), None
    except ConfigError as exc:
        return None, str(exc)


def validate(params: Sequence[Param], raw: Mapping[str, Any],
             strategy: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """Check every field of ``raw``: ``(config, errors)``, errors keyed by parameter name.

    ``check_config`` does the work, so fields missing from ``raw`` take their default and keys that are not
    declared are refused (the engine refuses unknown keys too: a typo must not pass silently).
    """
    config, errors = check_config(params, raw, strategy)
    return config, {key: str(exc) for key, exc in errors.items()}


def changed_only(params: Sequence[Param], config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``config`` that differ from their defaults: what ``strategy.start`` needs to be sent.

    Sending only the changes keeps the stored config short and lets engine-side default changes apply.
    """
    defaults = {p.name: p.default for p in params}
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


def help_text(param: Param) -> str:
    """The full hint (tooltip): the meaning, the allowed values (in the engine's words) and the default."""
    parts = [param.help, f"allowed: {allowed_text(param)}", f"default {format_value(param.default) or '-'}"]
    return " · ".join(p for p in parts if p)


def range_text(param: Param) -> str:
    """The short hint shown beside a field: allowed values and the default, e.g. "[0, 100] · default 40.0"."""
    parts = []
    if param.choices:
        parts.append("one of " + ", ".join(str(c) for c in param.choices))
    lo, hi = param.minimum, param.maximum
    if lo is not None or hi is not None:
        parts.append(f"[{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]")
    parts.append(f"default {format_value(param.default) or '-'}")
    return " · ".join(parts)


LABEL_WIDTH = "170px"


class StartForm(w.VBox):
    """A form for one strategy: one field per declared parameter, its inline error, and a Start button.

    ``strategies`` is the ``strategy.available`` answer. ``on_submit(name, instrument, config)`` is called with a
    config that passed the engine's per-field rules and holds only the values that differ from the defaults; it
    returns nothing and reports engine errors through :meth:`show_engine_error`.
    """

    def __init__(
        self,
        strategies: Sequence[Mapping[str, Any]],
        on_submit: Callable[[str, str, dict[str, Any]], None],
        default_instrument: str = "BTC_USDC-PERPETUAL",
    ) -> None:
        self._strategies = {str(s["name"]): s for s in strategies}
        self._on_submit = on_submit
        self._params: tuple[Param, ...] = ()
        self._schema_error: str | None = None  # set when the chosen strategy's schema could not be read
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
    def strategy(self) -> str:
        """The chosen strategy's name ("" when the engine offers none)."""
        return str(self.choice.value or "")

    @property
    def params(self) -> tuple[Param, ...]:
        """The chosen strategy's parameters, rebuilt from the engine's schema."""
        return self._params

    def _form_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self._params if p.name != "instrument")

    def _build_fields(self) -> None:
        self.fields, self.errors = {}, {}
        spec = self._strategies.get(self.strategy) or {}
        try:
            self._params = params_from_schema(spec.get("params") or [])
        except ConfigError as exc:  # a schema this client cannot read: say so rather than guess the rules
            self._params = ()
            self._schema_error = f"cannot build the form for {self.strategy}: {exc}"
            self.fields_box.children = []
            self.start_button.disabled = True
            self.message.value = error_html(self._schema_error)
            return
        self._schema_error = None
        self.start_button.disabled = False
        rows: list[w.Widget] = []
        for param in self._params:
            name = param.name
            if name == "instrument":  # sent as strategy.start's own argument, shown in the instrument box
                if param.default:
                    self.instrument.value = str(param.default)
                continue
            tip = help_text(param)
            field: w.Widget
            label = w.HTML(f'<div title="{html.escape(tip)}" style="text-align:right;padding-right:8px">'
                           f"{html.escape(name)}</div>", layout=w.Layout(width=LABEL_WIDTH, flex=f"0 0 {LABEL_WIDTH}"))
            if param.choices:
                field = w.Dropdown(options=list(param.choices), value=param.default, tooltip=tip,
                                   layout=w.Layout(width="140px", flex="0 0 140px"))
            elif param.type is bool:
                field = w.Checkbox(value=bool(param.default), indent=False, tooltip=tip,
                                   layout=w.Layout(width="140px", flex="0 0 140px"))
            else:
                text = format_value(param.default)
                field = w.Text(value=text, placeholder=text, tooltip=tip,
                               continuous_update=True, layout=w.Layout(width="140px", flex="0 0 140px"))
            field.add_class(f"tb-field-{name}")
            error = w.HTML("")
            error.add_class(f"tb-error-{name}")
            field.observe(lambda _c, p=param: self._check_one(p), names="value")
            hint = w.HTML(f'<span title="{html.escape(tip)}" style="color:#777;font-size:85%;white-space:nowrap">'
                          f"{html.escape(range_text(param))}</span>")
            self.fields[name], self.errors[name] = field, error
            rows.append(w.HBox([label, field, error, hint], layout=w.Layout(align_items="center")))
        description = w.HTML(f"<i>{html.escape(str(spec.get('description') or ''))}</i>")
        self.fields_box.children = [description, *rows]
        self.message.value = ""

    def raw_values(self) -> dict[str, Any]:
        return {name: field.value for name, field in self.fields.items()}

    def _check_one(self, param: Param) -> None:
        _value, error = parse_param(param, self.fields[param.name].value, self.strategy)
        self.errors[param.name].value = error_html(error)

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fill fields programmatically (notebooks, tests); a value is set as the user would type it."""
        for name, value in values.items():
            if name == "instrument":
                self.instrument.value = str(value)
                continue
            field = self.fields[name]
            field.value = value if isinstance(field, w.Checkbox | w.Dropdown) else format_value(value)

    def submit(self) -> bool:
        """Validate and hand over to ``on_submit``; True when the form was valid and submitted."""
        if self._schema_error is not None:
            self.message.value = error_html(self._schema_error)
            return False
        params = self._form_params()
        config, errors = validate(params, self.raw_values(), self.strategy)
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
        self._on_submit(self.strategy, instrument, changed_only(params, config))
        return True

    def show_engine_error(self, message: str, data: Any = None) -> None:
        """Show the engine's refusal both under the form and, when it names a field, next to that field."""
        self.message.value = error_html(f"engine: {message}")
        key = error_key(message, data, list(self.errors))
        if key is not None:
            self.errors[key].value = error_html(message)

    def show_started(self, text: str) -> None:
        self.message.value = f'<span class="tb-form-ok" style="color:#1e8449">{html.escape(text)}</span>'
