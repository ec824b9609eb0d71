"""Deribit's access scopes: what an API key may do, what a token was granted, and what each method needs.

Why one table: the simulator grants and enforces scopes, and ``tradebaas doctor`` reads the scope an exchange
granted to decide whether a key can trade (or withdraw). Both must read the same grammar and the same method
table, so they live here once, pure (no I/O), next to the one table of error codes.

Grammar (``public/auth``'s ``scope`` parameter and answer; space-separated, the simulator's ``--account`` spec may
use commas): ``connection`` | ``session:NAME`` | ``mainaccount`` | ``expires:SECONDS`` | ``ip:ADDR`` |
``KIND:LEVEL`` with KIND one of ``account, trade, wallet, block_trade, block_rfq`` and LEVEL ``none < read <
read_write`` (``read_write`` includes ``read``). A kind that is not named is ``none``.

Rules (Deribit's "Access scope" article; marked [unverified] where we chose):
- a key has a maximal scope; a token's scope never exceeds it;
- ``public/auth`` without ``scope`` grants the key's maximal scope (plus ``connection`` and ``mainaccount``);
- with ``scope``, every kind it names is narrowed to the lower of the two levels; a kind it does not name keeps the
  key's level [unverified: Deribit's documentation does not say];
- a private method the token's scope does not cover is refused with 13021 ``forbidden`` (HTTP 401 in the
  simulator) [unverified: the error's ``data``]. The method table follows the OpenAPI spec's ``**Scope:**`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

KINDS: tuple[str, ...] = ("account", "trade", "wallet", "block_trade", "block_rfq")
LEVELS: dict[str, int] = {"none": 0, "read": 1, "read_write": 2}
_LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

#: The maximal scope of a simulator key when its ``--account`` spec names none: it can trade and read/manage the
#: account, and cannot move funds (what a trading bot's key should be).
DEFAULT_KEY_SCOPE = "account:read_write trade:read_write"

#: ``private/<method>`` -> the (kind, level) it needs (OpenAPI 2.1.1). Methods not named: ``get_*`` needs
#: ``trade:read``, anything else ``trade:read_write`` (a method we do not know is treated as one that trades).
METHOD_SCOPES: dict[str, tuple[str, str]] = {
    **{m: ("trade", "read_write") for m in (
        "buy", "sell", "edit", "edit_by_label", "cancel", "cancel_all", "cancel_all_by_currency",
        "cancel_all_by_currency_pair", "cancel_all_by_instrument", "cancel_all_by_kind_or_type", "cancel_by_label",
        "cancel_quotes", "close_position", "mass_quote", "move_positions", "create_combo")},
    **{m: ("trade", "read") for m in (
        "get_open_orders", "get_open_orders_by_instrument", "get_open_orders_by_currency", "get_open_orders_by_label",
        "get_order_state", "get_order_state_by_label", "get_order_history_by_instrument",
        "get_order_history_by_currency", "get_position", "get_positions", "get_user_trades_by_instrument",
        "get_user_trades_by_currency", "get_user_trades_by_order", "get_user_trades_by_instrument_and_time",
        "get_user_trades_by_currency_and_time", "get_margins", "get_trigger_order_history",
        "get_order_margin_by_ids", "get_settlement_history_by_instrument", "get_settlement_history_by_currency")},
    **{m: ("account", "read") for m in (
        "get_account_summary", "get_account_summaries", "get_cancel_on_disconnect", "get_subaccounts",
        "get_subaccounts_details", "get_transaction_log", "list_api_keys", "get_access_log", "get_user_locks")},
    **{m: ("account", "read_write") for m in (
        "enable_cancel_on_disconnect", "disable_cancel_on_disconnect", "create_api_key", "edit_api_key",
        "remove_api_key", "change_scope_in_api_key")},
    **{m: ("wallet", "read") for m in ("get_deposits", "get_withdrawals", "get_transfers", "get_address_book")},
    **{m: ("wallet", "read_write") for m in ("withdraw", "cancel_withdrawal", "submit_transfer_to_user",
                                             "submit_transfer_to_subaccount", "create_deposit_address")},
}
#: Methods any authenticated token may call (they manage the connection itself).
UNSCOPED = frozenset({"subscribe", "unsubscribe", "unsubscribe_all", "logout"})


@dataclass(slots=True, frozen=True)
class Scope:
    """A parsed scope: a level per kind (missing = none) and the other tokens (connection, mainaccount, ...)."""

    levels: tuple[tuple[str, int], ...] = ()
    extras: tuple[str, ...] = ()

    def level(self, kind: str) -> int:
        return dict(self.levels).get(kind, 0)

    def level_name(self, kind: str) -> str:
        return _LEVEL_NAMES[self.level(kind)]

    def allows(self, kind: str, level: str) -> bool:
        return self.level(kind) >= LEVELS[level]

    def __str__(self) -> str:
        """Deribit's answer form: the other tokens, then ``kind:level`` for every kind above none."""
        granted = [f"{k}:{_LEVEL_NAMES[v]}" for k, v in sorted(self.levels, key=lambda kv: KINDS.index(kv[0])) if v]
        return " ".join([*self.extras, *granted])


