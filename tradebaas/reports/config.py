"""The ``[reports.*]`` and ``[notify]`` parts of ``TRADEBAAS_HOME/tradebaas.toml``, validated once, up front.

Why validate eagerly with messages that name the key: the scheduler runs unattended inside the engine, so a typo
found at 07:00 by a failing run is found too late. ``load_config`` raises ``UserError`` naming the table, the key
and the rule; the engine logs it and keeps trading (reports never stop trading), ``report run`` prints it.

Secrets (a Telegram bot token, a webhook signing key) are never written in ``tradebaas.toml`` itself: the file
names an environment variable (``token_env``) or a private file (``token_file``, mode 0600 or stricter), and the
value is read into a ``Secret`` (whose repr is ``Secret(***)``) at load time. Nothing here puts a secret into a
dataclass repr, the journal or a log line. Example::

    [reports.daily]
    notebook = "daily"              # a notebook of notebooks/reports/, or a path (relative to TRADEBAAS_HOME)
    cron = "0 7 * * *"              # minute hour day month weekday, in `tz` (default UTC)
    params = { period_days = 1 }
    timeout_s = 600
    catch_up = true                 # after downtime, run a missed slot once on start

    [notify]
    events = ["trade_opened", "trade_closed", "needs_attention", "kill_switch", "report_failed"]
    min_interval_s = 2
    retries = 3
    telegram = { token_env = "TRADEBAAS_TELEGRAM_TOKEN", chat_id = "12345" }
    webhook = { url = "https://example.org/hook", secret_env = "TRADEBAAS_WEBHOOK_SECRET" }
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tradebaas.errors import UserError
from tradebaas.home import Home
from tradebaas.secrets import Secret, check_private_file

#: Where named notebooks (``notebook = "daily"``) are looked up: the repository's, then the installed package's.
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOK_DIRS: tuple[Path, ...] = (
    REPO_ROOT / "notebooks" / "reports",
    Path(__file__).resolve().parent.parent / "notebooks" / "reports",
)

#: Every notification kind; ``[notify] events`` picks a subset (default: all).
EVENT_KINDS: tuple[str, ...] = (
    "trade_opened",
    "trade_closed",
    "needs_attention",
    "engine_restarted",
    "reconciled",
    "kill_switch",
    "report_ready",
    "report_failed",
)

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_KERNEL = "tradebaas"
TELEGRAM_API = "https://api.telegram.org"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """One report: which notebook, when (``cron`` may be None: run on demand only), with which parameters."""

    name: str
    notebook: Path
    cron: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    catch_up: bool = True
    tz: str = "UTC"
    kernel: str | None = None  # None: "tradebaas" if installed, else "python3" (logged)


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    token: Secret
    chat_id: str
    base_url: str = TELEGRAM_API  # tests point it at a local receiver


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: Secret | None = None  # HMAC-SHA256 key; the signature goes into ``signature_header``
    signature_header: str = "X-Tradebaas-Signature"


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    telegram: TelegramConfig | None = None
    webhook: WebhookConfig | None = None
    events: frozenset[str] = frozenset(EVENT_KINDS)
    min_interval_s: float = 1.0
    retries: int = 3
    queue_size: int = 100
    timeout_s: float = 10.0
    #: Names of the environment variables the secrets came from (removed from report subprocesses' env).
    secret_envs: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.telegram is not None or self.webhook is not None

    def secrets(self) -> list[str]:
        """The secret values, for registration with the log redaction filter (never for printing)."""
        out = [self.telegram.token.reveal()] if self.telegram else []
        if self.webhook and self.webhook.secret:
            out.append(self.webhook.secret.reveal())
        return out


@dataclass(frozen=True, slots=True)
class Config:
    reports: Mapping[str, ReportConfig] = field(default_factory=dict)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    path: Path | None = None


# -- loading -----------------------------------------------------------------------------------------------------
def load_config(home: Home, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``home/tradebaas.toml``; a missing file is an empty config (no reports, no notifier)."""
    path = home.config_file
    if not path.exists():
        return Config(path=None)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, home, environ=environ, source=path)


def parse_config(
    data: Mapping[str, Any], home: Home, *, environ: Mapping[str, str] | None = None, source: Path | None = None
) -> Config:
    """Validate the decoded TOML (the whole file; only ``reports`` and ``notify`` are read here)."""
    where = str(source or home.config_file)
    env = os.environ if environ is None else environ
    reports_table = data.get("reports", {})
    if not isinstance(reports_table, dict):
        raise UserError(f"{where}: [reports] must be a table of [reports.<name>] tables")
    reports: dict[str, ReportConfig] = {}
    for name, table in reports_table.items():
        reports[name] = parse_report(name, table, home, where)
    notify_table = data.get("notify", {})
    if not isinstance(notify_table, dict):
        raise UserError(f"{where}: [notify] must be a table")
    notify = parse_notify(notify_table, home, env, where)
    return Config(reports=reports, notify=notify, path=source)


