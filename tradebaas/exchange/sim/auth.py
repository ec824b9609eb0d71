"""API keys, access tokens and Deribit's signatures for the simulator.

Why its own module: the signature formats are exactly what third-party clients compute (ccxt signs REST calls
with ``deri-hmac-sha256`` and WebSocket logins with ``client_signature``), so they are pure functions tested on
their own. Tokens expire on real time (a transport concern), not on the simulated clock: at ``--speed 600`` a
15-minute token would otherwise die in 1.5 s.

Scopes are Deribit's (``tradebaas/exchange/deribit/scopes.py``): every key has a maximal scope (``--account
ID:SECRET:BALANCE:SCOPES``; default ``account:read_write trade:read_write``), ``public/auth`` grants it (narrowed by
a requested ``scope``), and ``authorize`` refuses a private method the granted scope does not cover with 13021.

"Real time" is the simulator's wall clock ``wall()``: the host's, shifted by ``tradebaas sim --clock-offset``, so a
test can present an exchange whose clock is off (signature windows, and the envelopes' ``usIn``/``usOut``, follow
it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tradebaas.exchange.deribit import codes
from tradebaas.exchange.deribit import scopes as scope_rules
from tradebaas.exchange.sim.errors import SimRefusal, invalid_params

TOKEN_TTL_S = 900
SIGNATURE_WINDOW_MS = 5 * 60_000  # accepted distance of a signature's timestamp from real time


@dataclass(slots=True)
class Account:
    account_id: str
    client_id: str
    client_secret: str
    balances: dict[str, float] = field(default_factory=dict)
    #: the key's maximal scope (``scope_rules.parse_key_scope`` syntax)
    scopes: str = scope_rules.DEFAULT_KEY_SCOPE

    def to_json(self) -> dict[str, object]:
        return {"account_id": self.account_id, "client_id": self.client_id, "client_secret": self.client_secret,
                "balances": self.balances, "scopes": self.scopes}

    @property
    def max_scope(self) -> scope_rules.Scope:
        return scope_rules.parse_key_scope(self.scopes)


@dataclass(slots=True)
class Session:
    """A token's account, expiry (wall seconds) and granted scope (Deribit's answer string)."""

    account_id: str
    expires_s: float
    scope: str


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def client_signature(secret: str, timestamp_ms: int | str, nonce: str, data: str = "") -> str:
    """``public/auth`` grant ``client_signature``: HMAC-SHA256 over ``timestamp\\nnonce\\ndata``."""
    return sign(secret, f"{timestamp_ms}\n{nonce}\n{data}")


def http_signature(secret: str, ts_ms: int | str, nonce: str, method: str, uri: str, body: str = "") -> str:
    """HTTP ``deri-hmac-sha256``: HMAC-SHA256 over ``ts\\nnonce\\nMETHOD\\nURI?query\\nbody\\n``."""
    return sign(secret, f"{ts_ms}\n{nonce}\n{method.upper()}\n{uri}\n{body}\n")


def parse_hmac_header(value: str) -> dict[str, str]:
    """``deri-hmac-sha256 id=..,ts=..,sig=..,nonce=..`` -> its fields."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "deri-hmac-sha256":
        raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "unknown authorization scheme"})
    out: dict[str, str] = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        out[k] = v
    return out


