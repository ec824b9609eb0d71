"""``--exchange`` values -> a WebSocket URL and the credentials to use there.

- ``sim``: the local simulator of this TRADEBAAS_HOME; its URL from ``sim/sim.json`` and its paper key from
  ``sim/credentials.json`` (both written by ``tradebaas sim``). No real credentials are ever sent to it.
- ``ws://host:port[/path]`` or ``wss://...``: any Deribit-compatible server (``/ws/api/v2`` appended when the URL
  has no path); credentials from the environment / secrets file if present.
- ``deribit-testnet`` / ``deribit``: Deribit itself; credentials are required (environment or secrets.toml).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tradebaas.errors import UserError
from tradebaas.home import Home, get_home
from tradebaas.secrets import Credentials, Secret, load_credentials

DERIBIT_WS = "wss://www.deribit.com/ws/api/v2"
DERIBIT_TESTNET_WS = "wss://test.deribit.com/ws/api/v2"
WS_PATH = "/ws/api/v2"


@dataclass(slots=True, frozen=True)
class Endpoint:
    """Where to connect and as whom. ``live`` is True only for real-money Deribit (``--exchange deribit``)."""

    name: str  # "sim" | "url" | "deribit-testnet" | "deribit"
    url: str
    credentials: Credentials | None
    live: bool = False

    @property
    def client_id(self) -> str | None:
        return self.credentials.client_id if self.credentials else None

    @property
    def client_secret(self) -> Secret | None:
        return self.credentials.client_secret if self.credentials else None


def normalize_ws_url(url: str) -> str:
    """``ws://host:port`` -> ``ws://host:port/ws/api/v2``; a URL with a path is kept as it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UserError(f"not a WebSocket URL: {url!r} (expected ws://host:port or wss://host/path)")
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def resolve(exchange: str, home: Home | Path | str | None = None) -> Endpoint:
    """Resolve an ``--exchange`` value (see module docstring). Raises ``UserError`` with what to do."""
    h = get_home(home if not isinstance(home, Path) else str(home))
    value = exchange.strip()
    if value == "sim":
        return _sim_endpoint(h)
    if value == "deribit":
        return Endpoint("deribit", DERIBIT_WS, _required_credentials(h, "deribit"), live=True)
    if value == "deribit-testnet":
        return Endpoint("deribit-testnet", DERIBIT_TESTNET_WS, _required_credentials(h, "deribit-testnet"))
    if value.startswith(("ws://", "wss://")):
        return Endpoint("url", normalize_ws_url(value), load_credentials(h.root, "deribit"))
    raise UserError(f"unknown --exchange {exchange!r}: use sim, deribit-testnet, deribit or a ws:// URL")


def _sim_endpoint(home: Home) -> Endpoint:
    info_path = home.sim_dir / "sim.json"
    cred_path = home.sim_dir / "credentials.json"
    if not info_path.exists():
        raise UserError(f"no simulator running for {home.root} ({info_path} missing): start one with `tradebaas sim`")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        url = normalize_ws_url(str(info["ws_url"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{info_path} is unreadable ({exc}); restart the simulator") from None
    creds = None
    if cred_path.exists():
        try:
            c = json.loads(cred_path.read_text(encoding="utf-8"))
            creds = Credentials(str(c["client_id"]), Secret(str(c["client_secret"])), str(cred_path))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{cred_path} is unreadable ({exc}); restart the simulator") from None
    return Endpoint("sim", url, creds)


def _required_credentials(home: Home, section: str) -> Credentials:
    creds = load_credentials(home.root, section)
    if creds is None:
        raise UserError(
            f"--exchange {section} needs API credentials: set TRADEBAAS_DERIBIT_CLIENT_ID and "
            f"TRADEBAAS_DERIBIT_CLIENT_SECRET, or write [{section}] client_id/client_secret to "
            f"{home.root / 'secrets.toml'} (chmod 600)"
        )
    return creds
