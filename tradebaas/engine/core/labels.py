"""Order labels: the one thing on the exchange that says which strategy, trade and role an order belongs to.

After a crash the journal may be missing the last few seconds; the exchange is not. Every order tradebaas sends
carries ``tb:<strategy_id>:<trade_id>:<role>`` (Deribit allows <= 64 characters), so reconciliation can recover
the owner of any order or fill from the exchange alone, and can tell our orders from the user's own (foreign
labels parse to ``None`` and are never touched).

Ids are restricted to ``[A-Za-z0-9_-]`` so the ``:`` separator is unambiguous, and kept short (a strategy id of
~23 characters, a trade id of ~10) so a label stays well under the limit. ``make_label`` raises rather than
truncating: a truncated label would silently lose ownership.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from tradebaas.domain import OrderRole

PREFIX = "tb"
SEPARATOR = ":"
MAX_LABEL_LENGTH = 64
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_SLUG_RE = re.compile(r"[^a-z0-9]+")
_MAX_SLUG = 16
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(slots=True, frozen=True)
class ParsedLabel:
    """The owner of an order, as recovered from its label."""

    strategy_id: str
    trade_id: str
    role: OrderRole


def is_valid_id(value: str) -> bool:
    """Whether ``value`` may be used as a strategy or trade id inside a label."""
    return bool(_ID_RE.match(value))


def make_label(strategy_id: str, trade_id: str, role: OrderRole | str) -> str:
    """``tb:<strategy_id>:<trade_id>:<role>``; raises ValueError on a bad id, an unknown role or > 64 chars."""
    for what, value in (("strategy id", strategy_id), ("trade id", trade_id)):
        if not is_valid_id(value):
            raise ValueError(f"{what} {value!r} may only contain letters, digits, '_' and '-'")
    role = OrderRole(role)
    label = SEPARATOR.join((PREFIX, strategy_id, trade_id, role.value))
    if len(label) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"order label {label!r} is {len(label)} characters; Deribit allows {MAX_LABEL_LENGTH} "
            "(use shorter strategy/trade ids)"
        )
    return label


def parse_label(label: str | None) -> ParsedLabel | None:
    """The owner of a label of ours, or None for anything else (empty, foreign, malformed)."""
    if not label or len(label) > MAX_LABEL_LENGTH:
        return None
    parts = label.split(SEPARATOR)
    if len(parts) != 4 or parts[0] != PREFIX:
        return None
    _, strategy_id, trade_id, role = parts
    if not (is_valid_id(strategy_id) and is_valid_id(trade_id)):
        return None
    try:
        return ParsedLabel(strategy_id, trade_id, OrderRole(role))
    except ValueError:
        return None


# Kept for the architecture document's spelling (``labels.parse``).
parse = parse_label


def base36(n: int) -> str:
    """Lower-case base 36 of a non-negative integer (short, sortable at equal length, label-safe)."""
    if n < 0:
        raise ValueError(f"base36 needs a non-negative integer, got {n}")
    if n == 0:
        return "0"
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_BASE36[r])
    return "".join(reversed(digits))


def new_strategy_id(name: str, suffix: str | None = None) -> str:
    """A short unique strategy id such as ``razor-3f9a1c``: a slug of the name plus 6 random hex digits.

    ``suffix`` replaces the random part (tests, or ids derived from something else); it must be label-safe.
    """
    slug = _SLUG_RE.sub("-", name.lower()).strip("-")[:_MAX_SLUG].strip("-") or "strategy"
    suffix = secrets.token_hex(3) if suffix is None else suffix
    if not is_valid_id(suffix):
        raise ValueError(f"strategy id suffix {suffix!r} may only contain letters, digits, '_' and '-'")
    return f"{slug}-{suffix}"


def new_trade_id(ts_ms: int, seq: int) -> str:
    """A short trade id from exchange time and a counter: ``base36(ts_ms)-base36(seq)``, e.g. ``m5x1k2ab-1``.

    Deterministic (same inputs, same id) so a replayed session produces the same labels. Uniqueness comes from
    ``seq``: pass a counter that never repeats for one journal (the journal's next trade number), not one that
    restarts with the process. ``ts_ms`` keeps ids readable and roughly time-ordered (8 base-36 digits until 2059).
    """
    if ts_ms < 0 or seq < 0:
        raise ValueError(f"trade id needs non-negative ts_ms and seq, got {ts_ms}, {seq}")
    return f"{base36(ts_ms)}-{base36(seq)}"