def parse_report(name: str, table: Any, home: Home, where: str = "tradebaas.toml") -> ReportConfig:
    ctx = f"{where} [reports.{name}]"
    if not _NAME.match(name):
        raise UserError(f"{ctx}: report names are letters, digits, '_', '.', '-' (max 64), got {name!r}")
    if not isinstance(table, dict):
        raise UserError(f"{ctx} must be a table")
    allowed = {"notebook", "cron", "params", "timeout_s", "catch_up", "tz", "kernel"}
    _no_unknown(ctx, table, allowed)
    notebook = resolve_notebook(_str(ctx, table, "notebook", default=name), home, ctx)
    cron = table.get("cron")
    if cron is not None:
        cron = validate_cron(_str(ctx, table, "cron"), ctx)
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise UserError(f"{ctx}: params must be a table, e.g. params = {{ period_days = 1 }}")
    timeout_s = _number(ctx, table, "timeout_s", DEFAULT_TIMEOUT_S)
    if timeout_s <= 0:
        raise UserError(f"{ctx}: timeout_s must be > 0, got {timeout_s}")
    catch_up = table.get("catch_up", True)
    if not isinstance(catch_up, bool):
        raise UserError(f"{ctx}: catch_up must be true or false, got {catch_up!r}")
    tz = _str(ctx, table, "tz", default="UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"{ctx}: unknown time zone tz = {tz!r} (e.g. \"UTC\", \"Europe/Amsterdam\")") from None
    kernel = table.get("kernel")
    if kernel is not None:
        kernel = _str(ctx, table, "kernel")
    return ReportConfig(name=name, notebook=notebook, cron=cron, params=dict(params), timeout_s=timeout_s,
                        catch_up=catch_up, tz=tz, kernel=kernel)


def default_report(name: str, home: Home) -> ReportConfig:
    """An unconfigured report run on demand (``report run daily`` works without any tradebaas.toml)."""
    return ReportConfig(name=name, notebook=resolve_notebook(name, home, f"report {name!r}"))


def resolve_notebook(spec: str, home: Home, ctx: str) -> Path:
    """``"daily"`` -> notebooks/reports/daily.ipynb; a path (absolute or relative to TRADEBAAS_HOME) -> itself."""
    looks_like_path = "/" in spec or spec.endswith(".ipynb")
    if looks_like_path:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            path = home.root / path
        if not path.is_file():
            raise UserError(f"{ctx}: notebook {path} does not exist")
        return path.resolve()
    for directory in NOTEBOOK_DIRS:
        candidate = directory / f"{spec}.ipynb"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in NOTEBOOK_DIRS if d.is_dir() for p in d.glob("*.ipynb")})
    raise UserError(f"{ctx}: no report notebook named {spec!r} (available: {', '.join(known) or 'none'}; "
                    "or give a path to an .ipynb)")


def validate_cron(expr: str, ctx: str = "cron") -> str:
    """A 5-field cron expression croniter accepts (seconds fields are refused: reports are not that frequent)."""
    from croniter import croniter

    expr = " ".join(expr.split())
    if len(expr.split()) != 5 and not expr.startswith("@"):
        raise UserError(f"{ctx}: cron must have 5 fields (minute hour day month weekday), got {expr!r}")
    if not croniter.is_valid(expr):
        raise UserError(f"{ctx}: invalid cron expression {expr!r} (e.g. \"0 7 * * *\" = every day at 07:00)")
    return expr


