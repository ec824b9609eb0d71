"""The simulator's refusals: the error answers it sends, raised by the matching core and turned into JSON by the server.

Why a class of its own: the client's ``DeribitError`` family (``exchange/deribit/errors.py``) is what a *caller*
receives (including timeouts and dropped connections); a ``SimRefusal`` is what the simulated *exchange* decides
to answer, serialised exactly as Deribit sends it. The codes come from the one table, ``exchange/deribit/codes.py``,
so a third-party client maps them to the same exceptions it would raise against the real exchange.
"""

from __future__ import annotations

from typing import Any

from tradebaas.exchange.deribit import codes
from tradebaas.exchange.deribit.methods import is_deribit_method


class SimRefusal(Exception):
    """An error answer exactly as Deribit sends it: ``{"code", "message", "data"?}``; the message defaults to
    Deribit's for the code. ``reason`` says why in words for logs and tests; it is never sent (see ``coded``)."""

    def __init__(self, code: int, message: str | None = None, data: Any = None, reason: str | None = None) -> None:
        self.code = code
        self.message = message if message is not None else codes.message(code)
        self.data = data
        self.reason = reason
        super().__init__(f"{self.code} {self.message}" + (f" {data!r}" if data is not None else "")
                         + (f" ({reason})" if reason else ""))

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
    return SimRefusal(codes.INVALID_PARAMS, codes.message(codes.INVALID_PARAMS), {"reason": reason, "param": param},
                      reason)


def coded(code: int, reason: str | None = None, param: str | None = None) -> SimRefusal:
    """A classic-code error as Deribit sends it: code and message, no ``data``.

    Deribit's error object is ``{code, message}`` (its OpenAPI ``ErrorResponse``); only -32602 carries
    ``data: {reason, param}`` (``invalid_params``). ``reason`` and ``param`` stay on the refusal (``.reason``) for
    the simulator's logs and tests, so a client sees exactly what Deribit would show it."""
    why = f"{param}: {reason}" if reason and param else reason
    return SimRefusal(code, codes.message(code), None, why)


def unsupported(method: str) -> SimRefusal:
    """A method the simulator does not answer: 10033 not_implemented when Deribit has it (it exists, not here),
    -32601 Method not found when Deribit has no such method either."""
    if is_deribit_method(method):
        return SimRefusal(codes.NOT_IMPLEMENTED, reason=f"{method} is not simulated")
    return SimRefusal(codes.METHOD_NOT_FOUND)
