"""The doctor's verdicts: facts gathered from the exchange and this machine in, one ``Check`` out.

Pure (no I/O, no clock), so every threshold and message is tested with plain function calls; ``exchange.py`` and
``local.py`` gather the facts. A check says what it found (``detail``) and, when it is not a pass, what to do
(``fix``): a preflight that only says "fail" sends the user searching.

Thresholds, and why:
- clock: the exchange's wall clock is the ``usOut`` stamp of its answers, compared with the midpoint of the round
  trip (NTP's estimate, from the fastest of a few samples). Over 1 s is a warning, over 5 s a failure (beyond the
  error of the measurement): a synchronised machine is within milliseconds, and signed logins, the journal's wall
  times and the report schedule all assume it is.
- margin: every configured strategy's position at the engine's own sizing (``Instrument.amount_for_notional``, so a
  size below the minimum counts as the minimum it really trades), times its concurrent positions, needs its initial
  margin (notional / max leverage) plus two taker fees; less than that available is a failure, more than half of the
  available funds a warning (little room for losses).
- rate limits: a kill switch sends up to ``ME_CALLS_PER_STRATEGY`` matching-engine calls per strategy at once (cancel
  the entry, close, cancel both brackets); an entry needs 2 at once (the entry, then its OCO bracket pair). A burst
  below the entry's need fails; below the kill switch's, warns.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tradebaas.exchange.deribit import scopes
from tradebaas.instruments import DEFAULT_INSTRUMENTS, Instrument

WARN_SKEW_S = 1.0
FAIL_SKEW_S = 5.0
#: exchange time (``public/get_time``) further than this from its wall clock: a simulator replaying history
REPLAY_GAP_S = 60.0
ME_CALLS_PER_ENTRY = 2
ME_CALLS_PER_STRATEGY = 4
MARGIN_WARN_FRACTION = 0.5
#: a strategy whose size rounds up by more than this factor (below the minimum order) gets a warning
SIZE_ROUNDING_WARN = 1.5


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(slots=True, frozen=True)
class Check:
    """One line of the checklist. ``fix`` says what to do (given for fail, warn and skip)."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix,
                "data": dict(self.data)}


def passed(checks: Sequence[Check]) -> bool:
    """The doctor's exit status: no check failed (warnings and skips are not failures)."""
    return not any(c.status is Status.FAIL for c in checks)


def skipped(name: str, why: str, fix: str = "") -> Check:
    return Check(name, Status.SKIP, why, fix)


# ------------------------------------------------------------------------------------------------------ scope


def scope_check(granted: str) -> Check:
    """The key must trade (``trade:read_write``) and read its account (``account:read``); a key that can move
    funds (``wallet:read_write``) is flagged: on a trading machine it is a risk, never a need."""
    scope = scopes.parse(granted)
    data = {"scope": granted, **{k: scope.level_name(k) for k in scopes.KINDS}}
    if not granted.strip():
        return Check("scope", Status.WARN, "the exchange did not say which scope it granted",
                     "check the key's permissions on the exchange's API page: Trade read+write, Account read", data)
    lacking = [f"{kind}:{level}" for kind, level in (("trade", "read_write"), ("account", "read"))
               if not scope.allows(kind, level)]
    if lacking:
        return Check("scope", Status.FAIL, f"the key lacks {' and '.join(lacking)} (granted: {granted})",
                     "edit the API key (Deribit: Account > API) to allow Trade: read+write and Account: read, or "
                     "create a new one with them", data)
    if scope.allows("wallet", "read_write"):
        return Check("scope", Status.WARN, f"can trade, and can also withdraw funds (wallet:read_write; granted: "
                     f"{granted})", "a leaked trading key should not be able to move money: remove Wallet "
                     "read+write from the key (or create one without it)", data)
    return Check("scope", Status.PASS, f"can trade and read the account, cannot withdraw (granted: {granted})",
                 data=data)


# ------------------------------------------------------------------------------------------------------ clock


@dataclass(slots=True, frozen=True)
class ClockSample:
    """One ``public/get_time`` round trip: local wall seconds at send and receipt, the answer's ``usOut`` (the
    exchange's wall clock, µs; None if it sent none) and its ``public/get_time`` (the exchange's time, ms)."""

    sent_s: float
    received_s: float
    server_us: int | None
    exchange_ms: int