def parse_notify(table: Mapping[str, Any], home: Home, env: Mapping[str, str], where: str) -> NotifyConfig:
    ctx = f"{where} [notify]"
    _no_unknown(ctx, table, {"telegram", "webhook", "events", "min_interval_s", "retries", "queue_size",
                             "timeout_s"})
    env_names: list[str] = []
    telegram = None
    if "telegram" in table:
        t = table["telegram"]
        tctx = f"{ctx} telegram"
        if not isinstance(t, dict):
            raise UserError(f"{tctx} must be a table: {{ token_env = \"...\", chat_id = \"...\" }}")
        _no_unknown(tctx, t, {"token", "token_env", "token_file", "chat_id", "base_url"})
        token = _secret(tctx, t, "token", home, env, env_names, required=True)
        assert token is not None
        chat_id = t.get("chat_id")
        if not isinstance(chat_id, str | int) or isinstance(chat_id, bool) or str(chat_id) == "":
            raise UserError(f"{tctx}: chat_id is required (a number or @channelname)")
        base_url = _url(tctx, t.get("base_url", TELEGRAM_API), "base_url")
        telegram = TelegramConfig(token=token, chat_id=str(chat_id), base_url=base_url.rstrip("/"))
    webhook = None
    if "webhook" in table:
        w = table["webhook"]
        wctx = f"{ctx} webhook"
        if not isinstance(w, dict):
            raise UserError(f"{wctx} must be a table: {{ url = \"https://...\" }}")
        _no_unknown(wctx, w, {"url", "secret", "secret_env", "secret_file", "signature_header"})
        if "url" not in w:
            raise UserError(f"{wctx}: url is required")
        url = _url(wctx, w["url"], "url")
        secret = _secret(wctx, w, "secret", home, env, env_names, required=False)
        header = _str(wctx, w, "signature_header", default="X-Tradebaas-Signature")
        webhook = WebhookConfig(url=url, secret=secret, signature_header=header)
    events_raw = table.get("events", list(EVENT_KINDS))
    if not isinstance(events_raw, list) or not all(isinstance(e, str) for e in events_raw):
        raise UserError(f"{ctx}: events must be a list of strings")
    unknown = sorted(set(events_raw) - set(EVENT_KINDS))
    if unknown:
        raise UserError(f"{ctx}: unknown event(s) {', '.join(unknown)} (known: {', '.join(EVENT_KINDS)})")
    min_interval_s = _number(ctx, table, "min_interval_s", 1.0)
    retries = table.get("retries", 3)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise UserError(f"{ctx}: retries must be an integer 0..10, got {retries!r}")
    queue_size = table.get("queue_size", 100)
    if not isinstance(queue_size, int) or isinstance(queue_size, bool) or not 1 <= queue_size <= 100_000:
        raise UserError(f"{ctx}: queue_size must be an integer 1..100000, got {queue_size!r}")
    timeout_s = _number(ctx, table, "timeout_s", 10.0)
    if min_interval_s < 0 or timeout_s <= 0:
        raise UserError(f"{ctx}: min_interval_s must be >= 0 and timeout_s > 0")
    return NotifyConfig(telegram=telegram, webhook=webhook, events=frozenset(events_raw),
                        min_interval_s=min_interval_s, retries=retries, queue_size=queue_size, timeout_s=timeout_s,
                        secret_envs=tuple(env_names))


# -- small validators --------------------------------------------------------------------------------------------
def _no_unknown(ctx: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{ctx}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _str(ctx: str, table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{ctx}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _number(ctx: str, table: Mapping[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UserError(f"{ctx}: {key} must be a number, got {value!r}")
    return float(value)


def _url(ctx: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise UserError(f"{ctx}: {key} must be an http(s) URL, got {value!r}")
    return value


def _secret(
    ctx: str, table: Mapping[str, Any], stem: str, home: Home, env: Mapping[str, str], env_names: list[str],
    *, required: bool,
) -> Secret | None:
    """``<stem>_env`` (an environment variable's name) or ``<stem>_file`` (a 0600 file); never the value itself."""
    env_key, file_key = f"{stem}_env", f"{stem}_file"
    if stem in table:
        raise UserError(f"{ctx}: do not put the {stem} in tradebaas.toml; use {env_key} = \"VAR\" or "
                        f"{file_key} = \"path\" (a file with mode 0600)")
    if env_key in table and file_key in table:
        raise UserError(f"{ctx}: give {env_key} or {file_key}, not both")
    if env_key in table:
        var = table[env_key]
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            raise UserError(f"{ctx}: {env_key} must be an environment variable name, got {var!r}")
        value = env.get(var, "")
        if not value:
            raise UserError(f"{ctx}: environment variable {var} (named by {env_key}) is not set")
        env_names.append(var)
        return Secret(value.strip())
    if file_key in table:
        raw = table[file_key]
        if not isinstance(raw, str) or not raw:
            raise UserError(f"{ctx}: {file_key} must be a path")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = home.root / path
        if not path.exists():
            raise UserError(f"{ctx}: {file_key} {path} does not exist")
        check_private_file(path)
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise UserError(f"{ctx}: {file_key} {path} is empty")
        return Secret(value)
    if required:
        raise UserError(f"{ctx}: {env_key} = \"VAR\" or {file_key} = \"path\" is required")
    return None
