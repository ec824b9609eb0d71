"""Deribit JSON-RPC over WebSocket: a pure protocol core (``protocol``), the asyncio connection (``client``),
JSON <-> domain conversion (``convert``), ``--exchange`` resolution (``endpoints``), errors (``errors``) and the
one table of Deribit's error codes (``codes``, shared with the simulator)."""

from tradebaas.exchange.deribit.client import ClientStatus, ConnState, DeribitClient
from tradebaas.exchange.deribit.endpoints import Endpoint, resolve
from tradebaas.exchange.deribit.errors import (
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    DeribitApiError,
    DeribitError,
    RequestTimeout,
    TooManyRequests,
)

__all__ = [
    "AuthenticationError",
    "ClientClosed",
    "ClientStatus",
    "ConnState",
    "ConnectionLost",
    "DeribitApiError",
    "DeribitClient",
    "DeribitError",
    "Endpoint",
    "RequestTimeout",
    "TooManyRequests",
    "resolve",
]
