"""The simulator's refusals: the error answers it sends, raised by the matching core and turned into JSON by the server.

Why a class of its own: the client's ``DeribitError`` family (``exchange/deribit/errors.py``) is what a *caller*
receives (including timeouts and dropped connections); a ``SimRefusal`` is what the simulated *exchange* decides
to answer, serialised exactly as Deribit sends it. The codes come from the one table, ``exchange/deribit/codes.py``,
so a third-party client maps them to the same exceptions it would raise against the real exchange.
"""

from __future__ import annotations

from typing import Any

from tradebaas.exchange.deribit import codes


class SimRefusal(Exception):
    """An error answer exactly as Deribit sends it: ``{"code", "message", "data"?}``; the message defaults to
    Deribit's for the code."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else codes.message(code)
        self.data = data
        super().__init__(f"{self.code} {self.message}" + (f" {data!r}" if data is not None else ""))

    def to_json(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member; ``data`` only when there is some (as Deribit omits it)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SimRefusal) and self.to_json() == other.to_json()

    __hash__ = Exception.__hash__


def invalid_params(param: str, reason: str) -> SimRefusal:
    """Deribit's answer to a missing or malformed parameter (-32602 with ``{reason, param}``)."""
    return SimRefusal(codes.INVALID_PARAMS, codes.message(codes.INVALID_PARAMS), {"reason": reason, "param": param})


def coded(code: int, reason: str | None = None, param: str | None = None) -> SimRefusal:
    """A classic-code error, with Deribit-style ``data`` when there is a reason worth telling."""
    data: dict[str, Any] | None = None
    if reason is not None:
        data = {"reason": reason}
        if param is not None:
            data["param"] = param
    return SimRefusal(code, codes.message(code), data)
