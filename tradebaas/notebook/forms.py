"""The strategy forms -- start a strategy, edit a running one's parameters -- generated from the parameters the
engine declares (``strategy.available``, ``strategy.get``).

The engine is the authority on config validity (``strategy.start`` answers -32602 with the key and the rule), but
a round trip per keystroke is not needed to tell a user that "abc" is not a number or that 120 is above a
maximum of 100. The form rebuilds the engine's ``Param``s from the schema it received
(:func:`~tradebaas.strategies.params.params_from_schema`) and checks every field with the engine's own
:func:`~tradebaas.strategies.params.coerce`: a value is refused here exactly when ``validate_config`` would refuse
it, with the same message, and coerced to the same value (the same words for true/false, the same ranges).
What only the engine can judge (an unknown instrument, a rule across fields) still comes back as its -32602,
shown by ``show_engine_error``. The functions here are pure; :class:`ParamFields` (the fields and their inline
errors, shared by both forms), :class:`StartForm` and :class:`EditForm` only wire them to widgets.

Number fields are text boxes on purpose: ipywidgets' numeric boxes silently revert what they cannot parse, which
hides the mistake instead of explaining it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w

from tradebaas.notebook import widgets as render
from tradebaas.notebook.widgets import error_details_html, error_summary, strategy_label
from tradebaas.strategies.base import Param
from tradebaas.strategies.params import ConfigError, allowed_text, check_config, coerce, params_from_schema


def format_value(value: Any, kind: type | None = None) -> str:
    """The text a field shows for ``value`` (a default, or a value set by a script); for an ``int`` parameter
    (``kind``) a whole float reads as the int it is (a config that went through JSON may hold ``0.0``: the edit form
    showed "0.0" where a start form shows "0")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind is int and isinstance(value, float) and value.is_integer():
        return str(int(value))
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


def current_config(params: Sequence[Param], config: Mapping[str, Any]) -> dict[str, Any]:
    """A running strategy's config as the form compares against it: every declared parameter, its value from
    ``config`` (the engine's, coerced as the form would) or its default."""
    out: dict[str, Any] = {}
    for p in params:
        raw = config.get(p.name, p.default)
        value, error = parse_param(p, raw)
        out[p.name] = raw if error else value
    return out