class AuthStore:
    """Accounts by client id, live access/refresh tokens. Tokens live in memory only (clients re-authenticate
    after a simulator restart, as after a real disconnect)."""

    def __init__(self, accounts: list[Account], ttl_s: int = TOKEN_TTL_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.by_client = {a.client_id: a for a in accounts}
        self.by_account = {a.account_id: a for a in accounts}
        self.ttl_s = ttl_s
        self.wall = wall  # the simulator's wall clock, seconds (the host's plus --clock-offset)
        self.access: dict[str, Session] = {}
        self.refresh: dict[str, Session] = {}

    def _secret(self, client_id: object) -> Account:
        acc = self.by_client.get(str(client_id))
        if acc is None:
            raise SimRefusal(codes.INVALID_CREDENTIALS)
        return acc

    def login(self, params: dict[str, object], now_wall_ms: int | None = None) -> tuple[str, dict[str, object]]:
        """Handle ``public/auth``; returns the account id and Deribit's result object."""
        now_wall_ms = int(self.wall() * 1000) if now_wall_ms is None else now_wall_ms
        grant = params.get("grant_type")
        requested = str(params["scope"]) if params.get("scope") else None
        if grant == "client_credentials":
            acc = self._secret(params.get("client_id"))
            if not hmac.compare_digest(str(params.get("client_secret", "")), acc.client_secret):
                raise SimRefusal(codes.INVALID_CREDENTIALS)
            account_id = acc.account_id
            scope = str(scope_rules.grant(acc.max_scope, requested))
        elif grant == "client_signature":
            acc = self._secret(params.get("client_id"))
            ts = params.get("timestamp")
            sig = str(params.get("signature", ""))
            if ts is None or not sig:
                raise invalid_params("signature", "timestamp and signature required")
            if abs(int(ts) - now_wall_ms) > SIGNATURE_WINDOW_MS:  # type: ignore[call-overload]
                raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "timestamp out of window"})
            want = client_signature(acc.client_secret, str(ts), str(params.get("nonce", "")), str(params.get("data", "")))
            if not hmac.compare_digest(want, sig.lower()):
                raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "invalid signature"})
            account_id = acc.account_id
            scope = str(scope_rules.grant(acc.max_scope, requested))
        elif grant == "refresh_token":
            old = self.refresh.pop(str(params.get("refresh_token", "")), None)
            if old is None or old.expires_s < now_wall_ms / 1000:
                raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "invalid refresh token"})
            account_id, scope = old.account_id, old.scope
        else:
            raise invalid_params("grant_type", "unsupported grant_type")
        access = f"{now_wall_ms}.{secrets.token_urlsafe(24)}"
        refresh = f"{now_wall_ms}.{secrets.token_urlsafe(24)}"
        now_s = now_wall_ms / 1000
        self.access[access] = Session(account_id, now_s + self.ttl_s, scope)
        self.refresh[refresh] = Session(account_id, now_s + 10 * self.ttl_s, scope)
        result: dict[str, object] = {"access_token": access, "token_type": "bearer", "expires_in": self.ttl_s,
                                     "refresh_token": refresh, "scope": scope, "enabled_features": []}
        if params.get("state") is not None:
            result["state"] = params["state"]
        return account_id, result

    def session_for_token(self, token: str, now_wall_s: float | None = None) -> Session:
        s = self.access.get(token)
        now = self.wall() if now_wall_s is None else now_wall_s
        if s is None or s.expires_s < now:
            raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "invalid or expired token"})
        return s

    def account_for_token(self, token: str, now_wall_s: float | None = None) -> str:
        return self.session_for_token(token, now_wall_s).account_id

    def account_for_http(self, header: str, method: str, uri: str, body: str,
                         now_wall_ms: int | None = None) -> str:
        """Account of an HTTP ``Authorization`` header (``Bearer`` or ``deri-hmac-sha256``)."""
        return self.session_for_http(header, method, uri, body, now_wall_ms).account_id

    def session_for_http(self, header: str, method: str, uri: str, body: str,
                         now_wall_ms: int | None = None) -> Session:
        """The session of an HTTP ``Authorization`` header: a bearer token's, or for a signed request (which has
        no token) the key's full grant."""
        now_wall_ms = int(self.wall() * 1000) if now_wall_ms is None else now_wall_ms
        if header.lower().startswith("bearer "):
            return self.session_for_token(header[7:].strip(), now_wall_ms / 1000)
        f = parse_hmac_header(header)
        acc = self.by_client.get(f.get("id", ""))
        if acc is None:
            raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "unknown client id"})
        try:
            ts = int(f.get("ts", ""))
        except ValueError:
            raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "bad ts"}) from None
        if abs(ts - now_wall_ms) > SIGNATURE_WINDOW_MS:
            raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "timestamp out of window"})
        want = http_signature(acc.client_secret, f["ts"], f.get("nonce", ""), method, uri, body)
        if not hmac.compare_digest(want, f.get("sig", "").lower()):
            raise SimRefusal(codes.UNAUTHORIZED, data={"reason": "invalid signature"})
        return Session(acc.account_id, now_wall_ms / 1000 + self.ttl_s, str(scope_rules.grant(acc.max_scope)))

    def authorize(self, account_id: str, scope: str | None, method: str) -> None:
        """Refuse ``private/<method>`` with 13021 ``forbidden`` unless ``scope`` (a granted scope; None = the key's
        full grant) covers it."""
        if scope is None:
            acc = self.by_account.get(account_id)
            scope = str(scope_rules.grant(acc.max_scope)) if acc is not None else ""
        need = scope_rules.missing(scope_rules.parse(scope), method)
        if need is not None:
            raise SimRefusal(codes.FORBIDDEN, data={"reason": f"the token's scope lacks {need}", "param": "scope"})

    def logout(self, token: str) -> None:
        self.access.pop(token, None)