def _scope(levels: dict[str, int], extras: list[str]) -> Scope:
    return Scope(tuple(sorted(levels.items())), tuple(dict.fromkeys(extras)))


@lru_cache(maxsize=256)
def parse(text: str) -> Scope:
    """A scope as an exchange answers it (lenient: unknown tokens are kept as extras, never an error)."""
    levels: dict[str, int] = {}
    extras: list[str] = []
    for token in text.replace(",", " ").split():
        kind, sep, level = token.partition(":")
        if sep and kind in KINDS and level in LEVELS:
            levels[kind] = max(levels.get(kind, 0), LEVELS[level])
        else:
            extras.append(token)
    return _scope(levels, extras)


def parse_key_scope(text: str) -> Scope:
    """A key's maximal scope as a user writes it (strict): ``trade:read_write,account:read`` (commas or spaces).

    Raises ValueError naming the bad token, so ``tradebaas sim --account`` can print one clear line.
    """
    levels: dict[str, int] = {}
    for token in text.replace(",", " ").split():
        kind, sep, level = token.partition(":")
        if not sep or kind not in KINDS or level not in LEVELS:
            raise ValueError(f"bad scope {token!r}: use KIND:LEVEL with KIND one of {', '.join(KINDS)} and LEVEL "
                             f"one of {', '.join(LEVELS)} (e.g. trade:read_write,account:read)")
        levels[kind] = LEVELS[level]
    return _scope(levels, [])


def grant(key: Scope, requested: str | None = None) -> Scope:
    """The scope ``public/auth`` grants a key for a requested scope (see the module's rules)."""
    levels = dict(key.levels)
    extras = ["connection", "mainaccount"]
    if requested:
        want = parse(requested)
        named = dict(want.levels)
        for kind, level in named.items():
            levels[kind] = min(levels.get(kind, 0), level)
        sessions = [e for e in want.extras if e.startswith("session:")]
        if sessions:
            extras[0] = sessions[0]
        extras += [e for e in want.extras if e.startswith("expires:")]
    return _scope(levels, extras)


def required(method: str) -> tuple[str, str] | None:
    """The (kind, level) ``private/<method>`` needs; None for the connection's own methods (subscribe, logout)."""
    name = method.removeprefix("private/")
    if name in UNSCOPED:
        return None
    found = METHOD_SCOPES.get(name)
    if found is not None:
        return found
    return ("trade", "read") if name.startswith("get_") else ("trade", "read_write")


def missing(scope: Scope, method: str) -> str | None:
    """``"trade:read_write"`` when ``scope`` does not cover ``method``, else None."""
    need = required(method)
    if need is None or scope.allows(*need):
        return None
    return f"{need[0]}:{need[1]}"
