"""Errors raised by the Deribit client.

Every failure of a request says whether the exchange may have acted on it, because that is what the caller
(the order manager) must decide on: an order that may or may not exist is reconciled, never blindly re-sent.

- ``DeribitApiError``: the exchange answered with an error; the request was processed and refused.
- ``RequestTimeout``: no answer in time; the outcome is unknown (an order may exist).
- ``ConnectionLost``: the connection dropped; ``sent`` says whether the request reached the socket (if it did,
  the outcome is unknown; if not, it is safe to send again).
"""

from __future__ import annotations

from typing import Any

import tradebaas.exchange.deribit.codes as codes

#: Codes that mean "these credentials (or this session) are refused": the client logs in again once, then raises
#: ``AuthenticationError``.
AUTH_ERROR_CODES = frozenset({codes.AUTHORIZATION_REQUIRED, codes.INVALID_CREDENTIALS, codes.UNAUTHORIZED,
                              codes.FORBIDDEN})


class DeribitError(Exception):
    """Base class of every error the Deribit client raises (the simulator's refusals are ``SimRefusal``)."""


class DeribitApiError(DeribitError):
    """The exchange answered a request with an error object (``code``, ``message``, ``data``)."""

    def __init__(self, code: int, message: str, data: Any = None, method: str | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.method = method
        where = f" ({method})" if method else ""
        detail = f": {data}" if data not in (None, "", {}) else ""
        super().__init__(f"Deribit error {code} {message}{where}{detail}")


class TooManyRequests(DeribitApiError):
    """10028: the account's credit bucket is empty. Raised (after backing off) for order methods only."""


class AuthenticationError(DeribitApiError):
    """Credentials refused (13004 invalid_credentials, 13009 unauthorized, 13021 forbidden, 10000)."""


class RequestTimeout(DeribitError, TimeoutError):
    """No answer within the request timeout. The request was sent: its outcome is unknown."""

    def __init__(self, method: str, request_id: int, timeout: float) -> None:
        self.method = method
        self.request_id = request_id
        self.timeout = timeout
        super().__init__(f"{method} (id {request_id}) got no answer within {timeout:g} s; outcome unknown")


class ConnectionLost(DeribitError, ConnectionError):
    """The connection dropped (or never came up) before an answer arrived.

    ``sent`` is False when the request never left this process: then it is safe to send it again.
    """

    def __init__(self, method: str, reason: str = "connection lost", *, sent: bool = True) -> None:
        self.method = method
        self.reason = reason
        self.sent = sent
        outcome = "outcome unknown" if sent else "not sent"
        super().__init__(f"{method}: {reason} ({outcome})")


class ClientClosed(DeribitError):
    """The client was closed by its owner; no further requests are possible."""


def api_error(code: int, message: str, data: Any = None, method: str | None = None) -> DeribitApiError:
    """The most specific ``DeribitApiError`` subclass for an error code."""
    if code == codes.TOO_MANY_REQUESTS:
        return TooManyRequests(code, message, data, method)
    if code in AUTH_ERROR_CODES:
        return AuthenticationError(code, message, data, method)
    return DeribitApiError(code, message, data, method)
