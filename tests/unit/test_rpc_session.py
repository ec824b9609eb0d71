"""The engine clients' sans-I/O session core, with plain function calls: no socket, no thread, no clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.rpc.protocol import RpcError
from tradebaas.rpc.session import (
    Backoff,
    ClientSession,
    ConnectionLost,
    Deliver,
    Ignored,
    Reply,
    State,
    answer_result,
    arity,
)


def opened() -> ClientSession[str]:
    session: ClientSession[str] = ClientSession()
    assert session.connection_made().frames == []
    return session


def answer(req_id: Any, result: Any = "ok") -> str:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "result": result})


def event(channel: str, data: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "event", "params": {"channel": channel, "data": data}})


def test_requests_are_framed_with_unique_ids_and_answers_reach_their_waiter() -> None:
    s = opened()
    a = s.request("engine.ping", None, "waiter-a")
    b = s.request("strategy.get", {"id": "s1"}, "waiter-b")
    assert a.id != b.id
    assert json.loads(b.text) == {"jsonrpc": "2.0", "id": b.id, "method": "strategy.get", "params": {"id": "s1"}}
    assert json.loads(a.text)["params"] == {}
    [reply] = s.receive(answer(b.id, {"state": "running"}))
    assert reply == Reply(b.id, "strategy.get", "waiter-b", {"jsonrpc": "2.0", "id": b.id,
                                                              "result": {"state": "running"}})
    assert s.pending == 1
    assert isinstance(s.receive(answer(b.id))[0], Ignored)  # answered once only


def test_ids_are_never_reused_across_reconnects_so_late_answers_are_ignored() -> None:
    s = opened()
    old = s.request("engine.status", None, "w1")
    assert s.connection_lost() == ["w1"]
    s.connection_made()
    new = s.request("engine.status", None, "w2")
    assert new.id > old.id
    [late] = s.receive(answer(old.id))
    assert isinstance(late, Ignored) and not late.warn
    assert [type(e) for e in s.receive(answer(new.id))] == [Reply]


def test_unencodable_params_register_nothing() -> None:
    s = opened()
    with pytest.raises(TypeError):
        s.request("x", {"obj": object()}, "w")
    assert s.pending == 0
    assert s.request("x", None, "w").id == 1  # no id burnt on the failure


def test_forget_drops_a_timed_out_request() -> None:
    s = opened()
    out = s.request("slow", None, "w")
    s.forget(out.id)
    assert s.pending == 0 and isinstance(s.receive(answer(out.id))[0], Ignored)


@pytest.mark.parametrize("frame, warn", [
    ("{not json", True), (b"\xff\xfe", True), ("[1, 2]", True), ("null", True),
    ('{"jsonrpc": "2.0", "method": "event", "params": 3}', True),
    ('{"jsonrpc": "2.0", "method": "event", "params": {"channel": 5}}', True),
    ('{"jsonrpc": "2.0", "id": 99, "result": 1}', False),       # nobody waits for 99
    ('{"jsonrpc": "2.0", "id": true, "result": 1}', False),     # a bool is not a request id
    ('{"jsonrpc": "2.0", "id": "1", "result": 1}', False),
    ("[" * 100_000 + "]" * 100_000, True),                       # too deep for the JSON decoder
])
def test_hostile_frames_never_raise_and_are_reported(frame: str | bytes, warn: bool) -> None:
    s = opened()
    s.request("engine.ping", None, "w")
    [ignored] = s.receive(frame)
    assert isinstance(ignored, Ignored) and ignored.warn is warn
    assert s.pending == 1


def test_events_reach_every_matching_callback_in_the_shape_it_asks_for() -> None:
    s = opened()

    def data_only(data: Any) -> None: ...
    def with_channel(channel: str, data: Any) -> None: ...

    assert s.add_callback("strategy.*", with_channel) is True
    assert s.add_callback("strategy.*", data_only) is False  # the engine already sends this channel
    assert s.add_callback("orders", data_only) is True
    assert s.receive(event("strategy.s1", {"x": 1})) == [
        Deliver(with_channel, ("strategy.s1", {"x": 1})), Deliver(data_only, ({"x": 1},))]
    assert s.receive(event("trades", {})) == []
    with pytest.raises(UserError):
        s.add_callback("bad channel", data_only)


def test_unsubscribing_the_last_callback_is_what_tells_the_engine() -> None:
    s = opened()

    def a(_d: Any) -> None: ...
    def b(_d: Any) -> None: ...

    s.add_callback("log", a)
    s.add_callback("log", b)
    assert s.remove_callback("log", a) is False and s.channels == ["log"]
    assert s.receive(event("log", 1)) == [Deliver(b, (1,))]
    assert s.remove_callback("log", b) is True and s.channels == []
    s.add_callback("orders", a)
    s.drop_channel("orders")  # its subscribe call failed
    assert s.channels == [] and s.receive(event("orders", 1)) == []


def test_a_reconnection_resubscribes_every_channel_then_runs_reconnect_callbacks() -> None:
    s = opened()

    def cb(_d: Any) -> None: ...
    def again() -> None: ...

    s.add_callback("strategy.*", cb)
    s.add_callback("log", cb)
    s.on_reconnect(again)
    s.request("engine.ping", None, "in-flight")
    assert s.connection_lost() == ["in-flight"] and s.state is State.RECONNECTING and s.wants_connection
    opened_again = s.connection_made()
    assert s.is_open and s.reconnects == 1
    [resub] = opened_again.frames
    assert json.loads(resub.text)["method"] == "subscribe"
    assert json.loads(resub.text)["params"] == {"channels": ["log", "strategy.*"]}
    assert opened_again.deliveries == [Deliver(again, ())]
    assert s.receive(answer(resub.id, ["log", "strategy.*"])) == []  # nobody waits: swallowed
    assert s.pending == 0


def test_a_refused_resubscribe_is_reported() -> None:
    s = opened()
    s.add_callback("log", print)
    s.connection_lost()
    [resub] = s.connection_made().frames
    refusal = json.dumps({"jsonrpc": "2.0", "id": resub.id, "error": {"code": -32602, "message": "no"}})
    [ignored] = s.receive(refusal)
    assert isinstance(ignored, Ignored) and ignored.warn and "subscribe" in ignored.reason


def test_states_decide_what_a_call_raises() -> None:
    s = opened()
    s.check_call("ws://x")  # open: nothing
    s.connection_lost()
    s.check_call("ws://x")  # reconnecting: the caller waits for the connection
    one_shot: ClientSession[str] = ClientSession(reconnect=False)
    one_shot.connection_made()
    one_shot.connection_lost()
    assert one_shot.state is State.LOST and not one_shot.wants_connection
    with pytest.raises(ConnectionLost) as lost:
        one_shot.check_call("ws://x")
    assert isinstance(lost.value, EngineNotRunning)
    s.request("engine.ping", None, "w")
    assert s.close() == ["w"] and not s.wants_connection
    s.connection_lost()  # the reader noticing the closed socket afterwards does not reopen the session
    assert s.state is State.CLOSED
    with pytest.raises(UserError, match="closed"):
        s.check_call("ws://x")


def test_backoff_doubles_to_its_cap_and_a_connection_resets_it() -> None:
    b = Backoff(0.05, 2.0)
    delays = [b.next_delay() for _ in range(10)]
    assert delays[:3] == [0.05, 0.1, 0.2] and delays[-1] == 2.0 and delays == sorted(delays)
    assert all(b.next_delay() == 2.0 for _ in range(100))  # never gives up, never overflows
    s = opened()
    s.connection_lost()
    s.backoff.next_delay()
    s.backoff.next_delay()
    s.connection_made()
    assert s.backoff.next_delay() == 0.05


def test_answer_result_raises_the_engines_error() -> None:
    assert answer_result({"jsonrpc": "2.0", "id": 1, "result": [1]}) == [1]
    with pytest.raises(RpcError) as err:
        answer_result({"id": 1, "error": {"code": -32601, "message": "method not found: x", "data": {"a": 1}}})
    assert (err.value.code, err.value.message, err.value.data) == (-32601, "method not found: x", {"a": 1})
    with pytest.raises(RpcError) as odd:
        answer_result({"id": 1, "error": "boom"})
    assert odd.value.code == -32603 and odd.value.message == "boom"


def test_callback_arity() -> None:
    def one(d: Any) -> None: ...
    def two(c: str, d: Any) -> None: ...
    def varargs(*a: Any) -> None: ...
    def optional(d: Any, extra: int = 0) -> None: ...

    assert [arity(f) for f in (one, two, varargs, optional, print)] == [1, 2, 2, 1, 2]
