"""Deribit's error answers, raised by the simulator's matching core and turned into JSON by the server.

The codes are Deribit's classic ones (reference/deribit-api.md §5), so a third-party client maps them to the same
exceptions it would raise against the real exchange (ccxt keys its exception table on them).
"""

from __future__ import annotations

from typing import Any

AUTHORIZATION_REQUIRED = 10000
ERROR = 10001
QTY_TOO_LOW = 10002
ORDER_OVERLAP = 10003
ORDER_NOT_FOUND = 10004
PRICE_TOO_LOW = 10005
PRICE_TOO_HIGH = 10007
NOT_ENOUGH_FUNDS = 10009
ALREADY_CLOSED = 10010
PRICE_NOT_ALLOWED = 10011
BOOK_CLOSED = 10012
INVALID_OR_UNSUPPORTED_INSTRUMENT = 10020
INVALID_AMOUNT = 10021
INVALID_PRICE = 10023
INVALID_ORDER_ID = 10025
PRICE_PRECISION_EXCEEDED = 10026
NON_INTEGER_CONTRACT_AMOUNT = 10027
TOO_MANY_REQUESTS = 10028
NOT_OWNER_OF_ORDER = 10029
WHOLE_COST_TOO_LOW = 10032
NOT_IMPLEMENTED = 10033
TRIGGER_PRICE_TOO_HIGH = 10034
TRIGGER_PRICE_TOO_LOW = 10035
RETRY = 10040
SETTLEMENT_IN_PROGRESS = 10041
PRICE_WRONG_TICK = 10043
TRIGGER_PRICE_WRONG_TICK = 10044
MATCHING_ENGINE_QUEUE_FULL = 10047
TOO_MANY_CONCURRENT_REQUESTS = 10066
ALREADY_FILLED = 11008
INVALID_ARGUMENTS = 11029
OTHER_REJECT = 11030
INVALID_TRIGGER_PRICE = 11036
PERMISSION_DENIED = 11042
BAD_ARGUMENT = 11043
NOT_OPEN_ORDER = 11044
UNSUPPORTED_ARG_COMBINATION = 11047
BAD_REQUEST = 11050
SYSTEM_MAINTENANCE = 11051
SUBSCRIBE_ERROR_UNSUBSCRIBED = 11052
POST_ONLY_REJECT = 11054
INTERNAL_SERVER_ERROR = 11094
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009
VALUE_REQUIRED = 13010
INVALID_INPUT = 13016
NOT_FOUND = 13020
FORBIDDEN = 13021
TEMPORARILY_UNAVAILABLE = 13028
NON_UNIQUE_ORDER_LABEL = 13032
RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED = 13778

PARSE_ERROR = -32700
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
MISSING_PARAMS = -32000

#: Deribit's message for each code (the snake_case name it documents), used when no message is given.
MESSAGES: dict[int, str] = {
    code: name.lower()
    for name, code in list(globals().items())
    if name.isupper() and isinstance(code, int) and code > 0
}
MESSAGES.update({
    PARSE_ERROR: "Parse error",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    MISSING_PARAMS: "Missing params",
})


class DeribitError(Exception):
    """An error answer exactly as Deribit sends it: ``{"code", "message", "data"?}``."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "error")
        self.data = data
        super().__init__(f"{self.code} {self.message}" + (f" {data!r}" if data is not None else ""))

    def to_json(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member; ``data`` only when there is some (as Deribit omits it)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeribitError) and self.to_json() == other.to_json()

    __hash__ = Exception.__hash__


def invalid_params(param: str, reason: str) -> DeribitError:
    """Deribit's answer to a missing or malformed parameter (-32602 with ``{reason, param}``)."""
    return DeribitError(INVALID_PARAMS, "Invalid params", {"reason": reason, "param": param})


def coded(code: int, reason: str | None = None, param: str | None = None) -> DeribitError:
    """A classic-code error, with Deribit-style ``data`` when there is a reason worth telling."""
    data: dict[str, Any] | None = None
    if reason is not None:
        data = {"reason": reason}
        if param is not None:
            data["param"] = param
    return DeribitError(code, MESSAGES.get(code, "error"), data)
