"""Deribit's error codes, named once: the client reacts to them and the simulator answers with them.

Why one table: the client (``exchange/deribit``) and the simulator (``exchange/sim``) must agree on every code, and
a third-party client (ccxt keys its exception table on them) must see the same code from the simulator as from the
real exchange. Nothing else under ``tradebaas/exchange`` writes a code as a bare number (a unit test walks the
sources for that).

The classic codes and their message names are Deribit's (shared/reference/deribit-api.md §5): a constant's name is
the message in upper case, and ``MESSAGES`` maps every code to the message Deribit sends with it. The JSON-RPC codes
at the end are the protocol level's (the simulator answers malformed requests with them).
"""

from __future__ import annotations

# --- classic Deribit codes (message = the constant's name in lower case)
AUTHORIZATION_REQUIRED = 10000  # authorization_required
ERROR = 10001  # error
QTY_TOO_LOW = 10002  # qty_too_low
ORDER_OVERLAP = 10003  # order_overlap
ORDER_NOT_FOUND = 10004  # order_not_found
PRICE_TOO_LOW = 10005  # price_too_low
PRICE_TOO_HIGH = 10007  # price_too_high
NOT_ENOUGH_FUNDS = 10009  # not_enough_funds
ALREADY_CLOSED = 10010  # already_closed
PRICE_NOT_ALLOWED = 10011  # price_not_allowed
BOOK_CLOSED = 10012  # book_closed
INVALID_OR_UNSUPPORTED_INSTRUMENT = 10020  # invalid_or_unsupported_instrument
INVALID_AMOUNT = 10021  # invalid_amount
INVALID_PRICE = 10023  # invalid_price
INVALID_ORDER_ID = 10025  # invalid_order_id
PRICE_PRECISION_EXCEEDED = 10026  # price_precision_exceeded
NON_INTEGER_CONTRACT_AMOUNT = 10027  # non_integer_contract_amount
TOO_MANY_REQUESTS = 10028  # too_many_requests
NOT_OWNER_OF_ORDER = 10029  # not_owner_of_order
WHOLE_COST_TOO_LOW = 10032  # whole_cost_too_low
NOT_IMPLEMENTED = 10033  # not_implemented
TRIGGER_PRICE_TOO_HIGH = 10034  # trigger_price_too_high
TRIGGER_PRICE_TOO_LOW = 10035  # trigger_price_too_low
RETRY = 10040  # retry
SETTLEMENT_IN_PROGRESS = 10041  # settlement_in_progress
PRICE_WRONG_TICK = 10043  # price_wrong_tick
TRIGGER_PRICE_WRONG_TICK = 10044  # trigger_price_wrong_tick
MATCHING_ENGINE_QUEUE_FULL = 10047  # matching_engine_queue_full
TOO_MANY_CONCURRENT_REQUESTS = 10066  # too_many_concurrent_requests
ALREADY_FILLED = 11008  # already_filled
INVALID_ARGUMENTS = 11029  # invalid_arguments
OTHER_REJECT = 11030  # other_reject
INVALID_TRIGGER_PRICE = 11036  # invalid_trigger_price
PERMISSION_DENIED = 11042  # permission_denied
BAD_ARGUMENT = 11043  # bad_argument
NOT_OPEN_ORDER = 11044  # not_open_order
UNSUPPORTED_ARG_COMBINATION = 11047  # unsupported_arg_combination
BAD_REQUEST = 11050  # bad_request
SYSTEM_MAINTENANCE = 11051  # system_maintenance
SUBSCRIBE_ERROR_UNSUBSCRIBED = 11052  # subscribe_error_unsubscribed
POST_ONLY_REJECT = 11054  # post_only_reject
INTERNAL_SERVER_ERROR = 11094  # internal_server_error
INVALID_CREDENTIALS = 13004  # invalid_credentials
UNAUTHORIZED = 13009  # unauthorized
VALUE_REQUIRED = 13010  # value_required
INVALID_INPUT = 13016  # invalid_input
NOT_FOUND = 13020  # not_found
FORBIDDEN = 13021  # forbidden
TEMPORARILY_UNAVAILABLE = 13028  # temporarily_unavailable
NON_UNIQUE_ORDER_LABEL = 13032  # non_unique_order_label
RAW_SUBSCRIPTIONS_NOT_AVAILABLE_FOR_UNAUTHORIZED = 13778  # raw_subscriptions_not_available_for_unauthorized

# --- JSON-RPC 2.0 protocol codes (messages as Deribit sends them)
PARSE_ERROR = -32700  # Parse error
INVALID_REQUEST = -32600  # Invalid Request
METHOD_NOT_FOUND = -32601  # Method not found
INVALID_PARAMS = -32602  # Invalid params (data: {reason, param})
MISSING_PARAMS = -32000  # Missing params

#: Deribit's message for each code: what a refusal says when nothing more specific is given.
MESSAGES: dict[int, str] = {
    code: name.lower()
    for name, code in list(globals().items())
    if name.isupper() and isinstance(code, int) and code > 0
}
MESSAGES.update({
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    MISSING_PARAMS: "Missing params",
})


def message(code: int) -> str:
    """Deribit's message for ``code`` (``"error"`` for a code not in the table)."""
    return MESSAGES.get(code, "error")