def changed_from(current: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``config`` that differ from ``current``: what ``strategy.set`` needs to be sent (a new
    config version says exactly what changed)."""
    return {k: v for k, v in config.items() if k not in current or current[k] != v}


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
#: Not a form field: ``strategy.start`` takes it as its own argument, and a running strategy keeps its market.
INSTRUMENT = "instrument"


class ParamFields(w.VBox):
    """One row per parameter: label (meaning in the tooltip), field, inline error, allowed values and default.

    Every field is checked as it is typed with the engine's rules (:func:`parse_param`); :meth:`check` validates
    them all. Rows wrap instead of running off a narrow panel. ``instrument`` is never a field here."""

    def __init__(self, params: Sequence[Param], strategy: str = "", values: Mapping[str, Any] | None = None) -> None:
        self.strategy = strategy
        self.params = tuple(p for p in params if p.name != INSTRUMENT)
        self.fields: dict[str, w.Widget] = {}
        self.errors: dict[str, w.HTML] = {}
        values = values or {}
        rows: list[w.Widget] = []
        for param in self.params:
            rows.append(self._row(param, values.get(param.name, param.default)))
        super().__init__(rows)
        self.add_class("tb-param-fields")

    def _row(self, param: Param, value: Any) -> w.HBox:
        name = param.name
        tip = help_text(param)
        field: w.Widget
        label = w.HTML(f'<div title="{html.escape(tip)}" style="text-align:right;padding-right:8px">'
                       f"{html.escape(name)}</div>", layout=w.Layout(width=LABEL_WIDTH, flex=f"0 0 {LABEL_WIDTH}"))
        if param.choices:
            field = w.Dropdown(options=list(param.choices), value=value if value in param.choices else param.default,
                               tooltip=tip, layout=w.Layout(width="140px", flex="0 0 140px"))
        elif param.type is bool:
            field = w.Checkbox(value=bool(value), indent=False, tooltip=tip,
                               layout=w.Layout(width="140px", flex="0 0 140px"))
        else:
            field = w.Text(value=format_value(value, param.type), placeholder=format_value(param.default, param.type),
                           tooltip=tip,
                           continuous_update=True, layout=w.Layout(width="140px", flex="0 0 140px"))
        field.add_class(f"tb-field-{name}")
        error = w.HTML("")
        error.add_class(f"tb-error-{name}")
        field.observe(lambda _c, p=param: self.check_one(p), names="value")
        # the allowed range and default beside the field, in a readable size; on a narrow column the row wraps
        # and the hint goes under the field rather than off the edge
        hint = w.HTML(f'<span title="{html.escape(tip)}" style="color:#555;font-size:90%;white-space:nowrap">'
                      f"{html.escape(range_text(param))}</span>", layout=w.Layout(max_width="100%"))
        hint.add_class("tb-hint")
        hint.add_class(f"tb-hint-{name}")
        self.fields[name], self.errors[name] = field, error
        return w.HBox([label, field, error, hint], layout=w.Layout(align_items="center", flex_flow="row wrap"))

    def raw_values(self) -> dict[str, Any]:
        return {name: field.value for name, field in self.fields.items()}

    def check_one(self, param: Param) -> None:
        _value, error = parse_param(param, self.fields[param.name].value, self.strategy)
        self.errors[param.name].value = error_html(error)

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fill fields as the user would type them; an undeclared name is a mistake in the caller's code."""
        for name, value in values.items():
            if name not in self.fields:
                raise KeyError(f"{self.strategy or 'this strategy'} has no parameter {name!r} "
                               f"(it has: {', '.join(self.fields) or 'none'})")
            field = self.fields[name]
            kind = next((p.type for p in self.params if p.name == name), None)
            field.value = value if isinstance(field, w.Checkbox | w.Dropdown) else format_value(value, kind)

    def check(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Validate every field (and show each one's error): ``(config, errors)`` as :func:`validate`."""
        config, errors = validate(self.params, self.raw_values(), self.strategy)
        for name, box in self.errors.items():
            box.value = error_html(errors.get(name))
        return config, errors

    def show_engine_error(self, message: str, data: Any = None) -> None:
        """Put the engine's refusal next to the field it names (if it names one)."""
        key = error_key(message, data, list(self.errors))
        if key is not None:
            self.errors[key].value = error_html(message)


def ok_html(text: str) -> str:
    return f'<span class="tb-form-ok" style="color:#1e8449">{html.escape(text)}</span>'


class StartForm(w.VBox):
    """A form for one strategy: a dropdown of every available strategy (with where it comes from and its code
    version), one field per declared parameter, their inline errors, and a Start button.

    ``strategies`` is the ``strategy.available`` answer; an entry with an ``error`` (a file that does not load)
    is listed but cannot be started: choosing it shows the error, its traceback behind "details". ``on_submit(name,
    instrument, config)`` is called with a config that passed the engine's per-field rules and holds only the
    values that differ from the defaults; it returns nothing and reports engine errors through
    :meth:`show_engine_error`. ``on_refresh`` (optional) is what the ↻ button beside the dropdown calls to have
    the list fetched again (a strategy deployed or a file added since); the new list comes back through
    :meth:`update_strategies`.
    """

    def __init__(
        self,
        strategies: Sequence[Mapping[str, Any]],
        on_submit: Callable[[str, str, dict[str, Any]], None],
        default_instrument: str = "BTC_USDC-PERPETUAL",
        on_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._strategies = {str(s["name"]): dict(s) for s in strategies}
        self._on_submit = on_submit
        self._params: tuple[Param, ...] = ()
        self._schema_error: str | None = None  # set when the chosen strategy cannot be started from the form
        self._updating = False  # while the dropdown's options are replaced: its value changes are not choices
        self.param_fields = ParamFields(())
        self.choice = w.Dropdown(options=self._options(), value=self._default_choice(), description="strategy",
                                 style={"description_width": LABEL_WIDTH},
                                 layout=w.Layout(flex="1 1 auto", width="auto", max_width="560px"))
        self.choice.add_class("tb-strategy-choice")
        self.refresh_button = w.Button(icon="refresh", tooltip="fetch the list of strategies again",
                                       layout=w.Layout(width="36px", flex="0 0 36px",
                                                       display="" if on_refresh else "none"))
        self.refresh_button.add_class("tb-strategies-refresh")
        if on_refresh is not None:
            self.refresh_button.on_click(lambda _b: on_refresh())
        self.instrument = w.Text(value=default_instrument, description="instrument",
                                 style={"description_width": LABEL_WIDTH}, layout=w.Layout(width="400px"))
        self.instrument.add_class("tb-field-instrument")
        self.fields_box = w.VBox()
        self.fields_box.add_class("tb-form-fields")
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.start_button.add_class("tb-start")
        self.message = w.HTML("")
        self.message.add_class("tb-form-message")
        self.start_button.on_click(lambda _b: self.submit())
        self.choice.observe(lambda _c: None if self._updating else self._build_fields(), names="value")
        super().__init__([w.HBox([self.choice, self.refresh_button], layout=w.Layout(width="100%")),
                          self.instrument, self.fields_box,
                          w.HBox([self.start_button, self.message], layout=w.Layout(flex_flow="row wrap"))])
        self.add_class("tb-start-form")
        self._build_fields()

    def _options(self) -> list[tuple[str, str]]:
        return [(strategy_label(entry), name) for name, entry in self._strategies.items()]

    def _default_choice(self) -> str | None:
        startable = [n for n, entry in self._strategies.items() if not entry.get("error")]
        return "razor" if "razor" in startable else next(iter(startable or self._strategies), None)  # flagship

    @property
    def strategy(self) -> str:
        """The chosen strategy's name ("" when the engine offers none)."""
        return str(self.choice.value or "")

    def update_strategies(self, strategies: Sequence[Mapping[str, Any]]) -> bool:
        """Take a new ``strategy.available`` answer; True when it differs. The chosen strategy stays chosen, and
        what was typed into its fields stays, unless that strategy itself changed (new version, new parameters,
        an error) or is gone."""
        new = {str(s["name"]): dict(s) for s in strategies}
        if new == self._strategies:
            return False
        before = self.strategy
        unchanged = before in new and new[before] == self._strategies.get(before)
        self._updating = True
        try:
            self._strategies = new
            self.choice.options = self._options()
            self.choice.value = before if before in new else self._default_choice()
        finally:
            self._updating = False
        if not unchanged:
            self._build_fields()
        return True

    @property
    def params(self) -> tuple[Param, ...]:
        """The chosen strategy's parameters, rebuilt from the engine's schema."""
        return self._params

    @property
    def fields(self) -> dict[str, w.Widget]:
        return self.param_fields.fields

    @property
    def errors(self) -> dict[str, w.HTML]:
        return self.param_fields.errors

    def _refuse(self, why: str, details: str = "") -> None:
        self._params = ()
        self._schema_error = why
        self.param_fields = ParamFields(())
        self.fields_box.children = [w.HTML(error_details_html(details))] if details else []
        self.start_button.disabled = True
        self.message.value = error_html(why)

    def _build_fields(self) -> None:
        spec = self._strategies.get(self.strategy) or {}
        if spec.get("error"):  # a file that does not load: listed so the user sees why, never startable
            self._refuse(f"{self.strategy} cannot be started: {error_summary(spec['error'])}", str(spec["error"]))
            return
        try:
            self._params = params_from_schema(spec.get("params") or [])
        except ConfigError as exc:  # a schema this client cannot read: say so rather than guess the rules
            self._refuse(f"cannot build the form for {self.strategy}: {exc}")
            return
        self._schema_error = None
        self.start_button.disabled = False
        for param in self._params:
            if param.name == INSTRUMENT and param.default:  # sent as strategy.start's own argument
                self.instrument.value = str(param.default)
        self.param_fields = ParamFields(self._params, self.strategy)
        description = w.HTML(f"<i>{render.description_html(spec.get('description') or '')}</i>",
                             layout=w.Layout(max_width="100%"))
        description.add_class("tb-strategy-description")
        self.fields_box.children = [description, self.param_fields]
        self.message.value = ""

    def raw_values(self) -> dict[str, Any]:
        return self.param_fields.raw_values()

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fill fields programmatically (notebooks, tests); a value is set as the user would type it."""
        values = dict(values)
        if INSTRUMENT in values:
            self.instrument.value = str(values.pop(INSTRUMENT))
        self.param_fields.set_values(values)

    def submit(self) -> bool:
        """Validate and hand over to ``on_submit``; True when the form was valid and submitted."""
        if self._schema_error is not None:
            self.message.value = error_html(self._schema_error)
            return False
        config, errors = self.param_fields.check()
        if errors:
            self.message.value = error_html(f"{len(errors)} invalid value(s): " + ", ".join(sorted(errors)))
            return False
        instrument = self.instrument.value.strip()
        if not instrument:
            self.message.value = error_html("instrument is required")
            return False
        self.message.value = '<span class="tb-form-busy">starting…</span>'
        self._on_submit(self.strategy, instrument, changed_only(self.param_fields.params, config))
        return True

    def show_engine_error(self, message: str, data: Any = None) -> None:
        """Show the engine's refusal both under the form and, when it names a field, next to that field."""
        self.message.value = error_html(f"engine: {message}")
        self.param_fields.show_engine_error(message, data)

    def show_started(self, text: str) -> None:
        self.message.value = ok_html(text)


class EditForm(w.VBox):
    """Change a running strategy's parameters: the same fields and rules as the start form, prefilled with its
    current config, an "apply to open position" checkbox, and Apply.

    ``strategy`` is the engine's Strategy (``strategy.get``: its ``config``, ``config_version``), ``params`` its
    declared parameters (``Param`` schema). Apply sends only the keys whose value differs from the current config
    through ``on_submit(strategy_id, changes, apply_to_open)``; the answer comes back through
    :meth:`show_applied` (the new config version, which becomes the form's new baseline) or
    :meth:`show_engine_error`. The new config applies from the strategy's next candle; the brackets of an open
    position change only when "apply to open position" is ticked.
    """

    def __init__(self, strategy: Mapping[str, Any], params: Sequence[Mapping[str, Any]],
                 on_submit: Callable[[str, dict[str, Any], bool], None],
                 on_close: Callable[[], None] | None = None) -> None:
        self.strategy_id = str(strategy.get("id"))
        self.name = str(strategy.get("name") or "")
        self._on_submit = on_submit
        self.params = tuple(p for p in params_from_schema(params) if p.name != INSTRUMENT)
        self.current = current_config(self.params, strategy.get("config") or {})
        self.config_version = strategy.get("config_version")
        self.title = w.HTML(self._title_html())
        self.param_fields = ParamFields(self.params, self.name, self.current)
        self.apply_to_open = w.Checkbox(value=False, description="apply to open position", indent=False,
                                        tooltip="also move the open position's stop-loss and take-profit to the "
                                                "new values (otherwise they change from the next trade)",
                                        layout=w.Layout(width="auto"))
        self.apply_to_open.add_class("tb-edit-apply-to-open")
        self.apply_button = w.Button(description="Apply", button_style="primary", icon="check",
                                     tooltip="send the changed values (strategy.set): a new config version")
        self.apply_button.add_class("tb-edit-apply")
        self.close_button = w.Button(description="Close", tooltip="close this form without changing anything")
        self.close_button.add_class("tb-edit-close")
        self.message = w.HTML("")
        self.message.add_class("tb-edit-message")
        self.apply_button.on_click(lambda _b: self.submit())
        if on_close is not None:
            self.close_button.on_click(lambda _b: on_close())
        super().__init__([self.title, self.param_fields,
                          w.HBox([self.apply_to_open, self.apply_button, self.close_button, self.message],
                                 layout=w.Layout(flex_flow="row wrap", align_items="center"))],
                         layout=w.Layout(border="1px solid #ddd", padding="4px", margin="2px 0 6px 0"))
        self.add_class("tb-edit-form")
        self.add_class(f"tb-edit-form-{self.strategy_id}")

    def _title_html(self) -> str:
        version = f" · config version {self.config_version}" if self.config_version is not None else ""
        return (f'<span class="tb-edit-title" style="font-size:12px"><b>{html.escape(self.strategy_id)}</b> '
                f"parameters{html.escape(version)} · changes apply from the next candle</span>")

    @property
    def fields(self) -> dict[str, w.Widget]:
        return self.param_fields.fields

    @property
    def errors(self) -> dict[str, w.HTML]:
        return self.param_fields.errors

    def set_values(self, values: Mapping[str, Any]) -> None:
        self.param_fields.set_values(values)

    def changes(self) -> tuple[dict[str, Any], dict[str, str]]:
        """``(changed keys, errors)`` of what the fields hold now, against the current config."""
        config, errors = self.param_fields.check()
        return changed_from(self.current, config), errors

    def submit(self) -> bool:
        """Validate, and send the changed keys only; True when something valid was sent."""
        changed, errors = self.changes()
        if errors:
            self.message.value = error_html(f"{len(errors)} invalid value(s): " + ", ".join(sorted(errors)))
            return False
        if not changed:
            self.message.value = '<span class="tb-edit-unchanged" style="color:#888">nothing changed</span>'
            return False
        self.message.value = '<span class="tb-form-busy">applying…</span>'
        self._on_submit(self.strategy_id, changed, bool(self.apply_to_open.value))
        return True

    def show_engine_error(self, message: str, data: Any = None) -> None:
        self.message.value = error_html(f"engine: {message}")
        self.param_fields.show_engine_error(message, data)

    def show_applied(self, strategy: Mapping[str, Any]) -> None:
        """The engine accepted the change: its config is the new baseline, its config version is shown."""
        self.current = current_config(self.params, strategy.get("config") or {})
        self.config_version = strategy.get("config_version")
        self.title.value = self._title_html()
        self.message.value = ok_html(f"config version {self.config_version} from the next candle")
