"""JSON-RPC 2.0 dispatch without sockets: every malformed input gets its standard error, handlers plug in."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

import pytest

from tradebaas.errors import UserError
from tradebaas.rpc.protocol import (
    APP_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_NESTING,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    CallContext,
    Param,
    Registry,
    RpcError,
    channel_matches,
    encode,
    encode_jsonable,
    nested_deeper_than,
    to_jsonable,
    valid_channel,
)


def make_registry() -> Registry:
    reg = Registry()

    @reg.method("math.add", a=Param(int), b=Param(float, default=0.0))
    def add(a: int, b: float) -> float:
        return a + b

    @reg.method("slow.echo", value=Param(object))
    async def echo(value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    @reg.method("who", )
    def who(ctx: CallContext) -> str:
        return str(ctx.session)

    reg.add("fail.user", lambda: (_ for _ in ()).throw(UserError("strategy s1 not found")))
    reg.add("fail.bug", lambda: 1 / 0)
    reg.add("fail.rpc", lambda: (_ for _ in ()).throw(RpcError(-32001, "no such order")))
    reg.add("strategy.stop", lambda id, flatten: {"id": id, "flatten": flatten},
            {"id": Param(str), "flatten": Param(bool, default=False)})
    return reg


def dispatch(reg: Registry, frame: str | bytes, session: Any = None) -> Any:
    answer = asyncio.run(reg.dispatch(frame, CallContext(session=session)))
    return None if answer is None else json.loads(answer)


def req(method: str, params: Any = None, id: Any = 1) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg)


def error_code(answer: dict[str, Any]) -> int:
    return answer["error"]["code"]


def test_valid_call_answers_result_with_same_id() -> None:
    assert dispatch(make_registry(), req("math.add", {"a": 2, "b": 0.5}, id="x")) == {
        "jsonrpc": "2.0", "id": "x", "result": 2.5}


def test_defaults_positional_params_and_async_handlers() -> None:
    reg = make_registry()
    assert dispatch(reg, req("math.add", {"a": 2}))["result"] == 2
    assert dispatch(reg, req("math.add", [1, 2]))["result"] == 3
    assert dispatch(reg, req("slow.echo", {"value": [1, {"a": None}]}))["result"] == [1, {"a": None}]


def test_handler_declaring_ctx_gets_the_session() -> None:
    assert dispatch(make_registry(), req("who"), session="sess-7")["result"] == "sess-7"


@pytest.mark.parametrize("frame", ["{not json", b"\xff\xfe", "", '{"jsonrpc": "2.0", "method": '])
def test_malformed_json_is_parse_error_with_null_id(frame: str | bytes) -> None:
    answer = dispatch(make_registry(), frame)
    assert error_code(answer) == PARSE_ERROR and answer["id"] is None


@pytest.mark.parametrize("message", [
    "42", '"text"', "[]", "null",
    '{"id": 1, "method": "math.add"}',                            # no jsonrpc
    '{"jsonrpc": "1.0", "id": 1, "method": "math.add"}',
    '{"jsonrpc": "2.0", "id": 1}',                                # no method
    '{"jsonrpc": "2.0", "id": 1, "method": 5}',
    '{"jsonrpc": "2.0", "id": 1, "method": "math.add", "params": 3}',
    '{"jsonrpc": "2.0", "id": {"a": 1}, "method": "math.add"}',   # bad id
])
def test_invalid_requests_are_invalid_request(message: str) -> None:
    assert error_code(dispatch(make_registry(), message)) == INVALID_REQUEST


def test_unknown_method_is_method_not_found() -> None:
    answer = dispatch(make_registry(), req("nope.nothing"))
    assert error_code(answer) == METHOD_NOT_FOUND and "nope.nothing" in answer["error"]["message"]


@pytest.mark.parametrize("params, fragment", [
    ({}, "missing param 'a'"),
    ({"a": "1"}, "must be an integer"),
    ({"a": True}, "must be an integer"),
    ({"a": 1, "b": "x"}, "must be a number"),
    ({"a": 1, "c": 2}, "unknown param"),
    ([1, 2, 3], "at most 2"),
])
def test_bad_params_are_invalid_params_with_a_readable_message(params: Any, fragment: str) -> None:
    answer = dispatch(make_registry(), req("math.add", params))
    assert error_code(answer) == INVALID_PARAMS
    assert fragment in answer["error"]["message"]


def test_handler_errors_map_to_codes_without_leaking_internals() -> None:
    reg = make_registry()
    user = dispatch(reg, req("fail.user"))
    assert error_code(user) == APP_ERROR and user["error"]["message"] == "strategy s1 not found"
    bug = dispatch(reg, req("fail.bug"))
    assert error_code(bug) == INTERNAL_ERROR and "ZeroDivisionError" in bug["error"]["message"]
    assert error_code(dispatch(reg, req("fail.rpc"))) == -32001


def test_notifications_get_no_answer_even_on_error() -> None:
    reg = make_registry()
    assert dispatch(reg, json.dumps({"jsonrpc": "2.0", "method": "math.add", "params": {"a": 1}})) is None
    assert dispatch(reg, json.dumps({"jsonrpc": "2.0", "method": "nope"})) is None


def test_batch_answers_each_request() -> None:
    batch = json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "math.add", "params": {"a": 1}},
        {"jsonrpc": "2.0", "method": "math.add", "params": {"a": 1}},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        7,
    ])
    answers = dispatch(make_registry(), batch)
    assert [a.get("id") for a in answers] == [1, 2, None]
    assert answers[0]["result"] == 1 and error_code(answers[1]) == METHOD_NOT_FOUND
    assert error_code(answers[2]) == INVALID_REQUEST


def test_registration_rules() -> None:
    reg = make_registry()
    with pytest.raises(ValueError):
        reg.add("math.add", lambda: None)
    with pytest.raises(ValueError):
        reg.add("rpc.reserved", lambda: None)
    assert "strategy.stop" in reg and "math.add" in reg.names()
    assert dispatch(reg, req("strategy.stop", {"id": "s1"}))["result"] == {"id": "s1", "flatten": False}


def test_param_check_hook_refuses_values() -> None:
    reg = Registry()
    reg.add("risk.kill", lambda n: n, {"n": Param(int, check=lambda v: None if v >= 0 else "must be >= 0")})
    answer = dispatch(reg, req("risk.kill", {"n": -1}))
    assert error_code(answer) == INVALID_PARAMS and "must be >= 0" in answer["error"]["message"]


def test_results_are_made_json_able() -> None:
    import enum
    from dataclasses import dataclass

    class Color(enum.Enum):
        RED = "red"

    @dataclass
    class Row:
        color: Color
        items: tuple[int, ...]

    reg = Registry()
    reg.add("rows", lambda: [Row(Color.RED, (1, 2))])
    assert dispatch(reg, req("rows"))["result"] == [{"color": "red", "items": [1, 2]}]


def test_channel_names_and_patterns() -> None:
    assert valid_channel("log") and valid_channel("strategy.ab12") and valid_channel("ticker.BTC-PERPETUAL")
    assert valid_channel("strategy.*") and not valid_channel("str*tegy") and not valid_channel("")
    assert not valid_channel("a b") and not valid_channel(5)
    assert channel_matches("strategy.*", "strategy.x1") and not channel_matches("strategy.*", "strategies")
    assert channel_matches("log", "log") and not channel_matches("log", "logs")


# -- hostile frames: every one gets an answer, none raises ---------------------------------------------------
@pytest.mark.parametrize("literal", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_ids_that_cannot_be_sent_back_are_parse_errors(literal: str) -> None:
    answer = dispatch(make_registry(), f'{{"jsonrpc": "2.0", "id": {literal}, "method": "math.add"}}')
    assert error_code(answer) == PARSE_ERROR and answer["id"] is None


@pytest.mark.parametrize("literal", ["1e999", "NaN", "-Infinity"])
def test_non_finite_numbers_anywhere_are_parse_errors(literal: str) -> None:
    frame = f'{{"jsonrpc": "2.0", "id": 7, "method": "slow.echo", "params": {{"value": [1, {literal}]}}}}'
    assert error_code(dispatch(make_registry(), frame)) == PARSE_ERROR


def test_tiny_and_large_but_finite_numbers_are_fine() -> None:
    reg = make_registry()
    assert dispatch(reg, req("slow.echo", {"value": [1e-999, 1.7e308]}, id=1e300)) == {
        "jsonrpc": "2.0", "id": 1e300, "result": [0.0, 1.7e308]}
    assert dispatch(reg, req("slow.echo", {"value": 10**300}))["result"] == 10**300
    assert error_code(dispatch(reg, '{"jsonrpc": "2.0", "id": ' + "9" * 5000 + ', "method": "x"}')) == PARSE_ERROR


def test_a_decoded_message_with_a_non_finite_id_is_refused_too() -> None:
    answer = asyncio.run(make_registry().handle({"jsonrpc": "2.0", "id": float("inf"), "method": "x"}, CallContext()))
    assert answer is not None and error_code(answer) == INVALID_REQUEST and answer["id"] is None


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("frame", [
    nested(5_000),                                                                  # beyond the JSON decoder
    nested(100_000),
    '{"jsonrpc": "2.0", "id": 3, "method": "slow.echo", "params": {"value": ' + nested(5_000) + "}}",
    "[" + nested(5_000) + "]",                                                      # inside a batch
])
def test_nesting_too_deep_for_the_decoder_is_invalid_request(frame: str) -> None:
    answer = dispatch(make_registry(), frame)
    assert error_code(answer) == INVALID_REQUEST and answer["id"] is None and "nested deeper" in \
        answer["error"]["message"]


def test_nesting_deeper_than_the_limit_is_refused_with_the_request_id() -> None:
    reg = make_registry()
    too_deep = '{"jsonrpc": "2.0", "id": 3, "method": "slow.echo", "params": {"value": ' + nested(200) + "}}"
    answer = dispatch(reg, too_deep)
    assert error_code(answer) == INVALID_REQUEST and answer["id"] == 3
    limit_ok = nested(MAX_NESTING - 2)  # request object + params object + these arrays = the limit
    ok = dispatch(reg, '{"jsonrpc": "2.0", "id": 4, "method": "slow.echo", "params": {"value": ' + limit_ok + "}}")
    assert ok["result"] == json.loads(limit_ok)
    just_over = '{"jsonrpc": "2.0", "id": 5, "method": "slow.echo", "params": {"value": ' + nested(MAX_NESTING - 1)
    assert error_code(dispatch(reg, just_over + "}}")) == INVALID_REQUEST
    note = '{"jsonrpc": "2.0", "method": "slow.echo", "params": {"value": ' + nested(200) + "}}"
    assert error_code(dispatch(reg, note)) == INVALID_REQUEST  # an invalid notification is still answered


def test_a_batch_answers_its_too_deep_member_and_the_others() -> None:
    deep = '{"jsonrpc": "2.0", "id": 2, "method": "slow.echo", "params": {"value": ' + nested(200) + "}}"
    answers = dispatch(make_registry(), f"[{req('math.add', {'a': 1}, id=1)}, {deep}]")
    assert answers[0]["result"] == 1 and error_code(answers[1]) == INVALID_REQUEST and answers[1]["id"] == 2


def test_results_that_cannot_be_encoded_answer_an_internal_error_for_the_same_id() -> None:
    reg = Registry()
    reg.add("nan", lambda: {"equity": float("nan")})
    deep: list[Any] = []
    for _ in range(20_000):
        deep = [deep]
    reg.add("deep", lambda: deep)
    for method in ("nan", "deep"):
        answer = dispatch(reg, req(method, id=f"{method}-1"))
        assert error_code(answer) == INTERNAL_ERROR and answer["id"] == f"{method}-1"
    batch = dispatch(reg, json.dumps([json.loads(req("nan", id=1)), json.loads(req("deep", id=2))]))
    assert [(a["id"], error_code(a)) for a in batch] == [(1, INTERNAL_ERROR), (2, INTERNAL_ERROR)]


def test_nested_deeper_than_is_iterative_and_exact() -> None:
    assert not nested_deeper_than(1, 0) and not nested_deeper_than({"a": [1]}, 2)
    assert nested_deeper_than({"a": [1]}, 1) and nested_deeper_than([[[]]], 2)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert nested_deeper_than(deep, MAX_NESTING) and not nested_deeper_than(deep, 100_001)


class _Side(enum.StrEnum):
    LONG = "long"


class _Level(enum.IntEnum):
    HIGH = 3


class _Plain(enum.Enum):
    A = "a"


@dataclasses.dataclass
class _Row:
    side: _Side
    level: _Level
    plain: _Plain
    tags: frozenset[str]
    where: Path
    pair: tuple[int, float]


@pytest.mark.parametrize("value", [
    {"type": "decision", "decision": {"ts_ms": 1, "indicators": {"rsi": 43.123456789012345}, "reasons": ("a", "b")}},
    _Row(_Side.LONG, _Level.HIGH, _Plain.A, frozenset({"x"}), Path("/tmp/a"), (1, 2.5)),
    {"rows": [_Row(_Side.LONG, _Level.HIGH, _Plain.A, frozenset(), Path("p"), (0, 0.0))], "none": None},
    {1: "int key", 2.5: "float key"},
    {_Plain.A: "enum key", (1, 2): "tuple key"},  # keys the JSON encoder refuses: to_jsonable's way
    {"set": {3}, "nested": {"deep": [{"e": _Plain.A}]}},
])
def test_encode_jsonable_writes_what_to_jsonable_then_encode_writes(value: object) -> None:
    assert json.loads(encode_jsonable(value)) == json.loads(encode(to_jsonable(value)))


def test_encode_jsonable_refuses_what_to_jsonable_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        encode_jsonable({"x": object()})
    with pytest.raises(ValueError):
        encode_jsonable({"x": float("nan")})