def clock_check(samples: Sequence[ClockSample]) -> Check:
    """Skew of this machine's clock against the exchange's wall clock (see the module docstring).

    What "the exchange's clock" is: Deribit stamps every answer with ``usOut``; the simulator stamps it with its
    own wall clock (the host's, shifted by ``tradebaas sim --clock-offset``), while its ``public/get_time`` is the
    replayed market's time, months in the past by default. So the skew is measured on ``usOut`` for every exchange;
    a ``get_time`` far from it only says the exchange replays history (which the engine follows by design).
    """
    if not samples:
        return skipped("clock", "no answer to public/get_time")
    best = min(samples, key=lambda s: s.received_s - s.sent_s)
    rtt = max(0.0, best.received_s - best.sent_s)
    mid = (best.sent_s + best.received_s) / 2
    if best.server_us is not None:
        server_s = best.server_us / 1e6
        source = "usOut"
    elif abs(best.exchange_ms / 1000 - mid) < 86_400:
        server_s = best.exchange_ms / 1000
        source = "public/get_time"
    else:
        return Check("clock", Status.WARN, "the exchange stamps no wall clock (usOut) on its answers and its time is "
                     "not the present: skew not measured", "compare this machine's clock with a time server "
                     "(`timedatectl status`: 'System clock synchronized: yes')")
    skew = mid - server_s  # positive: this machine is ahead
    bound = max(0.0, abs(skew) - rtt / 2)  # the skew is at least this large whatever the network did
    data = {"skew_s": round(skew, 4), "rtt_s": round(rtt, 4), "source": source,
            "exchange_time_ms": best.exchange_ms}
    replay = abs(best.exchange_ms / 1000 - server_s) > REPLAY_GAP_S
    side = "ahead of" if skew > 0 else "behind"
    detail = f"this machine is {abs(skew):.3f} s {side} the exchange (± {rtt / 2:.3f} s, from {source})"
    if replay:
        detail += "; the exchange's market time is replayed history (a simulator), which the engine follows"
    fix = ("synchronise this machine's clock (`timedatectl set-ntp true`, or chrony/ntpd) and run the doctor again: "
           "signed logins, the journal's wall times and the report schedule rely on it")
    if bound > FAIL_SKEW_S:
        return Check("clock", Status.FAIL, detail, fix, data)
    if bound > WARN_SKEW_S:
        return Check("clock", Status.WARN, detail, fix, data)
    return Check("clock", Status.PASS, detail, data=data)


# ------------------------------------------------------------------------------------------------ instruments

_SPEC_FIELDS = ("instrument_type", "settlement_currency", "contract_size", "min_trade_amount", "tick_size",
                "maker_fee", "taker_fee", "max_leverage")


def describe_instrument(inst: Instrument) -> str:
    unit = inst.quote_currency if inst.is_inverse else inst.base_currency
    return (f"{inst.name}: {inst.instrument_type}, tick {inst.tick_size:g}, contract {inst.contract_size:g}, "
            f"minimum {inst.min_trade_amount:g} {unit}, fees maker {inst.maker_fee:g} / taker {inst.taker_fee:g}")


def instruments_check(listed: Mapping[str, Instrument], wanted: Sequence[str],
                      builtin: Mapping[str, Instrument] = DEFAULT_INSTRUMENTS) -> Check:
    """Every instrument the strategies trade must be listed; its specification is shown, and every difference
    from the built-in one is a warning: the engine trades with the exchange's values (it loads them when it
    connects), while backtests and the fill model's defaults use the built-in ones."""
    parts: list[str] = []
    missing: list[str] = []
    changed: list[str] = []
    data: dict[str, Any] = {}
    for name in dict.fromkeys(wanted):
        inst = listed.get(name)
        if inst is None:
            missing.append(name)
            continue
        data[name] = {f: getattr(inst, f) for f in _SPEC_FIELDS}
        ref = builtin.get(name)
        diffs = [f"{f} {getattr(ref, f):g} -> {getattr(inst, f):g}" if isinstance(getattr(inst, f), float)
                 else f"{f} {getattr(ref, f)} -> {getattr(inst, f)}"
                 for f in _SPEC_FIELDS if ref is not None and getattr(ref, f) != getattr(inst, f)]
        if ref is None:
            changed.append(f"{name} has no built-in specification")
        elif diffs:
            changed.append(f"{name}: {', '.join(diffs)}")
        parts.append(describe_instrument(inst) + ("" if ref is None or diffs else " (as built in)"))
    if missing:
        return Check("instruments", Status.FAIL, f"not listed by the exchange: {', '.join(missing)}",
                     "trade an instrument the exchange lists (tradebaas strategy set <id> instrument=...)", data)
    detail = "; ".join(parts)
    if changed:
        return Check("instruments", Status.WARN, f"{detail}. Differs from the built-in specification: "
                     f"{'; '.join(changed)}", "the engine uses the exchange's values; update the built-in table "
                     "(tradebaas/instruments.py) so backtests match, and re-check strategy sizes", data)
    return Check("instruments", Status.PASS, detail, data=data)


# ----------------------------------------------------------------------------------------------------- margin


@dataclass(slots=True, frozen=True)
class StrategySize:
    """What a strategy will hold: ``notional_usd`` per position (its ``tradeSize``), ``concurrent`` positions."""

    label: str
    instrument: str
    notional_usd: float
    concurrent: int = 1


