"""Deribit's signatures and token life cycle in the simulator's auth store."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from tradebaas.exchange.sim import auth
from tradebaas.exchange.sim.errors import SimRefusal


@pytest.fixture
def store() -> auth.AuthStore:
    return auth.AuthStore([auth.Account("acc1", "key1", "secret1", {"USDC": 1000.0})])


def test_client_signature_is_hmac_over_timestamp_nonce_data() -> None:
    want = hmac.new(b"s", b"123\nabc\nxyz", hashlib.sha256).hexdigest()
    assert auth.client_signature("s", 123, "abc", "xyz") == want


def test_http_signature_matches_ccxt_request_data() -> None:
    # ccxt: auth = ts + "\n" + nonce + "\n" + method + "\n" + request + "\n" + body + "\n"
    msg = "1700000000000\n1700000000000\nGET\n/api/v2/private/buy?amount=10&instrument_name=BTC-PERPETUAL\n\n"
    want = hmac.new(b"s", msg.encode(), hashlib.sha256).hexdigest()
    got = auth.http_signature("s", 1700000000000, "1700000000000", "GET",
                              "/api/v2/private/buy?amount=10&instrument_name=BTC-PERPETUAL")
    assert got == want


def test_client_credentials_login_and_token(store: auth.AuthStore) -> None:
    acc, res = store.login({"grant_type": "client_credentials", "client_id": "key1", "client_secret": "secret1",
                            "state": "s1"})
    assert acc == "acc1" and res["token_type"] == "bearer" and res["state"] == "s1"
    assert store.account_for_token(str(res["access_token"])) == "acc1"


def test_wrong_secret_is_invalid_credentials(store: auth.AuthStore) -> None:
    with pytest.raises(SimRefusal) as e:
        store.login({"grant_type": "client_credentials", "client_id": "key1", "client_secret": "nope"})
    assert e.value.code == 13004


def test_client_signature_login(store: auth.AuthStore) -> None:
    ts = int(time.time() * 1000)
    sig = auth.client_signature("secret1", ts, "n1", "")
    acc, _ = store.login({"grant_type": "client_signature", "client_id": "key1", "timestamp": ts, "signature": sig,
                          "nonce": "n1", "data": ""})
    assert acc == "acc1"
    with pytest.raises(SimRefusal) as e:
        store.login({"grant_type": "client_signature", "client_id": "key1", "timestamp": ts, "signature": "00" * 32,
                     "nonce": "n1"})
    assert e.value.code == 13009


def test_stale_signature_is_refused(store: auth.AuthStore) -> None:
    ts = int(time.time() * 1000) - auth.SIGNATURE_WINDOW_MS - 1000
    sig = auth.client_signature("secret1", ts, "n", "")
    with pytest.raises(SimRefusal):
        store.login({"grant_type": "client_signature", "client_id": "key1", "timestamp": ts, "signature": sig, "nonce": "n"})


def test_refresh_token_is_single_use(store: auth.AuthStore) -> None:
    _, res = store.login({"grant_type": "client_credentials", "client_id": "key1", "client_secret": "secret1"})
    acc, res2 = store.login({"grant_type": "refresh_token", "refresh_token": res["refresh_token"]})
    assert acc == "acc1" and res2["access_token"] != res["access_token"]
    with pytest.raises(SimRefusal):
        store.login({"grant_type": "refresh_token", "refresh_token": res["refresh_token"]})


def test_expired_token_is_unauthorized(store: auth.AuthStore) -> None:
    _, res = store.login({"grant_type": "client_credentials", "client_id": "key1", "client_secret": "secret1"})
    with pytest.raises(SimRefusal) as e:
        store.account_for_token(str(res["access_token"]), time.time() + auth.TOKEN_TTL_S + 1)
    assert e.value.code == 13009


def test_http_hmac_header(store: auth.AuthStore) -> None:
    ts = str(int(time.time() * 1000))
    uri = "/api/v2/private/get_positions?currency=BTC"
    sig = auth.http_signature("secret1", ts, ts, "GET", uri)
    header = f"deri-hmac-sha256 id=key1,ts={ts},sig={sig},nonce={ts}"
    assert store.account_for_http(header, "GET", uri, "") == "acc1"
    with pytest.raises(SimRefusal):
        store.account_for_http(header, "GET", uri + "&x=1", "")


def test_account_spec_and_files_are_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    acc = auth.parse_account_spec("k:s:50000", 100_000.0, 1.0)
    assert acc.balances == {"USDC": 50000.0, "BTC": 0.5}
    path = tmp_path / "sim" / "accounts.json"
    auth.save_accounts(path, [acc])
    assert (path.stat().st_mode & 0o777) == 0o600
    assert auth.load_accounts(path)[0].client_secret == "s"
    with pytest.raises(ValueError):
        auth.parse_account_spec("nosecret", 1.0, 1.0)


# ---- scopes (tradebaas/exchange/deribit/scopes.py) -------------------------------------------------------------

def login(store: auth.AuthStore, client_id: str, secret: str, **extra: object) -> dict[str, object]:
    return store.login({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **extra})[1]


def test_an_account_spec_may_name_the_keys_scopes_and_the_old_forms_still_parse() -> None:
    assert auth.parse_account_spec("k:s", 100_000.0, 1.0).scopes == "account:read_write trade:read_write"
    assert auth.parse_account_spec("k:s:50000", 100_000.0, 1.0).balances["USDC"] == 50000.0
    spec = auth.parse_account("k:s::account:read,trade:read", 100_000.0, 7.0)
    assert spec.account.scopes == "account:read trade:read" and spec.account.balances["USDC"] == 7.0
    assert spec.has_scopes and not spec.has_balance
    assert auth.parse_account_spec("k:s:1:trade:none", 1.0, 1.0).scopes == "trade:none"
    with pytest.raises(ValueError, match="bad scope 'trade:admin'"):
        auth.parse_account_spec("k:s:1:trade:admin", 1.0, 1.0)
    with pytest.raises(ValueError, match="balance"):
        auth.parse_account_spec("k:s:lots", 1.0, 1.0)


def test_scopes_survive_the_accounts_file_and_an_old_file_gets_the_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "accounts.json"
    auth.save_accounts(path, [auth.parse_account_spec("k:s:1:trade:read", 1.0, 1.0)])
    assert auth.load_accounts(path)[0].scopes == "trade:read"
    path.write_text('{"accounts": [{"account_id": "a", "client_id": "a", "client_secret": "s", "balances": {}}]}')
    assert auth.load_accounts(path)[0].scopes == "account:read_write trade:read_write"


def test_auth_answers_the_keys_scope_and_a_requested_scope_narrows_it_never_widens() -> None:
    store = auth.AuthStore([auth.Account("a", "a", "s", {}, "account:read_write trade:read_write")])
    assert login(store, "a", "s")["scope"] == "connection mainaccount account:read_write trade:read_write"
    narrowed = login(store, "a", "s", scope="trade:read wallet:read_write session:bot")["scope"]
    assert narrowed == "session:bot mainaccount account:read_write trade:read"  # wallet: the key has none


def test_a_method_outside_the_tokens_scope_is_refused_with_13021() -> None:
    store = auth.AuthStore([auth.Account("a", "a", "s", {}, "account:read trade:read")])
    token = str(login(store, "a", "s")["access_token"])
    session = store.session_for_token(token)
    store.authorize("a", session.scope, "get_positions")
    store.authorize("a", session.scope, "get_account_summary")
    store.authorize("a", session.scope, "subscribe")
    for method in ("buy", "cancel_by_label", "close_position", "some_future_method"):
        with pytest.raises(SimRefusal) as e:
            store.authorize("a", session.scope, method)
        assert e.value.code == 13021
    with pytest.raises(SimRefusal):
        store.authorize("a", None, "sell")  # a signed HTTP request gets the key's own scope


def test_the_simulators_wall_clock_moves_the_signature_window() -> None:
    ahead = auth.AuthStore([auth.Account("a", "a", "s", {})], wall=lambda: time.time() + 600)
    ts = int(time.time() * 1000)  # this machine's time: 10 minutes behind the simulator's clock
    with pytest.raises(SimRefusal):
        ahead.login({"grant_type": "client_signature", "client_id": "a", "timestamp": ts,
                     "signature": auth.client_signature("s", ts, "n"), "nonce": "n"})
