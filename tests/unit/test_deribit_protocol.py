"""The pure Deribit client protocol: frames in -> events out, requests, deadlines, auth, subscriptions."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from tradebaas.exchange.deribit.protocol import (
    DeribitProtocol,
    ErrorResponse,
    Expired,
    Heartbeat,
    HeartbeatRequest,
    Notification,
    OrphanResponse,
    ProtocolViolation,
    Response,
    backoff_delay,
    is_order_method,
    is_private_channel,
    redact,
    sign,
)
from tradebaas.secrets import Secret


def frame(**kw: object) -> str:
    return json.dumps({"jsonrpc": "2.0", **kw})


def wire(req) -> dict:
    return json.loads(req.text)


# ----------------------------------------------------------------------------------------------- requests


def test_request_ids_are_unique_and_increasing_across_reconnects() -> None:
    p = DeribitProtocol()
    a = p.request("public/get_time", now=0)
    b = p.request("public/get_time", now=0)
    p.connection_lost()
    c = p.request("public/get_time", now=0)
    assert a.id < b.id < c.id


def test_request_frame_is_jsonrpc_with_named_params() -> None:
    p = DeribitProtocol()
    req = p.request("public/ticker", {"instrument_name": "BTC-PERPETUAL"}, now=5.0)
    assert wire(req) == {
        "jsonrpc": "2.0",
        "id": req.id,
        "method": "public/ticker",
        "params": {"instrument_name": "BTC-PERPETUAL"},
    }
    assert req.id in p.pending


def test_response_resolves_pending_request_and_clears_it() -> None:
    p = DeribitProtocol()
    req = p.request("public/get_time", now=0)
    events = p.receive(frame(id=req.id, result=1700000000000, usIn=1, usOut=2, usDiff=1, testnet=True), now=1)
    assert events == [Response(req.id, "public/get_time", 1700000000000)]
    assert p.pending == {}


def test_a_response_carries_the_exchanges_wall_clock_from_usout() -> None:
    p = DeribitProtocol()
    stamped, bare = p.request("public/get_time", now=0), p.request("public/test", now=0)
    [ev] = p.receive(frame(id=stamped.id, result=1, usIn=1_700_000_000_000_000, usOut=1_700_000_000_000_250), now=1)
    assert isinstance(ev, Response) and ev.server_us == 1_700_000_000_000_250
    [ev] = p.receive(frame(id=bare.id, result={"version": "1"}), now=1)
    assert isinstance(ev, Response) and ev.server_us is None


def test_response_without_jsonrpc_field_is_tolerated() -> None:
    p = DeribitProtocol()
    req = p.request("public/test", now=0)
    assert p.receive(json.dumps({"id": req.id, "result": {"version": "1.2.26"}}), now=0) == [
        Response(req.id, "public/test", {"version": "1.2.26"})
    ]


def test_error_response_carries_code_message_and_data() -> None:
    p = DeribitProtocol()
    req = p.request("private/buy", {"instrument_name": "BTC-PERPETUAL"}, now=0)
    err = {"code": -32602, "message": "Invalid params", "data": {"reason": "must be a number", "param": "amount"}}
    assert p.receive(frame(id=req.id, error=err), now=1) == [
        ErrorResponse(req.id, "private/buy", -32602, "Invalid params", {"reason": "must be a number", "param": "amount"})
    ]
    assert p.pending == {}


def test_error_without_id_is_reported_without_request() -> None:
    p = DeribitProtocol()
    p.request("public/test", now=0)
    [ev] = p.receive(frame(id=None, error={"code": -32700, "message": "Parse error"}), now=0)
    assert ev == ErrorResponse(None, None, -32700, "Parse error", None)
    assert len(p.pending) == 1


def test_answer_for_unknown_id_is_an_orphan_not_a_response() -> None:
    p = DeribitProtocol()
    assert p.receive(frame(id=999, result={"order": {}}), now=0) == [OrphanResponse(999, None, result={"order": {}})]
    [ev] = p.receive(frame(id=998, error={"code": 10004, "message": "order_not_found"}), now=0)
    assert isinstance(ev, OrphanResponse) and ev.error["code"] == 10004


def test_late_answer_after_timeout_is_an_orphan() -> None:
    p = DeribitProtocol(request_timeout=2.0)
    req = p.request("private/buy", {}, now=0)
    assert p.expire(2.0) == [Expired(req.id, "private/buy", 2.0)]
    [ev] = p.receive(frame(id=req.id, result={"order": {"order_id": "X"}}), now=3)
    assert isinstance(ev, OrphanResponse) and ev.id == req.id


def test_forget_drops_a_pending_request() -> None:
    p = DeribitProtocol()
    req = p.request("public/test", now=0)
    assert p.forget(req.id) is not None
    assert p.forget(req.id) is None
    assert p.pending == {}


# ---------------------------------------------------------------------------------------------- deadlines


def test_deadlines_use_default_or_per_request_timeout() -> None:
    p = DeribitProtocol(request_timeout=10.0)
    a = p.request("public/test", now=100.0)
    b = p.request("public/test", now=100.0, timeout=1.5)
    assert a.deadline == 110.0 and b.deadline == 101.5
    assert p.next_deadline() == 101.5


def test_expire_returns_only_requests_past_their_deadline() -> None:
    p = DeribitProtocol(request_timeout=10.0)
    a = p.request("public/test", now=0.0, timeout=1.0)
    b = p.request("public/test", now=0.0, timeout=5.0)
    assert p.expire(0.999) == []
    assert p.expire(1.0) == [Expired(a.id, "public/test", 1.0)]
    assert list(p.pending) == [b.id]
    assert p.next_deadline() == 5.0
    assert p.expire(100) == [Expired(b.id, "public/test", 5.0)]
    assert p.next_deadline() is None


def test_connection_lost_fails_all_pending_and_ends_session() -> None:
    p = DeribitProtocol()
    a = p.request("public/test", now=0)
    b = p.request("private/buy", {}, now=0)
    p.authenticated = True
    p.receive("{}", now=1)
    lost = p.connection_lost()
    assert {x.id for x in lost} == {a.id, b.id}
    assert {x.method for x in lost} == {"public/test", "private/buy"}
    assert p.pending == {} and not p.authenticated
    assert p.last_received is None  # liveness is per connection


# -------------------------------------------------------------------------------------------- heartbeats


def test_test_request_heartbeat_produces_a_public_test_reply() -> None:
    p = DeribitProtocol()
    [ev] = p.receive(frame(method="heartbeat", params={"type": "test_request"}), now=7.0)
    assert isinstance(ev, HeartbeatRequest)
    assert wire(ev.reply)["method"] == "public/test"
    assert ev.reply.id in p.pending


def test_answer_to_heartbeat_reply_is_swallowed() -> None:
    p = DeribitProtocol()
    [ev] = p.receive(frame(method="heartbeat", params={"type": "test_request"}), now=0)
    assert p.receive(frame(id=ev.reply.id, result={"version": "1.2.26"}), now=0) == [Heartbeat()]
    assert p.pending == {}


def test_plain_heartbeat_needs_no_answer() -> None:
    p = DeribitProtocol()
    assert p.receive(frame(method="heartbeat", params={"type": "heartbeat"}), now=0) == [Heartbeat()]
    assert p.pending == {}


def test_every_frame_updates_last_received() -> None:
    p = DeribitProtocol()
    assert p.last_received is None
    p.receive("garbage", now=3.0)
    assert p.last_received == 3.0


# ------------------------------------------------------------------------------------------ notifications


def test_subscription_message_becomes_notification_with_exact_channel() -> None:
    p = DeribitProtocol()
    data = {"instrument_name": "BTC-PERPETUAL", "mark_price": 36288.31}
    msg = frame(method="subscription", params={"channel": "ticker.BTC-PERPETUAL.100ms", "data": data})
    assert p.receive(msg, now=0) == [Notification("ticker.BTC-PERPETUAL.100ms", data)]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        frame(method="subscription", params={"data": {}}),
        frame(method="something_else", params={}),
        frame(id=1),
    ],
)
def test_malformed_frames_become_violations_never_exceptions(text: str) -> None:
    [ev] = DeribitProtocol().receive(text, now=0)
    assert isinstance(ev, ProtocolViolation)


def test_bytes_frames_are_accepted() -> None:
    p = DeribitProtocol()
    req = p.request("public/test", now=0)
    assert p.receive(frame(id=req.id, result="ok").encode(), now=0) == [Response(req.id, "public/test", "ok")]


# -------------------------------------------------------------------------------------------------- auth

AUTH_RESULT = {
    "access_token": "1582628593469.1MbQ-J_4.CBP-OqOwm_FBdMYj4cRK2dMXyHPfBtXGpzLxhWg31nHu3H_Q60FpE5_vqUBEQGSiMrIGzw3nC37NDLx3OPp-AEE9_IWkuWSw",
    "expires_in": 900,
    "refresh_token": "1582628593469.1GP4rQd0.A9Wa78o5kFRIUP49mScaD1CqHgiK50HOl2VA6kCtWa8BQZU5Dr03BhcbXPNvEh3I_MVixKZXnyoBeKJwLl8LXnfo180ckAiPj3zOclcUu4zkXuF3NNP3sTPcDf1B3C1CwMKkJ1NOcf1yPmRbsrd7hbgQ-hLa40tfx6Oa-85ymm_3Z65LZcnCeLrqlj_A9jM",
    "scope": "connection mainaccount",
    "enabled_features": [],
    "token_type": "bearer",
}


def test_client_credentials_auth_request_reveals_secret_only_on_the_wire() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("fo7WAPRm4P", Secret("W0H6FJW4IRPZ1MOQ8FP6KMC5RZDUUKXS"), now=0)
    assert wire(req)["params"] == {
        "grant_type": "client_credentials",
        "client_id": "fo7WAPRm4P",
        "client_secret": "W0H6FJW4IRPZ1MOQ8FP6KMC5RZDUUKXS",
    }
    assert "W0H6" not in repr(req)
    assert req.redacted()["client_secret"] == "***"
    assert req.redacted()["client_id"] == "fo7WAPRm4P"


def test_signature_matches_deribit_formula() -> None:
    expected = hmac.new(b"secret", b"1576074319000\nabcd\n", hashlib.sha256).hexdigest()
    assert sign("secret", 1576074319000, "abcd") == expected
    assert sign("secret", 1, "n", "data") == hmac.new(b"secret", b"1\nn\ndata", hashlib.sha256).hexdigest()


def test_client_signature_auth_request_never_sends_the_secret() -> None:
    p = DeribitProtocol()
    req = p.auth_with_signature("id", Secret("s3cr3t"), timestamp_ms=1576074319000, nonce="1iqt2wls", now=0)
    params = wire(req)["params"]
    assert params["grant_type"] == "client_signature"
    assert params["timestamp"] == 1576074319000 and params["nonce"] == "1iqt2wls" and params["data"] == ""
    assert params["signature"] == sign("s3cr3t", 1576074319000, "1iqt2wls", "")
    assert "s3cr3t" not in req.text
    assert req.redacted()["signature"] == "***"


def test_auth_answer_sets_tokens_expiry_and_authenticated_but_hides_tokens() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("id", "secret", now=0)
    [ev] = p.receive(frame(id=req.id, result=AUTH_RESULT), now=100.0)
    assert isinstance(ev, Response)
    assert isinstance(ev.result["access_token"], Secret)
    assert AUTH_RESULT["access_token"] not in repr(ev)
    assert p.authenticated
    assert p.auth is not None
    assert p.auth.access_token.reveal() == AUTH_RESULT["access_token"]
    assert p.auth.refresh_token.reveal() == AUTH_RESULT["refresh_token"]
    assert p.auth.expires_at == 1000.0
    assert p.auth.scope == "connection mainaccount"
    assert AUTH_RESULT["refresh_token"] not in repr(p.auth)


def test_refresh_is_due_a_minute_before_expiry_for_long_tokens() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("id", "secret", now=0)
    p.receive(frame(id=req.id, result=AUTH_RESULT), now=0)
    assert not p.refresh_due(839.9)
    assert p.refresh_due(840.0)
    assert not p.auth_expired(899.9) and p.auth_expired(900)


def test_refresh_is_due_half_way_for_short_tokens() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("id", "secret", now=10)
    p.receive(frame(id=req.id, result={**AUTH_RESULT, "expires_in": 20}), now=10)
    assert not p.refresh_due(19.9)
    assert p.refresh_due(20.0)


def test_refresh_is_not_due_on_an_unauthenticated_connection() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("id", "secret", now=0)
    p.receive(frame(id=req.id, result=AUTH_RESULT), now=0)
    p.connection_lost()
    assert not p.refresh_due(10_000)
    assert p.auth is not None  # the refresh token survives for the next connection


def test_refresh_token_request_uses_stored_token() -> None:
    p = DeribitProtocol()
    with pytest.raises(ValueError):
        p.auth_with_refresh_token(now=0)
    req = p.auth_with_credentials("id", "secret", now=0)
    p.receive(frame(id=req.id, result=AUTH_RESULT), now=0)
    ref = p.auth_with_refresh_token(now=1)
    assert wire(ref)["params"] == {"grant_type": "refresh_token", "refresh_token": AUTH_RESULT["refresh_token"]}
    assert AUTH_RESULT["refresh_token"] not in repr(ref) + str(ref.redacted())
    p.receive(frame(id=ref.id, result={**AUTH_RESULT, "access_token": "new", "expires_in": 900}), now=500)
    assert p.auth.access_token.reveal() == "new" and p.auth.expires_at == 1400


def test_auth_error_leaves_connection_unauthenticated() -> None:
    p = DeribitProtocol()
    req = p.auth_with_credentials("id", "wrong", now=0)
    [ev] = p.receive(frame(id=req.id, error={"code": 13004, "message": "invalid_credentials"}), now=0)
    assert ev == ErrorResponse(req.id, "public/auth", 13004, "invalid_credentials", None)
    assert not p.authenticated


def test_orphan_auth_answer_hides_tokens() -> None:
    [ev] = DeribitProtocol().receive(frame(id=77, result=AUTH_RESULT), now=0)
    assert AUTH_RESULT["access_token"] not in repr(ev)


# ----------------------------------------------------------------------------------------- subscriptions


def test_subscribe_uses_public_method_before_auth_and_private_after() -> None:
    p = DeribitProtocol()
    assert p.subscribe(["ticker.BTC-PERPETUAL.100ms"], now=0).method == "public/subscribe"
    p.authenticated = True
    req = p.subscribe(["user.orders.BTC-PERPETUAL.raw"], now=0)
    assert req.method == "private/subscribe"
    assert wire(req)["params"] == {"channels": ["user.orders.BTC-PERPETUAL.raw"]}


def test_desired_set_keeps_order_and_has_no_duplicates() -> None:
    p = DeribitProtocol()
    p.subscribe(["a", "b", "a"], now=0)
    p.subscribe(["c", "b"], now=0)
    assert p.desired_channels == ("a", "b", "c")
    p.unsubscribe(["b", "zzz"], now=0)
    assert p.desired_channels == ("a", "c")


def test_subscribe_answer_marks_confirmed_channels_active_and_leaves_failed_out() -> None:
    p = DeribitProtocol()
    req = p.subscribe(["a", "bad"], now=0)
    [ev] = p.receive(frame(id=req.id, result=["a"]), now=0)
    assert ev == Response(req.id, "public/subscribe", ["a"])
    assert p.active_channels == {"a"}
    assert p.desired_channels == ("a", "bad")
    un = p.unsubscribe(["a"], now=0)
    p.receive(frame(id=un.id, result=["a"]), now=0)
    assert p.active_channels == frozenset()


def test_desired_set_survives_reconnect_and_resubscribe_restores_it() -> None:
    p = DeribitProtocol()
    assert p.resubscribe(now=0) is None
    req = p.subscribe(["ticker.BTC-PERPETUAL.100ms", "user.trades.BTC-PERPETUAL.raw"], now=0)
    p.receive(frame(id=req.id, result=["ticker.BTC-PERPETUAL.100ms"]), now=0)
    p.connection_lost()
    assert p.active_channels == frozenset()
    p.authenticated = True
    again = p.resubscribe(now=1)
    assert again is not None and again.method == "private/subscribe"
    assert wire(again)["params"]["channels"] == ["ticker.BTC-PERPETUAL.100ms", "user.trades.BTC-PERPETUAL.raw"]


# ------------------------------------------------------------------------------------------------ policy


def test_order_methods_are_the_matching_engine_calls() -> None:
    for m in ("private/buy", "private/sell", "private/edit", "private/cancel", "private/close_position",
              "private/cancel_by_label", "private/cancel_all_by_instrument"):
        assert is_order_method(m), m
    for m in ("private/get_open_orders_by_instrument", "private/get_position", "public/ticker", "public/auth"):
        assert not is_order_method(m), m


def test_private_channels_are_user_channels() -> None:
    assert is_private_channel("user.orders.any.any.raw")
    assert not is_private_channel("ticker.BTC-PERPETUAL.100ms")


def test_redact_hides_credentials_recursively() -> None:
    params = {"client_id": "id", "client_secret": "s", "nested": {"refresh_token": "r"}, "x": Secret("v")}
    assert redact(params) == {"client_id": "id", "client_secret": "***", "nested": {"refresh_token": "***"}, "x": "***"}
    assert redact(None) == {}


def test_backoff_grows_exponentially_up_to_cap_with_bounded_jitter() -> None:
    assert backoff_delay(0, 0.5, 30, 0.999999) == pytest.approx(0.5, rel=1e-5)
    assert backoff_delay(0, 0.5, 30, 0.0) == 0.25
    assert backoff_delay(3, 0.5, 30, 0.0) == 2.0
    assert backoff_delay(10, 0.5, 30, 0.0) == 15.0
    assert backoff_delay(1000, 0.5, 30, 1.0) == 30.0
    delays = [backoff_delay(a, 0.1, 5, r) for a in range(12) for r in (0.0, 0.3, 0.99)]
    assert all(0 < d <= 5 for d in delays)


def test_want_and_unwant_edit_the_desired_set_without_requests() -> None:
    p = DeribitProtocol()
    assert p.want(["a", "b", "a"]) == ["a", "b"]
    assert p.pending == {}
    p.unwant(["a"])
    assert p.desired_channels == ("b",)
    assert p.resubscribe(now=0) is not None