# ---- files under TRADEBAAS_HOME/sim ---------------------------------------------------------------------------

def write_private_json(path: Path, obj: object) -> None:
    """Write JSON atomically with mode 0600 (secrets inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_accounts(path: Path) -> list[Account]:
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    return [Account(str(a["account_id"]), str(a["client_id"]), str(a["client_secret"]),
                    {k: float(v) for k, v in dict(a.get("balances") or {}).items()},
                    str(a.get("scopes") or scope_rules.DEFAULT_KEY_SCOPE))
            for a in raw.get("accounts", [])]


def save_accounts(path: Path, accounts: list[Account]) -> None:
    write_private_json(path, {"accounts": [a.to_json() for a in accounts]})


@dataclass(slots=True, frozen=True)
class AccountSpec:
    """A parsed ``--account``: the key, and which optional parts were given (they update an existing key)."""

    account: Account
    has_balance: bool
    has_scopes: bool


def parse_account_spec(spec: str, price_usd: float, default_usd: float) -> Account:
    """``ID:SECRET[:BALANCE[:SCOPES]]`` -> the account (see ``parse_account``)."""
    return parse_account(spec, price_usd, default_usd).account


def parse_account(spec: str, price_usd: float, default_usd: float) -> AccountSpec:
    """``ID:SECRET[:BALANCE[:SCOPES]]``: BALANCE is a USD value, credited as that many USDC and the same value in
    BTC (empty = the default); SCOPES is the key's maximal scope, comma-separated ``KIND:LEVEL``
    (``trade:read,account:read``; default ``account:read_write,trade:read_write``)."""
    parts = spec.split(":", 3)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"--account must be ID:SECRET[:BALANCE[:SCOPES]], got {spec!r}")
    balance = parts[2] if len(parts) > 2 else ""
    try:
        usd = float(balance) if balance else default_usd
    except ValueError:
        raise ValueError(f"--account balance must be a number of USD, got {balance!r}") from None
    if usd < 0:
        raise ValueError("--account balance must be >= 0")
    has_scopes = len(parts) == 4
    key_scope = scope_rules.DEFAULT_KEY_SCOPE
    if has_scopes:
        key_scope = str(scope_rules.parse_key_scope(parts[3])) or "trade:none"
    account = Account(parts[0], parts[0], parts[1], default_balances(usd, price_usd), key_scope)
    return AccountSpec(account, bool(balance), has_scopes)


def default_balances(usd: float, price_usd: float) -> dict[str, float]:
    return {"USDC": round(usd, 2), "BTC": round(usd / price_usd, 8) if price_usd > 0 else 0.0}


def new_paper_account(price_usd: float, usd: float) -> Account:
    return Account("paper", "paper-" + secrets.token_hex(4), secrets.token_urlsafe(24),
                   default_balances(usd, price_usd))