def margin_check(sizes: Sequence[StrategySize], instruments: Mapping[str, Instrument],
                 marks: Mapping[str, float], available: Mapping[str, float], source: str) -> Check:
    """Funds for the strategies' positions (see the module docstring). ``available``: settlement currency ->
    ``available_funds`` of its account summary; ``marks``: instrument -> mark price."""
    need: dict[str, float] = {}
    lines: list[str] = []
    small: list[str] = []
    for s in sizes:
        inst = instruments.get(s.instrument)
        mark = marks.get(s.instrument, 0.0)
        if inst is None or mark <= 0:
            return Check("margin", Status.SKIP, f"no price or specification for {s.instrument} ({s.label})",
                         "see the instruments line")
        amount = inst.amount_for_notional(s.notional_usd, mark)
        traded_usd = amount if inst.is_inverse else amount * mark
        notional = amount / mark if inst.is_inverse else amount * mark  # settlement currency
        per_position = notional / inst.max_leverage + 2 * inst.taker_fee * notional
        cur = inst.settlement_currency
        need[cur] = need.get(cur, 0.0) + per_position * max(1, s.concurrent)
        unit = inst.quote_currency if inst.is_inverse else inst.base_currency
        lines.append(f"{s.label}: {max(1, s.concurrent)} x {amount:g} {unit} on {s.instrument} (tradeSize "
                     f"{s.notional_usd:g} USD)")
        if s.notional_usd > 0 and traded_usd > SIZE_ROUNDING_WARN * s.notional_usd:
            small.append(f"{s.label}: tradeSize {s.notional_usd:g} USD is below the minimum order "
                         f"({inst.min_trade_amount:g}), so it trades {traded_usd:,.0f} USD")
    data = {"need": need, "available": dict(available), "source": source}
    short = [f"{cur} {available.get(cur, 0.0):,.6g} available < {n:,.6g} needed" for cur, n in sorted(need.items())
             if available.get(cur, 0.0) < n]
    what = f"{'; '.join(lines) or 'no strategies'} ({source})"
    if short:
        return Check("margin", Status.FAIL, f"{'; '.join(short)} for {what}",
                     "deposit or transfer funds in the settlement currency, or lower tradeSize "
                     "(tradebaas strategy set <id> tradeSize=...)", data)
    tight = [f"{cur}: {n:,.6g} of {available.get(cur, 0.0):,.6g}" for cur, n in sorted(need.items())
             if n > MARGIN_WARN_FRACTION * available.get(cur, 0.0)]
    have = ", ".join(f"{cur} {available.get(cur, 0.0):,.6g} available, {n:,.6g} needed"
                     for cur, n in sorted(need.items()))
    if tight or small:
        return Check("margin", Status.WARN, f"{have or 'nothing needed'} for {what}; "
                     + "; ".join([*(f"needs over half the funds ({t})" for t in tight), *small]),
                     "keep margin for losses (lower tradeSize or add funds); size strategies at or above the "
                     "instrument's minimum order", data)
    return Check("margin", Status.PASS, f"{have or 'nothing needed'} for {what}", data=data)


# ------------------------------------------------------------------------------------------------ rate limits


def _bucket(obj: Any) -> tuple[float, float] | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("burst"), int | float) and isinstance(obj.get("rate"), int | float):
        return float(obj["burst"]), float(obj["rate"])
    return None


def rate_limit_check(limits: Mapping[str, Any] | None, strategies: int, throttled: bool) -> Check:
    """Headroom of the account's limits (Deribit's extended account summary ``limits``) for the strategies."""
    n = max(1, strategies)
    me_obj = (limits or {}).get("matching_engine")
    me = None
    if isinstance(me_obj, Mapping):
        trading = me_obj.get("trading")
        me = _bucket(trading.get("total") if isinstance(trading, Mapping) else None) or _bucket(me_obj)
    other = _bucket((limits or {}).get("non_matching_engine"))
    need_entry, need_kill = ME_CALLS_PER_ENTRY * n, ME_CALLS_PER_STRATEGY * n
    data = {"matching_engine": me, "non_matching_engine": other, "strategies": n, "need_burst": need_kill,
            "throttled": throttled}
    if throttled:
        return Check("rate limits", Status.WARN, "the exchange answered 10028 too_many_requests during the doctor",
                     "another program is using this key's request credits: give the engine its own key", data)
    if me is None:
        return Check("rate limits", Status.WARN, "the exchange did not report this account's limits (extended "
                     "account summary)", "check the account's rate-limit tier on the exchange's website", data)
    burst, rate = me
    detail = (f"matching engine: burst {burst:g}, {rate:g}/s"
              + (f"; other calls: burst {other[0]:g}, {other[1]:g}/s" if other else "")
              + f"; {n} strateg{'y needs' if n == 1 else 'ies need'} up to {need_kill} order calls at once (kill switch)")
    if burst < need_entry:
        return Check("rate limits", Status.FAIL, detail, "an entry and its stop could not go out together: run fewer "
                     "strategies on this key or raise the account's tier", data)
    if burst < need_kill:
        return Check("rate limits", Status.WARN, detail, "a kill switch would be throttled: run fewer strategies on "
                     "this key or raise the account's tier", data)
    return Check("rate limits", Status.PASS, detail, data=data)
