"""Fault injection for reliability tests of clients: drop, stall, delay, and scripted errors.

Why: a live loop must survive the exchange misbehaving, and tests need to make it misbehave on demand and
deterministically. This module only holds the fault state and answers questions about it (pure apart from the
time passed in); the server acts on the answers. Controlled through ``admin/set_fault`` (see docs/simulator.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tradebaas.exchange.deribit import codes


@dataclass(slots=True)
class ErrorRule:
    """Answer ``methods`` (``*`` = every non-admin method) with ``code``; ``remaining`` None = until cleared."""

    methods: frozenset[str]
    code: int
    message: str
    remaining: int | None = None

    def matches(self, method: str) -> bool:
        return "*" in self.methods or method in self.methods


@dataclass(slots=True)
class Faults:
    stall_until_s: float = 0.0  # monotonic seconds; while now < this, nothing is answered
    delay_ms: int = 0
    errors: list[ErrorRule] = field(default_factory=list)

    def clear(self) -> None:
        self.stall_until_s = 0.0
        self.delay_ms = 0
        self.errors.clear()

    def stalled(self, now_s: float) -> bool:
        return now_s < self.stall_until_s

    def error_for(self, method: str) -> ErrorRule | None:
        """The rule that answers this call with an error (and counts it down), or None."""
        if method.startswith("admin/"):
            return None
        for rule in self.errors:
            if rule.matches(method):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.errors.remove(rule)
                return rule
        return None

    def describe(self, now_s: float) -> dict[str, object]:
        return {
            "stall_remaining_s": round(max(0.0, self.stall_until_s - now_s), 3),
            "delay_ms": self.delay_ms,
            "errors": [{"methods": sorted(r.methods), "code": r.code, "message": r.message, "remaining": r.remaining}
                       for r in self.errors],
        }

    def apply(self, params: dict[str, object], now_s: float) -> str:
        """Apply one ``admin/set_fault`` request; returns the action (``drop`` must be carried out by the caller).

        Raises ValueError on a malformed request.
        """
        action = str(params.get("action", ""))
        if action == "clear":
            self.clear()
        elif action == "drop":
            pass
        elif action == "stall":
            self.stall_until_s = now_s + float(params.get("seconds", 0))  # type: ignore[arg-type]
        elif action == "delay":
            self.delay_ms = max(0, int(params.get("ms", 0)))  # type: ignore[call-overload]
        elif action == "error":
            methods = params.get("methods", params.get("method", "*"))
            if isinstance(methods, str):
                methods = [m for m in methods.split(",") if m]
            if not isinstance(methods, list) or not methods:
                raise ValueError("methods must be a list of method names (or '*')")
            count = params.get("count")
            code = params.get("code", codes.INTERNAL_SERVER_ERROR)
            self.errors.append(ErrorRule(
                frozenset(str(m) for m in methods), int(code),  # type: ignore[call-overload]
                str(params.get("message", "injected_fault")),
                None if count in (None, "", 0) else int(count)))  # type: ignore[call-overload]
        else:
            raise ValueError("action must be one of drop, stall, delay, error, clear")
        return action
